"""Read and write files by URI: a local path or `gs://bucket/path` (google-cloud-storage).

On GKE the client authenticates with the pod's Workload Identity (application default credentials); with
`STORAGE_EMULATOR_HOST` set (tests, local emulator) it talks to the emulator anonymously. Local writes are
atomic (temporary file + rename); a GCS object upload is atomic by nature.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

from etude.errors import UsageError


class StorageError(UsageError):
    """A URI that cannot be read or written; the message names it and why."""


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def split_gcs(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> (`bucket`, `a/b`)."""
    bucket, _, path = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in gs:// URI")
    return bucket, path


def join(uri: str, *parts: str) -> str:
    if is_gcs(uri):
        return "/".join([uri.rstrip("/"), *parts])
    return str(Path(uri, *parts))


@cache
def gcs_client(project: str | None = None) -> Any:
    """A storage client; `project` where the environment may not name one (None: inferred, as in a pod)."""
    from google.cloud import storage  # imported here: only gs:// users pay for it

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or os.environ.get("GOOGLE_CLOUD_PROJECT", "test"),
                              credentials=AnonymousCredentials())
    return storage.Client(project=project)


def _blob(uri: str, project: str | None = None) -> Any:
    bucket, path = split_gcs(uri)
    if not path:
        raise StorageError(f"{uri}: no object path after the bucket")
    return gcs_client(project).bucket(bucket).blob(path)


def read_bytes(uri: str, *, project: str | None = None) -> bytes:
    try:
        if is_gcs(uri):
            return cast(bytes, _blob(uri, project).download_as_bytes())
        return Path(uri).read_bytes()
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - every backend failure becomes one clear error
        raise StorageError(f"cannot read {uri}: {_reason(err)}") from err


def write_bytes(uri: str, data: bytes) -> None:
    """Write `data` to `uri` whole or not at all."""

    def fill(path: Path) -> None:
        with path.open("wb") as f:
            f.write(data)

    write_file(uri, fill)


def write_file(uri: str, fill: Callable[[Path], None]) -> int:
    """Write `uri` whole or not at all from `fill(path)`, which writes a local temporary file; returns its size.

    For files too big to hold twice in memory (a model): `fill` streams to disk, and a gs:// object is uploaded
    from that file. Any failure, `fill`'s included, leaves nothing behind; it raises StorageError, or `fill`'s own
    UsageError as it is.
    """
    try:
        if is_gcs(uri):
            blob = _blob(uri)
            with tempfile.TemporaryDirectory(prefix="etude-upload-") as tmp_dir:
                tmp = Path(tmp_dir, "object")
                fill(tmp)
                blob.upload_from_filename(str(tmp))
                return tmp.stat().st_size
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; results and models are meant to be read by others
            os.close(fd)
            fill(tmp)
            size = tmp.stat().st_size
            os.replace(tmp, path)
            return size
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except UsageError:  # a user mistake found while filling (e.g. a model the runtime cannot hold) speaks for itself
        raise
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"cannot write {uri}: {_reason(err)}") from err


@contextmanager
def local_file(uri: str) -> Iterator[Path]:
    """A local path holding `uri`'s content while the block runs: the file itself, or a temporary download."""
    if not is_gcs(uri):
        path = Path(uri)
        if not path.is_file():
            raise StorageError(f"cannot read {uri}: " + ("is a directory" if path.is_dir() else "no such file"))
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="etude-download-") as tmp_dir:
        tmp = Path(tmp_dir, "object")
        try:
            _blob(uri).download_to_filename(str(tmp))
        except StorageError:
            raise
        except Exception as err:  # noqa: BLE001
            raise StorageError(f"cannot read {uri}: {_reason(err)}") from err
        yield tmp


def delete(uri: str) -> None:
    """Remove `uri` if it is there."""
    try:
        if is_gcs(uri):
            blob = _blob(uri)
            if blob.exists():
                blob.delete()
        else:
            Path(uri).unlink(missing_ok=True)
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"cannot remove {uri}: {_reason(err)}") from err


def exists(uri: str) -> bool:
    try:
        if is_gcs(uri):
            return bool(_blob(uri).exists())
        return Path(uri).exists()
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"cannot check {uri}: {_reason(err)}") from err


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or getattr(err, "message", None) or str(err) or type(err).__name__
