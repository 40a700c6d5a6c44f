"""Export models for each runtime, and load + validate a serialized model (the server's only loader).

The serialized-model contract (README, "The serialized-model contract"):
a TorchScript module whose `forward(item_seq: int64[B, L], item_seq_len: int64[B], k: int) -> int64[B, k]`
returns the top-k item ids in [0, C), best first, distinct per row; item_seq is right-padded and only the first
item_seq_len entries of a row are items; 1 <= k <= C. The module has int attributes `catalog_size` (C) and
`max_session_length` (50 for the built-in models), readable as `torch.jit.load(path).catalog_size`.

Runtimes. Both produce a TorchScript file, so the server has one loader path:
- `eager`: `torch.jit.script` only: the module runs in the TorchScript interpreter as written, no freezing,
  no graph optimisation (weights stay module parameters).
- `jit`: `torch.jit.script`, then `torch.jit.freeze` (weights become constants; `catalog_size` and
  `max_session_length` are preserved) and, for a CPU server, `torch.jit.optimize_for_inference`.
Devices (`--device`): the export always runs on the CPU (a Kubernetes init container without a GPU). What it
writes depends on where the model will be served: `optimize_for_inference` bakes in settings of the build it runs
on (e.g. MKLDNN layouts on a CPU build, per the PyTorch docs), so a `cuda` artifact is frozen but not optimised;
its constants move to the GPU with `torch.jit.load(map_location=...)`. `serve --device` picks the loading device.
Scripting, never tracing: a trace freezes the control flow and data-dependent structure of its example input.
The other runtimes (aot, bf16, int8, onnx, ann) live in models/runtimes.py; `export_model` and `load_model` each
hand them over at one point, and every loaded model passes the same contract check.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from etude import storage
from etude.errors import UsageError
from etude.models.runtimes import (
    QUANTIZED_RUNTIMES,
    TORCHSCRIPT_RUNTIMES,
    artifact_kind,
    build_quantized,
    export_to,
    load_file,
)
from etude.spec import EXPORT_DEVICES, RUNTIMES

log = logging.getLogger(__name__)

CONTRACT_ATTRS = ("catalog_size", "max_session_length")


def to_torchscript(model: Any, runtime: str, device: str = "cpu") -> Any:
    """`eager`: scripted; `jit`: scripted, frozen and optimised for serving on `device` (see `_for_device`).
    The model stays on its device."""
    import torch

    if runtime not in TORCHSCRIPT_RUNTIMES:
        raise UsageError(f"runtime {runtime!r} is not TorchScript; TorchScript runtimes: eager, jit")
    model = model.eval().requires_grad_(False)
    with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; it is still the served format
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
        if runtime == "eager":
            return scripted
        frozen = torch.jit.freeze(scripted, preserved_attrs=list(CONTRACT_ATTRS))
        return _for_device(frozen, device)


def _for_device(frozen: Any, device: str) -> Any:
    """The device-specific step of `jit`: CPU-build optimisations for a CPU server only."""
    import torch

    if device not in EXPORT_DEVICES:
        raise UsageError(f"unknown device {device!r}; known devices: {', '.join(EXPORT_DEVICES)}")
    return torch.jit.optimize_for_inference(frozen) if device == "cpu" else frozen


def save(module: Any, path: Path) -> None:
    """torch.jit.save straight to a file: serialising to memory first would hold a second copy of every weight."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(path))


def export_model(
    name: str,
    catalog_size: int,
    runtime: str,
    out: str,
    *,
    seed: int = 42,
    if_missing: bool = False,
    device: str = "cpu",
) -> bool:
    """Build a built-in model with seeded random weights, for serving on `device`, and write it to `out`.

    Returns False when `if_missing` and `out` exists (nothing done). The file is written whole or not at all.
    """
    from etude.models.registry import build_model, check_name

    check_name(name)
    if catalog_size < 1:
        raise UsageError(f"--catalog-size must be >= 1, got {catalog_size}")
    if not needs_writing(runtime, device, out, if_missing=if_missing):
        return False
    started = _now_ns()
    def build() -> Any:  # bf16/int8: the table is quantized as it is drawn, never held in fp32 whole
        if runtime in QUANTIZED_RUNTIMES:
            return build_quantized(name, catalog_size, seed, runtime)
        return build_model(name, catalog_size, seed)

    size = storage.write_file(out, lambda path: write_artifact(build(), name, runtime, device, path))
    log.info(
        "exported %s (C=%d, %s for %s, seed %d) to %s: %.1f MB in %.1f s",
        name,
        catalog_size,
        runtime,
        device,
        seed,
        out,
        size / 1e6,
        (_now_ns() - started) / 1e9,
    )
    return True


def write_artifact(model: Any, name: str, runtime: str, device: str, path: Path) -> None:
    """Write what `etude export` writes for `model` (built-in `name`) on `runtime` to `path`: the one dispatch
    point. TorchScript (eager, jit, bf16, int8) is saved straight to the file (no second copy of the weights in
    memory)."""
    if runtime in TORCHSCRIPT_RUNTIMES:
        save(to_torchscript(model, runtime, device), path)
    else:
        export_to(model, name, runtime, path)


