-- wrk script: POST /v1/recommend with a fixed small session (the infrastructure test: the server's overhead).
-- wrk -t1 -c64 -d20s --latency -s benchmarks/wrk/recommend.lua http://127.0.0.1:8090/v1/recommend
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"session": [17, 4242, 99, 1234, 7], "k": 21}'
