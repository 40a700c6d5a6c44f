"""Child processes of `etude local`: each in its own process group, its output in a log file, stopped by group
(SIGTERM, a grace period, then SIGKILL) so that nothing it started outlives it; free ports; readiness.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def etude_argv(argv: Sequence[str]) -> list[str]:
    """A shared command line (`etude VERB ...`) run with this interpreter: `python -m etude VERB ...`."""
    if not argv or argv[0] != "etude":
        raise ValueError(f"not an etude command line: {argv!r}")
    return [sys.executable, "-m", "etude", *argv[1:]]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        return tail(self.log_path, lines)


class Children:
    """Every process started for a run; `stop_all` (also on Ctrl-C) stops them, newest first."""

    def __init__(self) -> None:
        self._live: list[Child] = []

    def start(self, name: str, argv: Sequence[str], log_path: Path) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    process_group=0)  # own group: a terminal's Ctrl-C reaches only us, we stop it
        child = Child(name, proc, log_path)
        self._live.append(child)
        log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
        return child

    def stop(self, child: Child, grace_s: float = 10.0) -> int | None:
        """SIGTERM to the child's group, wait up to `grace_s`, then SIGKILL; returns the exit code.

        The child stays on the list until its group is killed, so that `stop_all` still reaches it when this is
        interrupted."""
        if child.running():
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop within %.0f s; killing it", child.name, child.pid, grace_s)
        _signal_group(child.pid, signal.SIGKILL)  # whatever is left of the group, the leader included
        if child in self._live:
            self._live.remove(child)
        return child.proc.wait(timeout=grace_s)

    def stop_all(self, grace_s: float = 10.0) -> None:
        """Stop every child, newest first; one that cannot be stopped does not keep the others running."""
        for child in reversed(list(self._live)):
            try:
                self.stop(child, grace_s)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) survived SIGKILL for %.0f s", child.name, child.pid, grace_s)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file (empty when there is none)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except OSError:
        return ""


def port_free(port: int, host: str = "0.0.0.0") -> bool:
    """Nobody listens on `port` (connections of an earlier server in TIME_WAIT do not count: the server sets
    SO_REUSEADDR too)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel picks as free on `host` now (another process may take it before it is used)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pick_port(preferred: int, host: str = "0.0.0.0") -> int:
    """`preferred` when it is free, else a free port the kernel picks."""
    if port_free(preferred, host):
        return preferred
    port = free_port(host)
    log.info("port %d is in use; using %d", preferred, port)
    return port


class NotReady(Exception):
    """The server did not become ready; the message says why and holds its last log lines."""


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Wait, outside any event loop, until the server `proc` at `base_url` is ready (GET /ping answers 200; the
    load generator's check, etude.loadgen.client.wait_ready); returns the seconds it took. NotReady if `proc` exits
    first or time runs out."""
    import asyncio

    import aiohttp

    from etude.errors import UsageError
    from etude.loadgen.client import wait_ready as poll

    async def check() -> float:
        async with aiohttp.ClientSession() as http:
            return await poll(http, base_url, timeout_s, alive=lambda: proc.poll() is None)

    try:
        return asyncio.run(check())
    except UsageError as err:
        if proc.poll() is not None:
            raise NotReady(f"the server exited with code {proc.returncode} before it was ready") from None
        raise NotReady(str(err)) from None
