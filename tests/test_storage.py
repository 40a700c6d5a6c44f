"""etude.storage: local and gs:// reads and writes are whole or absent, and failures name the URI."""

from pathlib import Path

import pytest

from etude import storage


def test_local_write_is_atomic_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.bin"
    storage.write_bytes(str(target), b"hello")
    assert target.read_bytes() == b"hello"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]  # no temporary file left behind
    assert target.stat().st_mode & 0o777 == 0o644  # readable by a server running as another user


def test_gcs_round_trip(gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/dir/obj.json"
    assert not storage.exists(uri)
    storage.write_bytes(uri, b'{"a": 1}')
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b'{"a": 1}'


def test_missing_object_is_a_clear_error(gcs_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(storage.StorageError, match=f"gs://{gcs_bucket}/nope"):
        storage.read_bytes(f"gs://{gcs_bucket}/nope")
    with pytest.raises(storage.StorageError, match="nope.bin"):
        storage.read_bytes(str(tmp_path / "nope.bin"))
    with pytest.raises(storage.StorageError, match="no bucket"):
        storage.read_bytes("gs:///x")
