"""The aiohttp inference server with dynamic request batching (`etude serve`).

app.py       HTTP API (/ping, /v1/recommend, /metrics), error mapping, serve() with graceful shutdown
batcher.py   DynamicBatcher: one queue, per-request futures, one inference thread
model.py     loading (etude.models.export.load_model), warm-up, batched top-k prediction
protocol.py  request body parsing and validation
errors.py    typed errors with their HTTP status; metrics.py Prometheus metrics; cli.py the `serve` verb
"""
