"""Small reference servers on loopback for testing and benchmarking the load generator (not a real model server).

A raw-asyncio HTTP/1.1 responder (keep-alive, Content-Length bodies) that speaks the inference server's API
(`GET /ping`, `POST /v1/recommend`) with a chosen behaviour: answer after a fixed delay, stall, answer garbage,
answer 503, never become ready. It records the sessions it was sent when asked to (order checks in tests).

`fifo` is a server of known capacity: one worker serves the requests one at a time, first come first served, each
for exactly `--delay-ms` (a D service time). Its completion times are computed exactly (start = max(arrival, the
previous completion), completion = start + service) and a thread writes each answer at its completion, so timer
slack never adds up: it carries 1 / service time under evenly spread arrivals and behaves as an M/D/1 queue under
Poisson arrivals. Run it in its own process for measurements (in a thread it shares the GIL with the client).

    python -m etude.loadgen.refserver --port 8099 --behaviour ok --delay-ms 0
    python -m etude.loadgen.refserver --port 8099 --behaviour fifo --delay-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

BEHAVIOURS = ("ok", "fifo", "stall", "not_json", "wrong_json", "not_http", "http_503", "never_ready")
ITEMS = json.dumps({"items": list(range(21))}).encode()


@dataclass
class Behaviour:
    kind: str = "ok"
    delay_ms: float = 0.0
    record: bool = False  # keep every received session in `sessions`
    sessions: list[list[int]] = field(default_factory=list)
    requests: int = 0
    max_concurrent: int = 0  # most requests received and not yet answered (nor given up by the client) at once
    _open: int = 0
    _fifo: _Fifo | None = None


class _Fifo:
    """The single worker of `fifo`: exact completion times, answers written by a thread when they are due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, service_s: float) -> None:
        self.loop = loop
        self.service_s = service_s
        self.busy_until = 0.0
        self.due: queue.SimpleQueue[tuple[float, Callable[[], None]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def submit(self, answer: Callable[[], None]) -> None:
        start = max(time.perf_counter(), self.busy_until)
        self.busy_until = start + self.service_s
        self.due.put((self.busy_until, answer))

    def _work(self) -> None:
        while (item := self.due.get()) is not None:
            done_at, answer = item
            left = done_at - time.perf_counter()
            if left > 0:
                time.sleep(left)
            try:
                self.loop.call_soon_threadsafe(answer)
            except RuntimeError:  # the loop closed
                return

    def close(self) -> None:
        self.due.put(None)


def _response(status: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


OK_TIMING = b"Server-Timing: queue;dur=0.25, inference;dur=0.5\r\nX-Batch-Size: 1\r\n"
PING_OK = _response("200 OK", b'{"status": "ok"}')
PING_NOT_READY = _response("503 Service Unavailable", b'{"status": "loading"}')
ANSWERS = {
    "ok": _response("200 OK", ITEMS, OK_TIMING),
    "not_json": _response("200 OK", b"<html>surprise</html>", OK_TIMING),
    "wrong_json": _response("200 OK", b'{"recommendations": "none"}', b"Server-Timing: garbage\r\nX-Batch-Size: x\r\n"),
    "http_503": _response("503 Service Unavailable", b'{"error": "overloaded"}', b"Retry-After: 1\r\n"),
    "not_http": b"hello there, I am not an HTTP server\r\n\r\n",
}
NOT_FOUND = _response("404 Not Found", b'{"error": "not found"}')


class _Protocol(asyncio.Protocol):
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour
        self.buf = b""
        self.unanswered = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].split(b"\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self._handle(head[0], body)

    def _handle(self, request_line: bytes, body: bytes) -> None:
        assert self.transport is not None
        b = self.b
        if request_line.startswith(b"GET /ping"):
            self.transport.write(PING_NOT_READY if b.kind == "never_ready" else PING_OK)
            return
        if not request_line.startswith(b"POST /v1/recommend"):
            self.transport.write(NOT_FOUND)
            return
        b.requests += 1
        if b.record:
            b.sessions.append(json.loads(body)["session"])
        b._open += 1
        self.unanswered += 1
        b.max_concurrent = max(b.max_concurrent, b._open)
        if b.kind == "stall":
            return
        answer = ANSWERS.get(b.kind, ANSWERS["ok"])
        if b._fifo is not None:
            b._fifo.submit(lambda: self._answer(answer))
        elif b.delay_ms > 0:
            asyncio.get_running_loop().call_later(b.delay_ms / 1e3, self._answer, answer)
        else:
            self._answer(answer)

    def _answer(self, answer: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.b._open -= 1
        self.unanswered -= 1
        self.transport.write(answer)
        if self.b.kind == "not_http":
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.b._open -= self.unanswered  # the client gave up on them (timeout) or went away
        self.unanswered = 0


async def start(behaviour: Behaviour, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    if behaviour.kind == "fifo":
        if behaviour.delay_ms <= 0:
            raise ValueError("fifo needs a service time: delay_ms > 0")
        behaviour._fifo = _Fifo(loop, behaviour.delay_ms / 1e3)
    return await loop.create_server(lambda: _Protocol(behaviour), host, port, backlog=4096)


class ServerThread:
    """A reference server on its own event loop in a background thread; `with ServerThread(b) as url: ...`."""

    def __init__(self, behaviour: Behaviour, port: int = 0) -> None:
        self.behaviour = behaviour
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> str:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(start(self.behaviour, port=self._port), self._loop).result(5)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the server's loop (e.g. to change the behaviour safely)."""
        self._loop.call_soon_threadsafe(fn)

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            if self.behaviour._fifo is not None:
                self.behaviour._fifo.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def md1_wait_cdf(rate_rps: float, service_s: float, t_s: float) -> float:
    """P(wait <= t) in an M/D/1 queue (Poisson arrivals at `rate_rps`, service time `service_s`, one FIFO worker):
    Erlang's formula, (1 - rho) sum_{k=0}^{floor(t/D)} (lam (kD - t))^k / k! e^{-lam (kD - t)}."""
    rho = rate_rps * service_s
    if rho >= 1:
        return 0.0
    if t_s < 0:
        return 0.0
    terms = range(int(t_s / service_s + 1e-9) + 1)
    return (1 - rho) * math.fsum(
        (rate_rps * (k * service_s - t_s)) ** k / math.factorial(k) * math.exp(-rate_rps * (k * service_s - t_s))
        for k in terms
    )


def md1_capacity_rps(service_s: float, slo_s: float, percentile: float) -> float:
    """The highest Poisson rate at which the `percentile` of the time in system (wait + service) of the `fifo`
    server is within `slo_s`: its known capacity under Poisson arrivals (bisection on `md1_wait_cdf`)."""
    lo, hi = 0.0, 1 / service_s
    for _ in range(60):
        mid = (lo + hi) / 2
        if md1_wait_cdf(mid, service_s, slo_s - service_s) >= percentile / 100:
            lo = mid
        else:
            hi = mid
    return lo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="ok")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer delay; fifo: the service time")
    args = parser.parse_args()

    async def serve() -> None:
        server = await start(Behaviour(args.behaviour, args.delay_ms), port=args.port)
        log.info("reference server (%s) on port %d", args.behaviour, args.port)
        await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
