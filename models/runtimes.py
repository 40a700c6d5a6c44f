"""The runtimes beyond TorchScript: `aot`, `bf16`, `int8`, `onnx` and `ann` (docs/design.md, "Runtimes").

`export_to(model, name, runtime, path)` writes a built-in model's artifact for the runtime and
`load_file(path, kind, uri, device)` reads one back as an object that meets the serialized-model contract
(`catalog_size`, `max_session_length`, `module(item_seq, item_seq_len, k) -> ids [B, k]`), so `etude serve` and
its contract check treat every runtime alike. The format is recognised from the file's bytes, never from its name:

- `bf16`, `int8`: TorchScript (loaded by the TorchScript path of models/export.py). The item table is stored in
  bfloat16, or in int8 with one fp32 scale per row (symmetric, max-abs / 127); the encoder looks items up from it
  and the top-k scan dequantises one block of rows at a time into fp32 for the product (bf16 multiplies in
  bfloat16 directly where the CPU has AVX512-BF16 or on a GPU). Recall@21 against fp32 is measured, not assumed.
- `aot`: `torch.export` of the encoder and a block-scan head, compiled by AOTInductor into a `.pt2` package
  without its weights, which follow as aligned records of the same archive and are mapped from the file at load;
  catalog_size and max_session_length travel in the package's metadata. Needs a C++ compiler at export time.
- `onnx`: the same exported program written as ONNX (dynamo exporter), run by ONNX Runtime; the sizes travel in
  the model's metadata_props. One protobuf holds at most 2 GB, so the item table must fit in it.
- `ann`: the encoder as TorchScript plus a faiss IVF index (inner product) over the item table, in one zip;
  nprobe is raised at export until recall@21 on sample sessions reaches ANN_TARGET_RECALL.

aot and onnx are exported with a fixed session width (max_session_length: the sessions are right-padded to it,
which the contract allows) and a dynamic batch size and k (k travels as the length of a tensor).
RepeatNet (its explore softmax needs every item's score and the session's exclusions) and noop (no item table)
run on eager and jit only; asking for another runtime is a UsageError naming the model and the reason.
"""

import json
import logging
import math
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, cast

import numpy as np
import torch
from torch import Tensor, nn

from etude.errors import UsageError
from etude.models.common import SessionModel, prepare_session

log = logging.getLogger(__name__)

TORCHSCRIPT_RUNTIMES = ("eager", "jit")
QUANTIZED_RUNTIMES = ("bf16", "int8")
SCAN_ROWS = 65536  # rows per block of the block-scan head
MAX_EXPORT_BLOCKS = 64  # aot/onnx unroll the block loop; more rows per block beyond 64 * SCAN_ROWS items
MAX_EXPORT_BATCH = 65536
ONNX_RUN_ROWS = 32  # sessions per ONNX Runtime run: its buffers grow with the batch (1.8 GB at B = 256, C = 1M)
ANN_TARGET_RECALL = 0.95
ANN_SAMPLE_SESSIONS = 256
ANN_ADD_ROWS = 1 << 20  # rows handed to the index at a time
ANN_MEMBER = "etude-ann/meta.json"
ANN_ENCODER = "etude-ann/encoder.pt"
ANN_INDEX = "etude-ann/index.faiss"
AOT_CONSTANTS = "etude-aot/constants.json"  # [{fqn, record, dtype, shape}] of the weights beside the package
AOT_CONSTANT_RECORDS = "etude-aot/constants/"
CONTRACT_KEYS = ("catalog_size", "max_session_length")


