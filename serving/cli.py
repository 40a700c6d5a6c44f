"""Verbs of this package for the `etude` command line: `etude serve`."""

from __future__ import annotations

import argparse
import logging

from etude import server_defaults as defaults
from etude.errors import UsageError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's verbs to the `etude` parser."""
    p = sub.add_parser(
        "serve",
        help="serve a TorchScript recommendation model over HTTP with dynamic batching",
        description="Serve a serialized model: GET /ping, POST /v1/recommend, GET /metrics. "
        "SIGTERM stops accepting connections, finishes queued requests and exits 0.",
    )
    p.add_argument("--model-uri", required=True, help="the serialized model: a local path or gs://bucket/path")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--allow-native-code", action="store_true",
                   help="load an aot package (compiled code that runs when loaded): only for packages you built")
    p.add_argument("--max-batch-size", type=int, default=defaults.MAX_BATCH_SIZE, help="most requests per forward pass")
    p.add_argument(
        "--max-delay-ms", type=float, default=defaults.MAX_DELAY_MS,
        help="longest a forming batch is held to fill, only while the inference thread is busy most of the time "
        "(an idle server never waits; 0 never holds)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--max-queue", type=int, default=defaults.MAX_QUEUE,
                   help="waiting requests beyond which to answer 503")
    p.add_argument("--max-body-bytes", type=int, default=defaults.MAX_BODY_BYTES, help="larger request bodies get 413")
    p.add_argument("--warmup-passes", type=int, default=defaults.WARMUP_PASSES, help="forward passes per warm-up shape")
    p.add_argument("--shutdown-timeout-s", type=float, default=defaults.SHUTDOWN_TIMEOUT_S,
                   help="longest wait for in-flight requests")
    p.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop", help="uvloop measured faster")
    p.set_defaults(func=serve_verb)


def serve_verb(args: argparse.Namespace) -> int:
    import asyncio

    import torch

    from etude.serving.app import InferenceServer, Settings, serve
    from etude.serving.model import load_model

    _check(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to torch here")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        warmup_passes=args.warmup_passes,
        device=args.device,
        shutdown_timeout_s=args.shutdown_timeout_s,
    )
    native = args.allow_native_code
    server = InferenceServer(lambda: load_model(args.model_uri, args.device, allow_native_code=native), settings)
    loop_factory = None
    if args.event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(server, host=args.host, port=args.port))
    return 0


def _check(args: argparse.Namespace) -> None:
    problems = []
    if not 0 <= args.port <= 65535:
        problems.append(f"--port {args.port} is not in [0, 65535]")
    if args.max_batch_size < 1:
        problems.append(f"--max-batch-size {args.max_batch_size} must be >= 1")
    if args.max_delay_ms < 0:
        problems.append(f"--max-delay-ms {args.max_delay_ms:g} must be >= 0")
    if args.threads is not None and args.threads < 1:
        problems.append(f"--threads {args.threads} must be >= 1")
    if args.max_queue < 1:
        problems.append(f"--max-queue {args.max_queue} must be >= 1")
    if args.max_body_bytes < 64:
        problems.append(f"--max-body-bytes {args.max_body_bytes} must be >= 64")
    if args.warmup_passes < 0:
        problems.append(f"--warmup-passes {args.warmup_passes} must be >= 0")
    if problems:
        raise UsageError("; ".join(problems))
