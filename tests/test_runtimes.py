"""The runtimes beyond TorchScript (models/runtimes.py): each exports, loads through `load_model`, meets the
contract, and agrees with fp32 exact scoring (exactly for aot and onnx, within a recall bound for the others)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest
import torch

from etude.cli import main
from etude.errors import UsageError
from etude.models import common, runtimes
from etude.models.common import SessionModel
from etude.models.export import load_model
from etude.models.registry import build_model
from etude.models.runtimes import QuantizedModel, build_quantized, quantize
from etude.serving.model import Predictor, Query

C = 600
K = 21


def _export(tmp_path: Path, model: str, runtime: str, catalog_size: int = C) -> Path:
    out = tmp_path / f"{model}-{runtime}.pt"
    args = ["export", "--model", model, "--catalog-size", str(catalog_size), "--runtime", runtime, "--out", str(out)]
    assert main([*args, "--seed", "3"]) == 0
    return out


def _sessions(n: int = 64, catalog_size: int = C) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    seq = torch.randint(0, catalog_size, (n, 12), generator=gen)
    lens = torch.randint(1, 13, (n,), generator=gen)
    return seq, lens


def _recall(got: torch.Tensor, exact: torch.Tensor) -> float:
    rows = zip(got.tolist(), exact.tolist(), strict=True)
    return sum(len(set(a) & set(b)) for a, b in rows) / exact.numel()


def _answers(path: Path, model: str, catalog_size: int = C) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loaded artifact's top-K, fp32 exact top-K of the same model and seed) on the same sessions."""
    served = load_model(str(path), "cpu", allow_native_code=True)
    assert served.catalog_size == catalog_size and served.max_session_length == 50
    seq, lens = _sessions(catalog_size=catalog_size)
    with torch.inference_mode():
        got = served(seq, lens, K)
        exact = build_model(model, catalog_size, 3)(seq, lens, K)
    assert got.dtype == torch.long and got.shape == (64, K)
    assert all(len(set(row)) == K and all(0 <= i < catalog_size for i in row) for row in got.tolist())
    return got, exact


@pytest.mark.parametrize(
    ("runtime", "model", "min_recall"),
    [("bf16", "sasrec", 0.98), ("int8", "gru4rec", 0.98), ("bf16", "core", 0.98), ("int8", "srgnn", 0.98)],
)
def test_quantized_tables_keep_the_ranking(tmp_path: Path, runtime: str, model: str, min_recall: float) -> None:
    got, exact = _answers(_export(tmp_path, model, runtime), model)
    assert _recall(got, exact) >= min_recall
    assert not torch.equal(got, exact) or runtime == "bf16"  # int8 does change some answers: it is not fp32


@pytest.mark.parametrize("runtime", ["bf16", "int8"])
@pytest.mark.parametrize("model", ["core", "sasrec"])
def test_a_quantized_export_draws_the_weights_of_the_fp32_model(
    monkeypatch: pytest.MonkeyPatch, runtime: str, model: str
) -> None:
    """`etude export` builds a bf16/int8 table as its rows are drawn, never holding the fp32 table: every weight
    and buffer equals quantizing the fp32 model (blocks of 48 rows, a ragged last block, d = 5; CORE's norms)."""
    monkeypatch.setattr(common, "ITEM_INIT_ROWS", 48)
    streamed = build_quantized(model, C, 3, runtime)
    fp32 = build_model(model, C, 3)
    assert isinstance(fp32, SessionModel)
    stored, scale = quantize(fp32.item_embedding.weight, runtime)
    whole = QuantizedModel(fp32, stored, scale, streamed.native)
    got, want = streamed.state_dict(), whole.state_dict()
    assert got.keys() == want.keys()
    assert [k for k in got if not torch.equal(got[k], want[k])] == []


def test_ann_index_is_approximate_but_close(tmp_path: Path) -> None:
    got, exact = _answers(_export(tmp_path, "stamp", "ann", 2000), "stamp", 2000)
    assert _recall(got, exact) >= 0.9  # calibrated at export for 0.95 on its own sample sessions


