-- wrk script: like create.lua, but each connection waits STEPWISE_BENCH_DELAY_MS
-- (default 18) before each request, so 200 connections offer about 10,000
-- creates/s instead of as many as the server can take: the latencies are
-- then those of a server at that load, not of a queue of 200 in front of it.
dofile("scripts/bench/create.lua")
local pause = tonumber(os.getenv("STEPWISE_BENCH_DELAY_MS") or "18")
function delay()
  return pause
end
