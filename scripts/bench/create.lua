-- wrk script: POST one-step tasks that become due far in the future, so the
-- benchmark measures creation, not execution.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("STEPWISE_TOKEN")
wrk.body = '{"name": "load", "start_at": "2999-01-01T00:00:00Z", "steps": [{"controller": "demo/count", "settings": {"to": 10}}]}'