def test_the_ann_index_is_built_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CORE's index holds its scaled rows; handing them over in blocks (no scaled copy of the table) builds the same
    index as one block."""
    whole = _export(tmp_path, "core", "ann").rename(tmp_path / "whole.pt")
    monkeypatch.setattr(runtimes, "ANN_ADD_ROWS", 128)
    blocks = _export(tmp_path, "core", "ann")
    with zipfile.ZipFile(whole) as a, zipfile.ZipFile(blocks) as b:
        assert a.read(runtimes.ANN_INDEX) == b.read(runtimes.ANN_INDEX)
    got, exact = _answers(blocks, "core")
    assert _recall(got, exact) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize(("runtime", "model"), [("onnx", "stamp"), ("aot", "stamp"), ("aot", "lightsans")])
def test_compiled_runtimes_are_exact(tmp_path: Path, runtime: str, model: str) -> None:
    """LightSANs: its softmax over positions was rewritten by Inductor into attention over the last dim."""
    path = _export(tmp_path, model, runtime)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing left beside it (ONNX's weights file)
    got, exact = _answers(path, model)
    assert torch.equal(got, exact)
    if runtime == "aot":  # its native code runs when loaded: only with the permission the export step's models get
        with pytest.raises(UsageError, match="AOTInductor package.*--allow-native-code"):
            load_model(str(path))
    served = load_model(str(path), allow_native_code=True)  # a batch of one (exported for B >= 2), a large k
    if runtime == "aot":  # the weights are served from a map of the artifact, not copied out of a shared library
        assert _mapped_bytes(path) >= path.stat().st_size
    one_seq, one_len = exact[:1, :5], torch.tensor([5])
    assert torch.equal(served(one_seq, one_len, C), build_model(model, C, 3)(one_seq, one_len, C))
    seq, lens = _sessions()  # 64 sessions are two ONNX Runtime runs of 32; 33 end with a run of one
    assert torch.equal(served(seq[:33], lens[:33], K), exact[:33])
    predictor = Predictor(served)  # the server's batching path, unchanged for every runtime
    answers = predictor.predict([Query([1, 2, 3], 5), Query([7], 21), Query(list(range(50)), 2)])
    assert [len(a) for a in answers] == [5, 21, 2]


def _mapped_bytes(path: Path) -> int:
    """How many bytes of this process's address space map `path` (from /proc/self/maps)."""
    total = 0
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            total += end - start
    return total


@pytest.mark.slow
def test_an_aot_package_that_embeds_its_weights_loads(tmp_path: Path) -> None:
    """A `.pt2` compiled by torch itself, its weights inside its shared library (as a user's own package may be)."""
    model = runtimes.check_supported(build_model("stamp", C, 3).eval().requires_grad_(False), "stamp", "aot")
    program, _, _ = runtimes._exported_program(model)
    path = tmp_path / "theirs.pt2"
    metadata = runtimes.contract_metadata(model)
    torch._inductor.aoti_compile_and_package(
        program, package_path=str(path), inductor_configs={"aot_inductor.metadata": metadata}
    )
    got, exact = _answers(path, "stamp")
    assert torch.equal(got, exact)


def test_the_server_predicts_with_an_ann_model(tmp_path: Path) -> None:
    from etude.serving.model import load_model as serve_load

    predictor = Predictor(serve_load(str(_export(tmp_path, "narm", "ann")), "cpu"))
    answers = predictor.predict([Query([1, 2, 3], 5), Query([7], 21)])
    assert [len(a) for a in answers] == [5, 21] and all(len(set(a)) == len(a) for a in answers)


@pytest.mark.parametrize(
    ("model", "message"),
    [("repeatnet", "repeatnet cannot run on runtime 'bf16'"), ("noop", "noop cannot run on runtime 'bf16'")],
)
def test_models_a_runtime_cannot_hold_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, message: str
) -> None:
    out = tmp_path / "m.pt"
    assert main(["export", "--model", model, "--catalog-size", "50", "--runtime", "bf16", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "cannot write" not in err  # the reason, not a write failure
    assert not out.exists() and not list(tmp_path.iterdir())  # no temporary file left either


def test_unknown_runtime_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "export",
                "--model",
                "stamp",
                "--catalog-size",
                "50",
                "--runtime",
                "tensorrt",
                "--out",
                str(tmp_path / "m.pt"),
            ]
        )
    assert exit_info.value.code == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_a_damaged_ann_artifact_is_refused(tmp_path: Path) -> None:
    path = _export(tmp_path, "stamp", "ann")
    data = path.read_bytes()
    index_at = data.find(b"etude-ann/index.faiss")
    path.write_bytes(data[: index_at + 200])  # cut inside the index
    with pytest.raises(UsageError, match="not a TorchScript model|cannot load this ann model"):
        load_model(str(path))


def test_microbench_reports_each_runtimes_recall(tmp_path: Path) -> None:
    args = [
        "microbench",
        "--models",
        "gru4rec,repeatnet",
        "--catalog-sizes",
        "500",
        "--runtimes",
        "jit,int8",
        "--requests",
        "20",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    rows = {(r["model"], r["runtime"]): float(r["recall"]) for r in csv.DictReader(open(tmp_path / "microbench.csv"))}
    assert set(rows) == {("gru4rec", "jit"), ("gru4rec", "int8"), ("repeatnet", "jit")}  # repeatnet has no int8
    assert rows[("gru4rec", "jit")] == 1.0 and rows[("repeatnet", "jit")] == 1.0
    assert 0.9 <= rows[("gru4rec", "int8")] <= 1.0