def scan_top_k(
    query: Tensor, table: Tensor, row_scale: Tensor, first_row: int, num_items: int, k: int, rows: int, native: bool
) -> Tensor:
    """Top-k ids [B, k] of query [B, d] against rows [first_row, first_row + num_items) of table, best first.

    A table in another dtype than the query is dequantised one block at a time (or multiplied in its dtype
    when `native`); row_scale [num_items] (empty: none) multiplies each item's score. Each block is merged into
    the running top-k with one topk over [best k | block], so no shape depends on k being below a block's size.
    """
    B = query.size(0)
    best_v = torch.full([B, k], -math.inf, dtype=query.dtype, device=query.device)
    best_i = torch.zeros([B, k], dtype=torch.long, device=query.device)
    scaled = row_scale.numel() > 0
    for start in range(0, num_items, rows):
        end = min(num_items, start + rows)
        block = table[first_row + start : first_row + end]
        if native and block.dtype != query.dtype:
            scores = torch.mm(query.to(block.dtype), block.t()).to(query.dtype)
        else:
            scores = torch.mm(query, block.to(query.dtype).t())  # [B, n]
        if scaled:
            scores = scores * row_scale[start:end].unsqueeze(0)
        v, j = torch.topk(torch.cat([best_v, scores], 1), k, dim=1)
        best_i = torch.where(j < k, best_i.gather(1, j.clamp(max=k - 1)), j - k + start)
        best_v = v
    return best_i


