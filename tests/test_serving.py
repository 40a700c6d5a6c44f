"""The inference server over real loopback sockets: API, bad input, batching, readiness, shedding, failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from torch import Tensor
from toy_model import ToyModel, save_toy_model

from etude import storage
from etude.errors import UsageError
from etude.serving.app import InferenceServer, Settings
from etude.serving.model import load_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

C = 1000  # catalog size of the toy model
MAX_LEN = 50


def run(coro: Coroutine[Any, Any, Any], timeout_s: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


class SleepyModel(ToyModel):
    """The toy model (eager, not scripted) with a fixed sleep per forward pass; counts and signals its calls."""

    def __init__(self, sleep_s: float, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.sleep_s = sleep_s
        self.calls = 0
        self.running = threading.Event()

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        self.calls += 1
        self.running.set()
        time.sleep(self.sleep_s)
        return super().forward(item_seq, item_seq_len, k)


class ShortModel(ToyModel):
    """Breaks the contract (one row fewer than the batch size) when item 777 is in the batch, or always."""

    def __init__(self, *, always: bool = False, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.always = always

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        top = super().forward(item_seq, item_seq_len, k)
        return top[:-1] if self.always or bool((item_seq == 777).any()) else top


@dataclass
class Live:
    server: InferenceServer
    http: aiohttp.ClientSession
    url: str
    started: asyncio.Task[None]

    async def recommend(self, payload: Any, **kw: Any) -> tuple[int, dict[str, Any], Any]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        async with self.http.post(f"{self.url}/v1/recommend", data=data, **kw) as r:
            return r.status, dict(r.headers), await r.json(content_type=None)


@contextlib.asynccontextmanager
async def live_server(
    model: Any = None, *, load: Callable[[], Any] | None = None, ready: bool = True, **settings: Any
) -> AsyncIterator[Live]:
    """The app on 127.0.0.1 (a free port), loading `model` (or calling `load`) in the background like `serve`."""
    settings.setdefault("warmup_passes", 1)
    server = InferenceServer(load or (lambda: model), Settings(**settings))
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    started = asyncio.create_task(server.start())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            live = Live(server, http, f"http://127.0.0.1:{port}", started)
            if ready:
                await started
            yield live
    finally:
        started.cancel()
        await runner.cleanup()
        await server.stop()


def test_ping_and_recommend_follow_the_api() -> None:
    async def body() -> None:
        async with live_server(ToyModel(catalog_size=C)) as s:
            async with s.http.get(f"{s.url}/ping") as r:
                assert r.status == 200 and await r.json() == {"status": "ok"}
            status, headers, doc = await s.recommend({"session": [3, 1, 4], "k": 5})
            assert status == 200 and doc == {"items": [5, 6, 7, 8, 9]}
            assert headers["Content-Type"].startswith("application/json")
            timing = dict(part.strip().split(";dur=") for part in headers["Server-Timing"].split(","))
            assert set(timing) == {"queue", "inference"} and all(float(v) >= 0 for v in timing.values())
            assert headers["X-Batch-Size"] == "1"
            status, _, doc = await s.recommend({"session": [998]})  # k defaults to 21
            assert status == 200 and doc["items"] == [(999 + j) % C for j in range(21)]
            status, _, doc = await s.recommend({"session": [7], "k": 2, "user": "x", "extra": {"a": [1]}})
            assert status == 200 and doc == {"items": [8, 9]}  # unknown fields are tolerated
            status, _, doc = await s.recommend({"session": [5] * 150 + [1, 2, 42]})  # longer than MAX_LEN
            assert status == 200 and doc["items"][:2] == [43, 44]  # the most recent items were kept

    run(body())


BIG_INT = 2**63  # beyond int64
BAD_BODIES: list[tuple[bytes, str]] = [
    (b"", "empty body"),
    (b"not json", "not valid JSON"),
    (b'{"session": [1, 2', "not valid JSON"),
    (b'{"session": [1]}\xff', "not valid UTF-8"),
    (b"\xff\xfe{\x00}\x00", "not valid UTF-8"),
    (b"[1, 2, 3]", "must be a JSON object, got array"),
    (b'"hello"', "must be a JSON object, got string"),
    (b"null", "must be a JSON object, got null"),
    (b"{}", "missing field 'session'"),
    (b'{"items": [1]}', "missing field 'session'"),
    (b'{"session": null}', "missing field 'session'"),
    (b'{"session": []}', "'session' is empty"),
    (b'{"session": 5}', "'session' must be a list"),
    (b'{"session": "1,2"}', "'session' must be a list"),
    (b'{"session": {"0": 1}}', "'session' must be a list"),
    (b'{"session": [1, "2"]}', "'session'[1] must be an integer item id, got string"),
    (b'{"session": [true]}', "'session'[0] must be an integer item id, got boolean"),
    (b'{"session": [1, 2.0]}', "'session'[1] must be an integer item id, got number"),
    (b'{"session": [1.5]}', "got number"),
    (b'{"session": [1e400]}', "got number"),
    (b'{"session": [NaN]}', "got number"),
    (b'{"session": [null]}', "got null"),
    (b'{"session": [[1]]}', "got array"),
    (b'{"session": [-1]}', "outside the catalog [0, 1000)"),
    (f'{{"session": [{C}]}}'.encode(), "outside the catalog"),
    (f'{{"session": [1, {BIG_INT}]}}'.encode(), "'session'[1] = 9223372036854775808 is outside the catalog"),
    (b'{"session": [' + b"9" * 5000 + b"]}", "not valid JSON"),
    (b'{"session": [1], "k": 0}', "'k' must be in [1, 1000]"),
    (b'{"session": [1], "k": -3}', "'k' must be in [1, 1000]"),
    (f'{{"session": [1], "k": {C + 1}}}'.encode(), "'k' must be in [1, 1000]"),
    (b'{"session": [1], "k": "5"}', "'k' must be an integer"),
    (b'{"session": [1], "k": 2.0}', "'k' must be an integer"),
    (b'{"session": [1], "k": true}', "'k' must be an integer"),
    (b'{"session": [1], "k": null}', "'k' must be an integer"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
]


def test_every_bad_input_is_a_400_naming_the_problem_and_the_server_keeps_serving() -> None:
    async def body() -> None:
        async with live_server(ToyModel(catalog_size=C), max_body_bytes=256 * 1024) as s:
            failures = []
            for data, expected in BAD_BODIES:
                status, _, doc = await s.recommend(data)
                if status != 400 or expected not in doc.get("error", ""):
                    failures.append(f"{data[:40]!r}: {status} {doc}")
            assert not failures, "\n".join(failures)
            too_big = json.dumps({"session": [1] * 100_000}).encode()
            status, _, doc = await s.recommend(too_big)
            assert status == 413 and "exceeds the limit" in doc["error"]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
                for _ in range(40):
                    yield b" " * 10_000

            async with s.http.post(f"{s.url}/v1/recommend", data=chunks()) as r:
                assert r.status == 413 and "exceeds the limit" in (await r.json())["error"]
            status, _, doc = await s.recommend({"session": [1, 2, 3], "k": 3})
            assert status == 200 and doc == {"items": [4, 5, 6]}

    run(body())


def test_concurrent_requests_share_a_forward_pass_and_each_gets_its_own_answer() -> None:
    async def body() -> None:
        async with live_server(SleepyModel(0.05, catalog_size=C), max_batch_size=64, max_delay_ms=2) as s:
            sessions = [[i, 100 + i] for i in range(40)]
            ks = [1 + i % 7 for i in range(40)]  # different k in one batch: run with the largest, slice
            results = await asyncio.gather(
                *(s.recommend({"session": x, "k": k}) for x, k in zip(sessions, ks, strict=True))
            )
            for (status, _, doc), x, k in zip(results, sessions, ks, strict=True):
                assert status == 200 and doc["items"] == [(x[-1] + 1 + j) % C for j in range(k)]
            sizes = [int(h["X-Batch-Size"]) for _, h, _ in results]
            assert max(sizes) > 1
            assert sum(sizes) > len(results)  # most answers came from shared forward passes
            async with s.http.get(f"{s.url}/metrics") as r:
                text = await r.text()
            assert 'etude_requests_total{status="200"} 40.0' in text
            assert "etude_batch_size_count" in text and "etude_queue_depth 0.0" in text

    run(body())


def test_ping_is_503_until_the_model_is_loaded_and_warmed_up() -> None:
    async def body() -> None:
        model = SleepyModel(0.05, catalog_size=C)
        async with live_server(model, ready=False, max_batch_size=4, warmup_passes=3) as s:
            async with s.http.get(f"{s.url}/ping") as r:
                assert r.status == 503 and "not ready" in (await r.json())["error"]
            status, _, doc = await s.recommend({"session": [1]})
            assert status == 503 and "not ready" in doc["error"]
            t0 = time.perf_counter()
            while True:
                async with s.http.get(f"{s.url}/ping") as r:
                    if r.status == 200:
                        break
                assert time.perf_counter() - t0 < 15, "never became ready"
                await asyncio.sleep(0.02)
            # warm-up: 3 passes x 2 batch sizes (1, 4) x 3 lengths (1, 5, 50), all done by the first 200
            assert model.calls == 3 * 2 * 3
            status, _, _ = await s.recommend({"session": [1]})
            assert status == 200

    run(body())


def test_full_queue_sheds_load_with_503_and_retry_after_at_once() -> None:
    async def body() -> None:
        async with live_server(SleepyModel(0.5, catalog_size=C), max_batch_size=1, max_queue=2, warmup_passes=0) as s:

            async def timed(i: int) -> tuple[int, dict[str, Any], float]:
                t0 = time.perf_counter()
                status, headers, _ = await s.recommend({"session": [i]})
                return status, headers, time.perf_counter() - t0

            results = await asyncio.gather(*(timed(i) for i in range(8)))
            ok = [r for r in results if r[0] == 200]
            shed = [r for r in results if r[0] == 503]
            assert len(ok) == 3 and len(shed) == 5  # one running + two queued; the rest shed
            assert all(h.get("Retry-After") == "1" for _, h, _ in shed)
            assert all(latency_s < 0.45 for *_, latency_s in shed)  # answered before even one batch ends
            status, _, _ = await s.recommend({"session": [1]})
            assert status == 200

    run(body())


def test_a_failing_batch_fails_only_its_requests_with_500_and_a_reason() -> None:
    async def body() -> None:
        model = SleepyModel(0.3, catalog_size=C, poison_item=600)
        async with live_server(model, max_delay_ms=0, warmup_passes=0) as s:
            model.running.clear()
            first = asyncio.create_task(s.recommend({"session": [1]}))
            assert await asyncio.to_thread(model.running.wait, 10)  # the first batch runs;
            # the next two arrive meanwhile and form the second batch together
            poisoned = asyncio.create_task(s.recommend({"session": [600]}))
            neighbour = asyncio.create_task(s.recommend({"session": [2]}))
            (s1, _, d1), (s2, _, d2), (s3, _, d3) = await asyncio.gather(first, poisoned, neighbour)
            assert s1 == 200 and d1 == {"items": [(2 + j) % C for j in range(21)]}
            assert s2 == s3 == 500
            assert "RuntimeError: poison item in batch" in d2["error"] and "batch of 2" in d2["error"]
            assert d3 == d2
            status, _, doc = await s.recommend({"session": [5], "k": 1})
            assert status == 200 and doc == {"items": [6]}

    run(body())


def test_a_model_returning_the_wrong_number_of_rows_is_a_500() -> None:
    async def body() -> None:
        async with live_server(ShortModel(catalog_size=C)) as s:
            status, _, doc = await s.recommend({"session": [777]})
            assert status == 500 and "expected (1, 21)" in doc["error"]
            status, _, _ = await s.recommend({"session": [776]})
            assert status == 200
        with pytest.raises(UsageError, match="failed its warm-up: .*expected"):
            async with live_server(ShortModel(catalog_size=C, always=True)):
                pass

    run(body())


def test_model_loads_from_gcs(gcs_bucket: str, tmp_path: Path) -> None:
    path = save_toy_model(tmp_path / "toy.pt", catalog_size=C, max_session_length=MAX_LEN)
    uri = f"gs://{gcs_bucket}/models/toy.pt"
    storage.write_bytes(uri, path.read_bytes())

    async def body() -> None:
        async with live_server(load=lambda: load_model(uri, "cpu")) as s:
            status, _, doc = await s.recommend({"session": [10, 20], "k": 3})
            assert status == 200 and doc == {"items": [21, 22, 23]}

    run(body())
