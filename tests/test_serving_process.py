"""`etude serve` as a real process: graceful SIGTERM with requests in flight, and one-line errors for mistakes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from toy_model import save_toy_model

from etude.cli import main
from etude.processes import free_port, wait_ready

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

SLOW_ITEM = 500


def start_server(model: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "etude", "serve", "--model-uri", str(model), "--port", str(port),
            "--host", "127.0.0.1", *extra]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})


def test_sigterm_finishes_requests_in_flight_and_exits_0(tmp_path: Path) -> None:
    # each request with SLOW_ITEM burns ~0.1 s of CPU (more on a busy machine); batches of one queue the others
    model = save_toy_model(tmp_path / "slow.pt", slow_item=SLOW_ITEM, slow_iters=1000)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(model, port, "--max-batch-size", "1", "--warmup-passes", "1")
    try:

        async def body() -> None:
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout) as http:

                async def recommend(i: int) -> tuple[int, dict[str, list[int]]]:
                    payload = {"session": [i, SLOW_ITEM], "k": 2}
                    async with http.post(f"{url}/v1/recommend", json=payload) as r:
                        return r.status, await r.json()

                in_flight = [asyncio.create_task(recommend(i)) for i in range(5)]
                while True:  # until the server holds them: one running, the others queued
                    async with http.get(f"{url}/metrics") as r:
                        if "etude_queue_depth 4.0" in await r.text():
                            break
                    await asyncio.sleep(0.01)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.05)
                with pytest.raises(aiohttp.ClientConnectionError):  # no new connections are accepted
                    async with aiohttp.ClientSession() as fresh:
                        await fresh.get(f"{url}/ping")
                results = await asyncio.gather(*in_flight)
                assert results == [(200, {"items": [(SLOW_ITEM + 1 + j) % 1000 for j in range(2)]})] * 5

        wait_ready(url, proc, timeout_s=60)
        asyncio.run(asyncio.wait_for(body(), 90))
        assert proc.wait(timeout=30) == 0
        log = proc.communicate()[0].decode()
        assert "stopping" in log and "stopped" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mistakes_are_one_line_errors_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_model = tmp_path / "junk.pt"
    not_a_model.write_bytes(b"this is not a TorchScript archive")
    port = str(free_port())
    cases = [
        (["--model-uri", str(tmp_path / "missing.pt"), "--port", port], "missing.pt"),
        (["--model-uri", str(not_a_model), "--port", port], "junk.pt"),
        (["--model-uri", str(not_a_model), "--max-batch-size", "0", "--max-queue", "0"], "--max-batch-size 0"),
    ]
    for args, expected in cases:
        assert main(["--log-level", "ERROR", "serve", "--host", "127.0.0.1", *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("etude serve: error:") and expected in lines[0], lines


def test_only_a_failed_bind_is_reported_as_cannot_listen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import etude.serving.model

    argv = ["--log-level", "ERROR", "serve", "--model-uri", str(tmp_path / "m.pt"), "--host", "127.0.0.1",
            "--event-loop", "asyncio"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main([*argv, "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err

    def disk_full(uri: str, device: str, **_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(etude.serving.model, "load_model", disk_full)
    with pytest.raises(OSError, match="No space left"):  # not a user mistake: no "cannot listen" for it
        main([*argv, "--port", str(free_port())])
    assert "cannot listen" not in capsys.readouterr().err