class QuantizedEmbedding(nn.Module):
    """The item table in bfloat16 or int8 (+ a scale per row); looks rows up in fp32. `weight` is the stored
    table, so a model's code that names `item_embedding.weight` still compiles."""

    weight: Tensor
    scale: Tensor

    def __init__(self, weight: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # [R, d] bfloat16 or int8
        self.register_buffer("scale", scale)  # [R] fp32, or empty (bf16)

    def forward(self, ids: Tensor) -> Tensor:
        rows = self.weight[ids].to(torch.float32)
        if self.scale.numel() > 0:
            rows = rows * self.scale[ids].unsqueeze(-1)
        return rows


def quantize(table: Tensor, runtime: str) -> tuple[Tensor, Tensor]:
    """(stored table, per-row scale or empty) for `bf16` or `int8` (symmetric per-row, max-abs / 127)."""
    if runtime == "bf16":
        return table.to(torch.bfloat16), torch.empty(0, device=table.device)
    scale = (table.abs().amax(1) / 127.0).clamp(min=1e-12)  # [R]
    out = torch.empty(table.shape, dtype=torch.int8, device=table.device)
    for start in range(0, table.size(0), 1 << 20):  # in blocks: no fp32 copy of the whole table
        part = table[start : start + (1 << 20)] / scale[start : start + (1 << 20)].unsqueeze(1)
        out[start : start + (1 << 20)] = part.round_().clamp_(-127, 127).to(torch.int8)
    return out, scale


class QuantizedTable:
    """An `ItemRows` sink (models/common.py): keeps the fp32 rows it is given quantized, and each row's norm."""

    def __init__(self, rows: int, dim: int, runtime: str) -> None:
        self.runtime = runtime
        self.stored = torch.empty(rows, dim, dtype=torch.bfloat16 if runtime == "bf16" else torch.int8)
        self.scale = torch.empty(rows if runtime == "int8" else 0)
        self.norms = torch.empty(rows)

    def __call__(self, start: int, block: Tensor) -> None:
        end = start + block.size(0)
        self.stored[start:end], scale = quantize(block, self.runtime)
        if scale.numel():
            self.scale[start:end] = scale
        self.norms[start:end] = block.norm(dim=1)


def build_quantized(name: str, catalog_size: int, seed: int, runtime: str) -> "QuantizedModel":
    """Built-in `name` with seeded weights on `bf16` or `int8`, its item table quantized as it is drawn: the fp32
    table is never held whole (it would be twice the bf16 model), and the weights are those of build_model."""
    from etude.models.common import embedding_dim
    from etude.models.registry import build_model

    table = QuantizedTable(catalog_size + 1, embedding_dim(catalog_size), runtime)
    model = check_supported(build_model(name, catalog_size, seed, item_rows=table), name, runtime)
    set_norms = getattr(model, "set_norms", None)
    if set_norms is not None:
        set_norms(table.norms)
    return QuantizedModel(model, table.stored, table.scale, runtime == "bf16" and native_bf16(torch.device("cpu")))


class QuantizedModel(nn.Module):
    """A session model whose item table is stored quantized: encode with it, score with a block scan."""

    catalog_size: int
    max_session_length: int
    native: bool
    rows: int
    score_scale: Tensor

    def __init__(self, model: SessionModel, stored: Tensor, scale: Tensor, native: bool) -> None:
        super().__init__()
        item_scale = _item_scale(model)
        score = scale[1:] if scale.numel() else torch.empty(0, device=scale.device)
        if item_scale.numel():
            score = item_scale * score if score.numel() else item_scale
        model.item_embedding = QuantizedEmbedding(stored, scale)  # type: ignore[assignment]
        self.model = model
        self.register_buffer("score_scale", score.contiguous())
        self.catalog_size = model.catalog_size
        self.max_session_length = model.max_session_length
        self.native = native
        self.rows = SCAN_ROWS  # (TorchScript reads no module globals)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        if k < 1 or k > self.catalog_size:
            raise ValueError("k must be in [1, catalog_size]")
        seq, lens = prepare_session(item_seq, item_seq_len, self.max_session_length, self.model.pad_to)
        query = self.model.encode(seq, lens)  # [B, d]
        table = self.model.item_embedding.weight
        rows = min(self.rows, max(4096, 16777216 // max(query.size(0), 1)))  # at most 2^24 scores per block
        return scan_top_k(query, table, self.score_scale, 1, self.catalog_size, k, rows, self.native)


class EncoderAndHead(nn.Module):
    """What aot and onnx export: prepared sessions seq [B, L] (shifted ids), lens [B], and k as the length of
    k_like [k] -> ids [B, k], the exact fp32 top-k."""

    score_scale: Tensor

    def __init__(self, model: SessionModel) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("score_scale", _item_scale(model))
        self.rows = max(SCAN_ROWS, math.ceil(model.catalog_size / MAX_EXPORT_BLOCKS))

    def forward(self, seq: Tensor, lens: Tensor, k_like: Tensor) -> Tensor:
        query = self.model.encode(seq, lens)
        table = self.model.item_embedding.weight
        C = self.model.catalog_size
        return scan_top_k(query, table, self.score_scale, 1, C, k_like.size(0), self.rows, False)


class Encoder(nn.Module):
    """ann's session encoder (TorchScript): contract input -> query [B, d]; `exact` is the fp32 fallback."""

    catalog_size: int
    max_session_length: int
    rows: int
    score_scale: Tensor

    def __init__(self, model: SessionModel) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("score_scale", _item_scale(model))
        self.catalog_size = model.catalog_size
        self.max_session_length = model.max_session_length
        self.rows = SCAN_ROWS

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        seq, lens = prepare_session(item_seq, item_seq_len, self.max_session_length, self.model.pad_to)
        return self.model.encode(seq, lens)

    @torch.jit.export
    def exact(self, query: Tensor, k: int) -> Tensor:
        table = self.model.item_embedding.weight
        return scan_top_k(query, table, self.score_scale, 1, self.catalog_size, k, self.rows, False)


def _item_scale(model: nn.Module) -> Tensor:
    """Per-item score multiplier [C] of a model that has one (CORE's inverse norms), else empty."""
    inv_norm = getattr(model, "inv_norm", None)
    if isinstance(inv_norm, Tensor):
        return inv_norm[1:].detach().clone()
    return (
        torch.empty(0, device=model.item_embedding.weight.device) if isinstance(model, SessionModel) else torch.empty(0)
    )


def unsupported(model: nn.Module, name: str, runtime: str) -> str | None:
    """Why `model` cannot run on `runtime` (one line naming both), or None when it can."""
    if runtime in (*TORCHSCRIPT_RUNTIMES, "python"):
        return None
    if not isinstance(model, SessionModel):
        return f"{name} cannot run on runtime {runtime!r}: it has no item table to score (eager, jit only)"
    if type(model).forward is not SessionModel.forward and not hasattr(model, "inv_norm"):
        return (
            f"{name} cannot run on runtime {runtime!r}: its ranking is not an inner product over the item table "
            "(the explore softmax needs every item's score); use eager or jit"
        )
    return None


def check_supported(model: nn.Module, name: str, runtime: str) -> SessionModel:
    """The model as a SessionModel whose ranking is encode + inner product; UsageError naming why not."""
    reason = unsupported(model, name, runtime)
    if reason is not None or not isinstance(model, SessionModel):
        raise UsageError(reason or f"{name}: not a session model")
    return model


# ---- export ------------------------------------------------------------------------------------------------


def export_to(model: nn.Module, name: str, runtime: str, path: Path) -> None:
    """Write the artifact of `runtime` (one of aot, bf16, int8, onnx, ann) for a built-in model, or for the
    QuantizedModel of `build_quantized`, to `path` (straight to the file: no copy of the artifact in memory)."""
    if isinstance(model, QuantizedModel):
        target: nn.Module = model
    else:
        target = check_supported(model.eval().requires_grad_(False), name, runtime)
    writers: dict[str, Callable[[Any, Path], None]] = {
        "bf16": lambda m, p: _save(_quantized_module(m, "bf16"), p),
        "int8": lambda m, p: _save(_quantized_module(m, "int8"), p),
        "aot": _export_aot,
        "onnx": _export_onnx,
        "ann": _export_ann,
    }
    try:
        writers[runtime](target, path)
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - an exporter's failure is reported in one line, naming the model
        raise UsageError(f"{name} cannot be exported to {runtime}: {_first_line(err)}") from None


def native_bf16(device: torch.device) -> bool:
    """Multiply in bfloat16 directly: on a GPU, or a CPU with AVX512-BF16 (else upconvert a block to fp32)."""
    if device.type == "cuda":
        return True
    return bool(torch.cpu._is_avx512_bf16_supported())


def _quantized_module(model: nn.Module, runtime: str) -> Any:
    """The frozen TorchScript of `bf16` or `int8`: of a QuantizedModel (`build_quantized`), or of a supported
    session model whose fp32 table is quantized here."""
    if not isinstance(model, QuantizedModel):
        assert isinstance(model, SessionModel)
        weight = model.item_embedding.weight.detach()
        stored, scale = quantize(weight, runtime)
        model = QuantizedModel(model, stored, scale, runtime == "bf16" and native_bf16(weight.device))
    return _frozen(model, list(CONTRACT_KEYS))


def _save(module: Any, path: Path) -> None:
    from etude.models.export import save

    save(module, path)


def _frozen(module: nn.Module, keep: list[str]) -> Any:
    """Scripted and frozen, keeping the attributes and methods named in `keep`."""
    import warnings

    with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.freeze(torch.jit.script(module.eval()), preserved_attrs=keep)


def _exported_program(model: SessionModel) -> tuple[Any, tuple[Tensor, Tensor, Tensor], Any]:
    """torch.export of EncoderAndHead with a dynamic batch (>= 2) and k, the width fixed at max_session_length."""
    width = model.max_session_length
    C = model.catalog_size
    device = model.item_embedding.weight.device
    example = (
        torch.randint(1, C + 1, (3, width), dtype=torch.long, device=device),
        torch.tensor([width, 2, 1], dtype=torch.long, device=device),
        torch.empty(min(5, C), device=device),
    )
    batch = torch.export.Dim("batch", min=2, max=MAX_EXPORT_BATCH)
    k = torch.export.Dim("k", min=1, max=max(C, 2))
    shapes = ({0: batch}, {0: batch}, {0: k})
    program = torch.export.export(EncoderAndHead(model), example, dynamic_shapes=shapes)
    return program, example, shapes


def contract_metadata(model: nn.Module) -> dict[str, str]:
    """The contract's sizes as the metadata strings aot and onnx artifacts carry them in."""
    return {key: str(getattr(model, key)) for key in CONTRACT_KEYS}


def _export_aot(model: SessionModel, path: Path) -> None:
    """Compile the program without its weights (`package_constants_in_so` off: no serialized copy of the table),
    then write the package's records and each constant the compiled model asks for, from its own storage."""
    from torch.export.pt2_archive._package import PT2ArchiveReader, PT2ArchiveWriter

    program, _, _ = _exported_program(model)
    configs = {
        "aot_inductor.metadata": contract_metadata(model),
        "aot_inductor.package_constants_in_so": False,
    }
    index = model.item_embedding.weight.device.index
    values = {**program.state_dict, **program.constants}
    with tempfile.TemporaryDirectory() as tmp:
        package = str(Path(tmp) / "model.pt2")  # AOTInductor wants the suffix
        torch._inductor.aoti_compile_and_package(program, package_path=package, inductor_configs=configs)
        needed = torch._inductor.aoti_load_package(package, device_index=-1 if index is None else index)
        fqns = needed.get_constant_fqns()
        if missing := [fqn for fqn in fqns if fqn not in values]:
            raise RuntimeError(f"the compiled model needs constants the program does not hold: {missing[:3]}")
        entries = []
        with PT2ArchiveReader(package) as src, PT2ArchiveWriter(str(path)) as dst:
            for name in src.get_file_names():
                if not name.startswith(".data/"):  # the writer's own records
                    dst.write_bytes(name, src.read_bytes(name))
            for i, fqn in enumerate(fqns):
                tensor = values[fqn].detach().cpu()
                if not tensor.is_contiguous() or tensor.untyped_storage().nbytes() != tensor.nbytes:
                    tensor = tensor.clone()  # a view: its own storage (the item table is written as it is)
                record = f"{AOT_CONSTANT_RECORDS}{i}"
                dst.archive_file.write_record(record, tensor.untyped_storage(), tensor.nbytes)
                entries.append({"fqn": fqn, "record": record, "dtype": str(tensor.dtype), "shape": list(tensor.shape)})
            dst.write_string(AOT_CONSTANTS, json.dumps(entries))


def _export_onnx(model: SessionModel, path: Path) -> None:
    import onnx

    table_bytes = model.item_embedding.weight.numel() * 4
    if table_bytes >= 2**31 - (64 << 20):
        raise UsageError(
            f"onnx: the item table ({table_bytes / 1e9:.2f} GB) does not fit one ONNX protobuf (2 GB); "
            "use aot or jit for this catalog size"
        )
    program, example, shapes = _exported_program(model)
    with tempfile.TemporaryDirectory() as tmp:  # the exporter may write its weights to a second file beside it
        exported = Path(tmp) / "model.onnx"
        torch.onnx.export(program, example, str(exported), dynamo=True, dynamic_shapes=shapes, verbose=False)
        proto = onnx.load(str(exported))
    for key, value in contract_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _export_ann(model: SessionModel, path: Path) -> None:
    import faiss

    encoder = Encoder(model)
    C = model.catalog_size
    table = model.item_embedding.weight.detach()[1:]
    scale = encoder.score_scale

    def vectors(ids: slice | Tensor) -> np.ndarray:  # the indexed rows (CORE's scaled), a block at a time
        rows = table[ids] * scale[ids].unsqueeze(1) if scale.numel() else table[ids]
        return np.ascontiguousarray(rows.numpy(), dtype=np.float32)

    started = time.perf_counter_ns()
    nlist = max(1, min(int(4 * math.sqrt(C)), C // 39))  # faiss wants >= 39 training points per list
    quantizer = faiss.IndexFlatIP(table.size(1))
    index = faiss.IndexIVFFlat(quantizer, table.size(1), nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = rng.choice(C, size=min(C, 64 * nlist), replace=False) if C > 64 * nlist else np.arange(C)
    index.train(vectors(torch.from_numpy(sample)))
    for start in range(0, C, ANN_ADD_ROWS):  # no scaled copy of the whole table
        index.add(vectors(slice(start, start + ANN_ADD_ROWS)))
    build_s = (time.perf_counter_ns() - started) / 1e9
    nprobe, recall = _calibrate_nprobe(encoder, index, C)
    encoder_file = path.with_name(path.name + ".encoder")  # next to the artifact's temporary file
    try:
        _save(_frozen(encoder, [*CONTRACT_KEYS, "exact"]), encoder_file)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.write(encoder_file, ANN_ENCODER)
            with zf.open(ANN_INDEX, "w", force_zip64=True) as f:  # streamed: no serialised copy of the index
                faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))  # type: ignore[attr-defined]
            meta = {
                "format": "etude-ann-ivf",
                "catalog_size": C,
                "max_session_length": model.max_session_length,
                "nlist": nlist,
                "nprobe": nprobe,
                "sample_recall_at_21": round(recall, 4),
                "build_s": round(build_s, 3),
                "index_bytes": zf.getinfo(ANN_INDEX).file_size,
            }
            zf.writestr(ANN_MEMBER, json.dumps(meta))
    finally:
        encoder_file.unlink(missing_ok=True)
    log.info("ann index: %s", meta)


def _calibrate_nprobe(encoder: Any, index: Any, catalog_size: int) -> tuple[int, float]:
    """The smallest power-of-two nprobe whose recall@21 on sample sessions reaches ANN_TARGET_RECALL."""
    rng = np.random.default_rng(1)
    n = ANN_SAMPLE_SESSIONS
    lengths = rng.integers(1, 11, size=n)
    seq = torch.from_numpy(rng.integers(0, catalog_size, size=(n, 10)))
    with torch.inference_mode():
        query = encoder(seq, torch.from_numpy(lengths))
        k = min(21, catalog_size)
        exact = encoder.exact(query, k).numpy()
    q = np.ascontiguousarray(query.numpy(), dtype=np.float32)
    nprobe = 1
    while True:
        index.nprobe = nprobe
        _, ids = index.search(q, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids.tolist(), exact.tolist(), strict=True)]))
        if recall >= ANN_TARGET_RECALL or nprobe >= index.nlist:
            return nprobe, recall
        nprobe = min(2 * nprobe, index.nlist)


# ---- load ----------------------------------------------------------------------------------------------------


def artifact_kind(path: Path) -> str | None:
    """'aot', 'ann' or 'onnx' when the file is such an artifact; None for anything else (TorchScript or junk).
    A zip is told by its member names, read without loading the file whole."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return None
        if ANN_MEMBER in names:
            return "ann"
        if any(n.endswith("/archive_format") for n in names) and any("aotinductor" in n for n in names):
            return "aot"
        return None
    try:
        import onnx

        proto = onnx.load_model(str(path))
    except Exception:  # noqa: BLE001 - not a protobuf of an ONNX model
        return None
    return "onnx" if proto.graph.node else None


class _Served:
    """An artifact run through its runtime, with the contract's interface (attributes and call)."""

    def __init__(self, catalog_size: int, max_session_length: int, device: str) -> None:
        self.catalog_size = catalog_size
        self.max_session_length = max_session_length
        self.device = torch.device(device)

    def eval(self) -> Self:
        return self

    def prepared(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> tuple[Tensor, Tensor, int]:
        """Sessions cut and right-padded to max_session_length (shifted ids), at least 2 rows; the real B."""
        if k < 1 or k > self.catalog_size:
            raise ValueError("k must be in [1, catalog_size]")
        width = self.max_session_length
        seq, lens = prepare_session(item_seq, item_seq_len, width, width)
        n = seq.size(0)
        if n == 1:  # the programs are exported for B >= 2 (size 1 is special to torch.export)
            seq, lens = seq.expand(2, width).contiguous(), lens.expand(2).contiguous()
        return seq.to(self.device), lens.to(self.device), n


class AotModel(_Served):
    def __init__(self, path: Path, device: str) -> None:
        index = torch.device(device).index
        self._runner = torch._inductor.aoti_load_package(str(path), device_index=-1 if index is None else index)
        reader = torch._C.PyTorchFileReader(str(path))
        if AOT_CONSTANTS in reader.get_all_records():  # ours: the weights beside the code; else the package embeds them
            self._constants = _mapped_constants(path, reader, device)  # the runner keeps pointers into these
            self._runner.load_constants(self._constants, check_full_update=True, user_managed=True)
        meta = self._runner.get_metadata()
        super().__init__(int(meta["catalog_size"]), int(meta["max_session_length"]), device)

    def __call__(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        seq, lens, n = self.prepared(item_seq, item_seq_len, k)
        out: Tensor = self._runner(seq, lens, torch.empty(k, device=self.device))
        return out[:n]


def _mapped_constants(path: Path, reader: Any, device: str) -> dict[str, Tensor]:
    """The constants of an aot artifact as tensors over a private map of the file (pages are read as they are
    touched and never copied on the CPU), moved to `device`."""
    entries = json.loads(reader.get_record(AOT_CONSTANTS))
    storage = cast(torch.UntypedStorage, torch.UntypedStorage.from_file(str(path), False, path.stat().st_size))
    dtypes = {str(t): t for t in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64)}
    dtypes |= {str(t): t for t in (torch.int32, torch.int8, torch.uint8, torch.bool)}
    constants = {}
    for entry in entries:
        dtype = dtypes.get(entry["dtype"])
        if dtype is None:
            raise UsageError(f"aot constant {entry['fqn']!r} has an unknown dtype {entry['dtype']!r}")
        offset = reader.get_record_offset(entry["record"])  # records are 64-byte aligned
        flat = torch.empty(0, dtype=dtype)
        flat.set_(storage, offset // flat.element_size(), (math.prod(entry["shape"]),), (1,))
        constants[entry["fqn"]] = flat.view(entry["shape"]).to(device)
    return constants


class OnnxModel(_Served):
    def __init__(self, path: Path, device: str) -> None:
        import onnxruntime as ort

        if device != "cpu":
            raise UsageError("onnx models run on the CPU here (onnxruntime's CPU provider)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # from the file: from bytes, the caller's copy of the model would be held while the session is built
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self._session.get_modelmeta().custom_metadata_map
        self._inputs = [i.name for i in self._session.get_inputs()]
        super().__init__(int(meta["catalog_size"]), int(meta["max_session_length"]), device)

    def __call__(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        seq, lens, n = self.prepared(item_seq, item_seq_len, k)
        k_like = np.empty(k, np.float32)
        parts = []
        for start in range(0, seq.size(0), ONNX_RUN_ROWS):  # ONNX Runtime holds every unrolled block's scores
            stop = min(seq.size(0), start + ONNX_RUN_ROWS)
            lo = min(start, stop - 2)  # a last part of one row runs with the row before it (seq has >= 2)
            feeds = dict(zip(self._inputs, (seq[lo:stop].numpy(), lens[lo:stop].numpy(), k_like), strict=True))
            parts.append(torch.from_numpy(self._session.run(None, feeds)[0][start - lo :]))
        return torch.cat(parts)[:n]


class AnnModel(_Served):
    def __init__(self, path: Path, device: str) -> None:
        import faiss

        if device != "cpu":
            raise UsageError("ann models run on the CPU here (faiss-cpu)")
        with zipfile.ZipFile(path) as zf:  # members are streamed: the file is never read into memory whole
            self.meta = json.loads(zf.read(ANN_MEMBER))
            with tempfile.TemporaryDirectory() as tmp:
                encoder_file = Path(zf.extract(ANN_ENCODER, tmp))
                from etude.models.export import load_torchscript

                self._encoder = load_torchscript(encoder_file, device)
            with zf.open(ANN_INDEX) as f:
                index: Any = faiss.read_index(faiss.PyCallbackIOReader(f.read))  # type: ignore[attr-defined]
        index.nprobe = int(self.meta["nprobe"])
        self._index = index
        faiss.omp_set_num_threads(torch.get_num_threads())
        super().__init__(int(self.meta["catalog_size"]), int(self.meta["max_session_length"]), device)

    def __call__(self, item_seq: Tensor, item_seq_len: Tensor, k: int) -> Tensor:
        if k < 1 or k > self.catalog_size:
            raise ValueError("k must be in [1, catalog_size]")
        query = self._encoder(item_seq, item_seq_len)  # [B, d]
        _, ids = self._index.search(np.ascontiguousarray(query.numpy(), dtype=np.float32), k)
        out = torch.from_numpy(ids)
        short = (out < 0).any(1)  # the probed lists held fewer than k items: score those rows exactly
        if bool(short.any()):
            out[short] = self._encoder.exact(query[short], k)
        return out


LOADERS: dict[str, Callable[[Path, str], "_Served"]] = {"aot": AotModel, "onnx": OnnxModel, "ann": AnnModel}


def load_file(path: Path, kind: str, uri: str, device: str) -> "_Served":
    """The artifact at `path` (of `kind`, see artifact_kind) loaded from the file; errors name `uri`."""
    try:
        return LOADERS[kind](path, device)
    except UsageError as err:
        raise UsageError(f"{uri}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a damaged artifact: one line naming it
        raise UsageError(f"{uri}: cannot load this {kind} model: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
