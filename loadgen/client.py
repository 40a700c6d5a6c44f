"""The HTTP side of the load generator: one recommendation request, the readiness check and the warm-up.

`recommend` never raises (except on cancellation): every outcome becomes an `Answer` whose `status` is the HTTP
code or an error kind (`timeout`, `connect`, `disconnected`, `bad_response`, `error`). A 200 whose body is not the
contract's `{"items": [int, ...]}` is a `bad_response`, not a success.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from etude.commands import DEFAULT_K, PING_PATH, RECOMMEND_PATH
from etude.errors import UsageError

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

OK = 200
# Error kinds are stored as negative codes next to HTTP codes (compact columns); `status_name` turns them back.
TIMEOUT, CONNECT, BAD_RESPONSE, DISCONNECTED, CANCELLED, ERROR = -1, -2, -3, -4, -5, -6
ERROR_KINDS = {
    TIMEOUT: "timeout",
    CONNECT: "connect",
    BAD_RESPONSE: "bad_response",
    DISCONNECTED: "disconnected",
    CANCELLED: "cancelled",
    ERROR: "error",
}
JSON_HEADERS = {"Content-Type": "application/json"}


def recommend_url(base_url: str) -> Any:
    """The recommend endpoint as a parsed URL (aiohttp would parse a string again for every request)."""
    from yarl import URL

    return URL(f"{base_url}{RECOMMEND_PATH}")


def status_name(code: int) -> str:
    return ERROR_KINDS.get(code) or str(code)


@dataclass(slots=True)
class Answer:
    status: int  # HTTP code, or a negative error code (ERROR_KINDS)
    received_ns: int  # perf_counter_ns when the answer arrived; -1 when none did
    queue_ms: float = math.nan
    inference_ms: float = math.nan
    batch_size: int = -1


def parse_server_timing(header: str | None) -> tuple[float, float]:
    """`queue;dur=1.5, inference;dur=3` -> (1.5, 3.0); NaN for what is absent or unreadable."""
    queue_ms = inference_ms = math.nan
    if not header:
        return queue_ms, inference_ms
    for metric in header.split(","):
        name, _, params = metric.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                try:
                    dur = float(value.strip('"'))
                except ValueError:
                    continue
                if name == "queue":
                    queue_ms = dur
                elif name == "inference":
                    inference_ms = dur
    return queue_ms, inference_ms


def _batch_size(header: str | None) -> int:
    try:
        return int(header) if header is not None else -1
    except ValueError:
        return -1


def _valid_items(raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    if not isinstance(body, dict):
        return False
    items = body.get("items")
    return isinstance(items, list) and all(type(i) is int for i in items)


async def recommend(http: aiohttp.ClientSession, url: Any, body: bytes) -> Answer:
    """POST one request to `url` (the full recommend URL); never raises except asyncio.CancelledError."""
    import aiohttp

    try:
        async with http.post(url, data=body, headers=JSON_HEADERS) as resp:
            raw = await resp.read()
            received_ns = time.perf_counter_ns()
            headers = resp.headers
            queue_ms, inference_ms = parse_server_timing(headers.get("Server-Timing"))
            batch = _batch_size(headers.get("X-Batch-Size"))
            status = resp.status
            if status == OK and not _valid_items(raw):
                status = BAD_RESPONSE
            return Answer(status, received_ns, queue_ms, inference_ms, batch)
    except TimeoutError:  # aiohttp's ServerTimeoutError is one too
        return Answer(TIMEOUT, -1)
    except aiohttp.ClientConnectorError:
        return Answer(CONNECT, -1)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return Answer(DISCONNECTED, -1)
    except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError):  # not HTTP, broken framing
        return Answer(BAD_RESPONSE, -1)
    except Exception as err:  # noqa: BLE001 - a request never raises out of the sender
        log.debug("request failed: %r", err)
        return Answer(ERROR, -1)


async def wait_ready(
    http: aiohttp.ClientSession, base_url: str, deadline_s: float, alive: Callable[[], bool] | None = None
) -> float:
    """Poll `GET {base_url}/ping` until it answers 200; returns the seconds it took. UsageError naming the last
    problem after `deadline_s`, or once `alive` (the server process, when the caller runs it) says it exited.

    The one readiness check: the load generator, `etude local` (etude.processes.wait_ready) and the tests use it."""
    import aiohttp

    start_ns = time.perf_counter_ns()
    last = "no answer yet"
    attempt = 0
    while True:
        attempt += 1
        if alive is not None and not alive():
            raise UsageError(f"target {base_url} exited before it was ready")
        try:
            async with http.get(f"{base_url}{PING_PATH}", timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                await resp.read()
                if resp.status == OK:
                    log.info("target %s is ready (after %d checks)", base_url, attempt)
                    return (time.perf_counter_ns() - start_ns) / 1e9
                last = f"/ping answered {resp.status}"
        except TimeoutError:
            last = "/ping timed out"
        except aiohttp.ClientError as err:
            last = f"{type(err).__name__}: {err}"
        waited_s = (time.perf_counter_ns() - start_ns) / 1e9
        if waited_s >= deadline_s:
            raise UsageError(f"target {base_url} never became ready within {deadline_s:g} s ({last})")
        if attempt == 1 or attempt % 10 == 0:
            log.info("waiting for %s/ping: %s", base_url, last)
        await asyncio.sleep(min(0.5, max(0.05, deadline_s - waited_s)))


async def warm_up(http: aiohttp.ClientSession, url: Any, catalog_size: int, requests: int) -> None:
    """Send a few requests outside the measurement (connections, server code paths); their outcome is logged."""
    if requests <= 0:
        return
    statuses: dict[str, int] = {}
    sem = asyncio.Semaphore(4)

    async def one(i: int) -> None:
        session = [(i * 7919 + j) % catalog_size for j in range(1 + i % 5)]
        async with sem:
            answer = await recommend(http, url, json.dumps({"session": session, "k": DEFAULT_K}).encode())
        name = status_name(answer.status)
        statuses[name] = statuses.get(name, 0) + 1

    await asyncio.gather(*(one(i) for i in range(requests)))
    log.info("warm-up: %d requests, outcomes %s", requests, statuses)
