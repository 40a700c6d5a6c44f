"""The inference server's defaults, in one place: `etude serve`'s options, the server's settings and the command
lines of an experiment all read them here. A light module (no aiohttp, no torch), so `etude --help` stays fast."""

MAX_BATCH_SIZE = 1024  # the paper's batching settings: up to 1,024 requests, flushed every 2 ms
MAX_DELAY_MS = 2.0
MAX_QUEUE = 2048  # requests waiting for a batch; beyond this, 503 + Retry-After
MAX_BODY_BYTES = 256 * 1024  # larger request bodies get 413
WARMUP_PASSES = 3  # per shape; TorchScript's profiling executor optimises a graph after its first runs
SHUTDOWN_TIMEOUT_S = 25.0  # longest wait for requests in flight; Kubernetes' default grace period is 30 s