def runtime_module(model: Any, name: str, runtime: str, device: str = "cpu") -> Any:
    """What `etude serve` would run for `model` on `runtime`: TorchScript built in memory for eager and jit
    (exported for `device`, cuda:N as cuda), the exported artifact read back through the loader otherwise."""
    if runtime in TORCHSCRIPT_RUNTIMES:
        return to_torchscript(model, runtime, device.split(":")[0])
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the loaders read files (each has read it when it returns)
        path = Path(tmp) / "model"
        export_to(model, name, runtime, path)
        if runtime in QUANTIZED_RUNTIMES:  # TorchScript; the other runtimes' artifact kinds are their names
            return load_torchscript(path, device)
        return load_file(path, runtime, name, device)


def _now_ns() -> int:
    import time

    return time.perf_counter_ns()


def needs_writing(runtime: str, device: str, out: str, *, if_missing: bool) -> bool:
    """Before an export or import: the runtime and device known (UsageError otherwise), False when `if_missing` and
    `out` exists (nothing to do), and a local `out` writable before the (possibly long) work starts."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; known runtimes: {', '.join(RUNTIMES)}")
    if device not in EXPORT_DEVICES:
        raise UsageError(f"unknown device {device!r}; known devices: {', '.join(EXPORT_DEVICES)}")
    if if_missing and storage.exists(out):
        log.info("%s exists; nothing to do (--if-missing)", out)
        return False
    _check_writable(out)
    return True


def _check_writable(out: str) -> None:
    """Fail before the (possibly long) export when a local destination cannot be written."""
    if storage.is_gcs(out):
        storage.split_gcs(out)
        return
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file path such as {path / 'model.pt'}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    import os

    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {out}: {parent} is not a writable directory")


def load_model(uri: str, device: str = "cpu", *, allow_native_code: bool = False) -> Any:
    """Load a serialized model from a path or gs:// URI onto `device` and check that it meets the contract.

    Raises UsageError naming the URI and what is wrong: unreadable, not a model of a known runtime, missing
    attributes, or a forward that fails on, or answers wrongly to, a tiny batch. The runtime is recognised from
    the bytes (TorchScript, AOTInductor package, ONNX, or an ann index), not from the file name. An aot package
    holds compiled native code that runs when it is loaded, so it is refused unless `allow_native_code` (the
    server's `--allow-native-code`, which `etude local` and the manifests pass for models the export step built).
    """
    with storage.local_file(uri) as path:  # from a file, not from bytes in memory: one copy of the weights
        kind = artifact_kind(path)
        if kind == "aot" and not allow_native_code:
            raise UsageError(
                f"{uri} is an AOTInductor package: loading it runs the native code inside it; serve only a package "
                "you built, with --allow-native-code"
            )
        if kind is not None:
            module = load_file(path, kind, uri, device)
        else:
            try:
                module = load_torchscript(path, device)
            except Exception as err:  # noqa: BLE001 - any load failure means "not a TorchScript model"
                raise UsageError(
                    f"{uri} is not a TorchScript model ({_first_line(err)}) nor an aot, onnx or ann model; export "
                    "one with `etude export` or torch.jit.script(model).save(path)"
                ) from None
    module.eval()
    check_contract(module, uri, device)
    return module


def load_torchscript(path: Path, device: str) -> Any:
    """torch.jit.load from a file (from bytes, the caller's copy of every weight would be held as well)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device)


def check_contract(module: Any, uri: str, device: str = "cpu") -> None:
    """Run the contract's checks on a loaded module; UsageError on the first violation."""
    import torch

    attrs = {}
    for attr in CONTRACT_ATTRS:
        value = getattr(module, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(
                f"{uri}: the model must have an int attribute `{attr}` >= 1 (got {value!r}); "
                "see the serialized-model contract in the README"
            )
        attrs[attr] = value
    catalog_size = attrs["catalog_size"]
    k = min(3, catalog_size)
    item_seq = torch.tensor([[0, catalog_size - 1, 0], [catalog_size - 1, 0, 0]], dtype=torch.long, device=device)
    item_seq_len = torch.tensor([3, 1], dtype=torch.long, device=device)
    try:
        with torch.inference_mode():
            out = module(item_seq, item_seq_len, k)
    except Exception as err:  # noqa: BLE001 - the user's model failed on a valid input
        raise UsageError(
            f"{uri}: forward(item_seq [2, 3] int64, item_seq_len [2] int64, k={k}) failed: {_first_line(err)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dtype != torch.long or tuple(out.shape) != (2, k):
        got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"{uri}: forward must return an int64 tensor of shape [B, k] = [2, {k}], got {got}")
    if bool(((out < 0) | (out >= catalog_size)).any()):
        raise UsageError(f"{uri}: forward returned item ids outside [0, catalog_size={catalog_size})")
    for row in out.tolist():
        if len(set(row)) != len(row):
            raise UsageError(f"{uri}: forward returned repeated item ids in one row: {row}")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
