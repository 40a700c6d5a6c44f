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
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POLL_S = 0.2


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
        """SIGTERM to the child's group, wait up to `grace_s`, then SIGKILL; returns the exit code."""
        try:
            if child.running():
                _signal_group(child.pid, signal.SIGTERM)
                try:
                    child.proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) did not stop within %.0f s; killing it", child.name, child.pid, grace_s)
            _signal_group(child.pid, signal.SIGKILL)  # whatever is left of the group, the leader included
            return child.proc.wait(timeout=grace_s)
        finally:
            if child in self._live:
                self._live.remove(child)

    def stop_all(self, grace_s: float = 10.0) -> None:
        for child in reversed(list(self._live)):
            self.stop(child, grace_s)


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


def pick_port(preferred: int, host: str = "0.0.0.0") -> int:
    """`preferred` when it is free, else a free port the kernel picks."""
    if port_free(preferred, host):
        return preferred
    with socket.socket() as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    log.info("port %d is in use; using %d", preferred, port)
    return port


class NotReady(Exception):
    """The server did not become ready; the message says why and holds its last log lines."""


def wait_ready(url: str, child: Child, timeout_s: float) -> float:
    """Poll `url` (/ping) until it answers 200; returns the seconds it took. NotReady if the child exits or time
    runs out."""
    start_ns = time.perf_counter_ns()
    deadline_ns = start_ns + int(timeout_s * 1e9)
    while True:
        if not child.running():
            raise NotReady(f"the server exited with code {child.proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                if resp.status == 200:
                    return (time.perf_counter_ns() - start_ns) / 1e9
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or 503 while loading and warming up
        if time.perf_counter_ns() > deadline_ns:
            raise NotReady(f"the server was not ready within {timeout_s:.0f} s")
        time.sleep(POLL_S)
