-- wrk script for scripts/bench-drain: POST the task in STEPWISE_BODY with the
-- token in STEPWISE_TOKEN, as fast as the connections allow.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("STEPWISE_TOKEN")
wrk.body = os.getenv("STEPWISE_BODY")
