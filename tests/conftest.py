"""Shared fixtures: a local GCS emulator (real google-cloud-storage client, no cloud), free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from etude import storage
from etude.processes import free_port

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """An in-memory GCS emulator on loopback; STORAGE_EMULATOR_HOST points at it (also for child processes)."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    storage.gcs_client.cache_clear()
    try:
        yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        server.stop()
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old
        storage.gcs_client.cache_clear()


@pytest.fixture
def gcs_bucket(gcs_emulator: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket in the emulator for one test; returns its name."""
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    client = storage.gcs_client()
    bucket = client.bucket(name)
    if not bucket.exists():
        client.create_bucket(name)
    return name


@pytest.fixture
def shared_data() -> Path:
    """The real click logs in ../shared/data; the test is skipped, with the reason, when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real click logs not found at {SHARED_DATA}")
    return SHARED_DATA
