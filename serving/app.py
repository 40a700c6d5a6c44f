"""The aiohttp application: `/ping`, `POST /v1/recommend`, `/metrics`, and `serve()` with graceful shutdown.

The event loop only reads, validates, enqueues and answers; the model runs on the batcher's inference thread.
Every `ServingError` becomes a JSON `{"error": ...}` response in one place (`_answering_errors`), which also
counts requests and observes latency for `/metrics`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from etude import server_defaults as defaults
from etude.commands import PING_PATH, RECOMMEND_PATH
from etude.errors import UsageError
from etude.serving.batcher import DynamicBatcher, short_reason
from etude.serving.errors import NotReady, PayloadTooLarge, ServingError
from etude.serving.metrics import CONTENT_TYPE, Metrics
from etude.serving.model import Predictor, Query
from etude.serving.protocol import parse_query

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.Response]]
JSON = "application/json"


@dataclass(frozen=True)
class Settings:
    """The server's settings; the defaults are `etude.server_defaults`."""

    max_batch_size: int = defaults.MAX_BATCH_SIZE
    max_delay_ms: float = defaults.MAX_DELAY_MS
    max_queue: int = defaults.MAX_QUEUE
    max_body_bytes: int = defaults.MAX_BODY_BYTES
    warmup_passes: int = defaults.WARMUP_PASSES
    device: str = "cpu"
    shutdown_timeout_s: float = defaults.SHUTDOWN_TIMEOUT_S


class InferenceServer:
    """One model behind one batcher; `ready` once the model is loaded and warmed up."""

    def __init__(self, load: Callable[[], Any], settings: Settings = Settings()) -> None:
        self.settings = settings
        self._load = load
        self.state = "loading model"
        self.ready = False
        self.predictor: Predictor | None = None
        self.batcher: DynamicBatcher[Query, list[int]] = DynamicBatcher(
            self._run_batch,
            max_batch_size=settings.max_batch_size,
            max_delay_ms=settings.max_delay_ms,
            max_queue=settings.max_queue,
            on_batch=self._on_batch,
        )
        self.metrics = Metrics(lambda: self.batcher.queue_depth)

    async def start(self) -> None:
        """Load the model (off the loop) and warm it up on the inference thread; then answer /ping with 200."""
        t0 = time.perf_counter_ns()
        module = await asyncio.to_thread(self._load)
        predictor = Predictor(module, self.settings.device)
        log.info(
            "model loaded in %.1f s: catalog size %d, max session length %d; warming up",
            (time.perf_counter_ns() - t0) / 1e9, predictor.catalog_size, predictor.max_session_length,
        )  # fmt: skip
        self.state = "warming up"
        self.predictor = predictor
        try:
            warm_s = await self.batcher.on_thread(
                predictor.warm_up, self.settings.max_batch_size, self.settings.warmup_passes
            )
        except Exception as err:  # noqa: BLE001 - a model that cannot run is the user's to fix
            raise UsageError(f"the model failed its warm-up: {short_reason(err)}") from err
        log.info("warm-up done in %.1f s; ready", warm_s)
        gc.collect()
        gc.freeze()  # the model and everything loaded so far: no longer scanned by every full collection
        self.state = "ready"
        self.ready = True

    async def stop(self) -> None:
        """Refuse new requests, finish the queued ones."""
        self.ready = False
        self.state = "shutting down"
        await self.batcher.drain()

    def _run_batch(self, queries: list[Query]) -> list[list[int]]:
        assert self.predictor is not None
        return self.predictor.predict(queries)

    def _on_batch(self, size: int, run_ns: int) -> None:
        self.metrics.batch(size, run_ns)

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get(PING_PATH, self._answering_errors(self.ping))
        app.router.add_post(RECOMMEND_PATH, self._answering_errors(self.recommend, count=True))
        app.router.add_get("/metrics", self.metrics_page)
        return app

    async def ping(self, request: web.Request) -> web.Response:
        if not self.ready:
            raise NotReady(f"not ready: {self.state}")
        return web.Response(body=b'{"status": "ok"}', content_type=JSON)

    async def recommend(self, request: web.Request) -> web.Response:
        predictor = self.predictor
        if not self.ready or predictor is None:
            raise NotReady(f"not ready: {self.state}")
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"body of {request.content_length} bytes exceeds the limit of {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes") from None
        query = parse_query(body, catalog_size=predictor.catalog_size, max_session_length=predictor.max_session_length)
        answer = await self.batcher.submit(query)
        headers = {
            "Content-Type": JSON,
            "Server-Timing": f"queue;dur={answer.queue_ns / 1e6:.3f}, inference;dur={answer.inference_ns / 1e6:.3f}",
            "X-Batch-Size": str(answer.batch_size),
        }
        return web.Response(body=json.dumps({"items": answer.value}).encode(), headers=headers)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    def _answering_errors(self, handler: Handler, *, count: bool = False) -> Handler:
        """The one place where errors become responses; with `count`, requests also go into /metrics.

        A wrapper per route rather than a middleware: it knows which route it counts without comparing paths.
        """

        async def answer(request: web.Request) -> web.Response:
            t0 = time.perf_counter_ns()
            try:
                response = await handler(request)
            except ServingError as err:
                response = error_response(err.status, err.message, err.headers)
            except Exception as err:  # noqa: BLE001 - the server never dies of one request
                log.exception("unexpected error in %s %s", request.method, request.path)
                response = error_response(500, f"internal error: {type(err).__name__}: {err}")
            if count:
                self.metrics.request(response.status, time.perf_counter_ns() - t0)
            return response

        return answer


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps({"error": message}).encode(), content_type=JSON, headers=headers)


async def serve(server: InferenceServer, *, host: str, port: int) -> None:
    """Listen at once (so /ping can say 503), load and warm up, serve until SIGTERM/SIGINT, then drain."""
    runner = web.AppRunner(
        server.app(), access_log=None, handle_signals=False, shutdown_timeout=server.settings.shutdown_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    log.info("listening on http://%s:%d", host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    starting = asyncio.create_task(server.start())
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait([starting, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a model that fails to load ends the server with its error
            await stop_wait
        else:
            starting.cancel()
        log.info("stopping: no new connections; finishing %d queued requests", server.batcher.queue_depth)
        server.ready = False
        server.state = "shutting down"
    finally:
        stop_wait.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()  # closes the listening socket, waits for in-flight requests
        await server.stop()
    log.info("stopped")
