"""`etude export` and `etude.models.export.load_model`: the serialized-model contract, gs://, bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from etude import storage
from etude.cli import main
from etude.errors import UsageError
from etude.models.export import load_model

C = 200


@pytest.mark.parametrize("runtime", ["eager", "jit"])
def test_export_then_load_meets_the_contract(tmp_path: Path, runtime: str) -> None:
    out = tmp_path / "models" / f"narm-{runtime}.pt"
    assert (
        main(
            [
                "export",
                "--model",
                "narm",
                "--catalog-size",
                str(C),
                "--runtime",
                runtime,
                "--seed",
                "7",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    model = load_model(str(out), "cpu")
    assert model.catalog_size == C and model.max_session_length == 50
    assert torch.jit.load(str(out)).catalog_size == C  # readable with plain torch too
    ids = model(torch.tensor([[1, 2, 3, 0], [5, 0, 0, 0]]), torch.tensor([3, 1]), 21)
    assert ids.shape == (2, 21) and ids.dtype == torch.long
    assert all(len(set(row)) == 21 and all(0 <= i < C for i in row) for row in ids.tolist())
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary files left


def test_same_seed_same_model_and_runtimes_agree(tmp_path: Path) -> None:
    for name, runtime, seed in (("a", "eager", 1), ("b", "jit", 1), ("c", "jit", 2)):
        main(
            [
                "export",
                "--model",
                "sasrec",
                "--catalog-size",
                str(C),
                "--runtime",
                runtime,
                "--seed",
                str(seed),
                "--out",
                str(tmp_path / f"{name}.pt"),
            ]
        )
    seq, lens = torch.randint(0, C, (4, 9)), torch.tensor([9, 4, 1, 7])
    a, b, c = (load_model(str(tmp_path / f"{n}.pt"))(seq, lens, 10) for n in "abc")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_a_cuda_artifact_is_frozen_but_not_optimised_for_this_cpu_build(tmp_path: Path) -> None:
    """The export runs on the CPU; `optimize_for_inference` would bake this CPU build's choices into what a GPU
    server loads, so the cuda artifact stops at freezing. Both answer alike."""
    from etude.models.export import CONTRACT_ATTRS, to_torchscript
    from etude.models.registry import build_model

    cuda = to_torchscript(build_model("gru4rec", C, 7), "jit", "cuda")
    frozen = torch.jit.freeze(torch.jit.script(build_model("gru4rec", C, 7).eval()),
                              preserved_attrs=list(CONTRACT_ATTRS))
    cpu = to_torchscript(build_model("gru4rec", C, 7), "jit", "cpu")

    def ops(module: torch.jit.ScriptModule) -> list[str]:
        return [node.kind() for node in module.graph.nodes()]

    assert ops(cuda) == ops(frozen)
    assert ops(cpu) != ops(cuda)  # the CPU passes did change something here (linear -> matmul)
    paths = {}
    for device in ("cpu", "cuda"):
        paths[device] = tmp_path / f"gru4rec-{device}.pt"
        assert main(["export", "--model", "gru4rec", "--catalog-size", str(C), "--runtime", "jit", "--device",
                     device, "--seed", "7", "--out", str(paths[device])]) == 0
    seq = torch.tensor([[1, 2, 3], [4, 0, 0]])
    lengths = torch.tensor([3, 1])
    answers = {d: load_model(str(p), "cpu")(seq, lengths, 5) for d, p in paths.items()}
    assert torch.equal(answers["cpu"], answers["cuda"])
    if torch.cuda.is_available():
        on_gpu = load_model(str(paths["cuda"]), "cuda")
        assert torch.equal(on_gpu(seq.cuda(), lengths.cuda(), 5).cpu(), answers["cpu"])


def test_if_missing_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(b"already here")
    assert main(["export", "--model", "stamp", "--catalog-size", "50", "--out", str(out), "--if-missing"]) == 0
    assert out.read_bytes() == b"already here"
    assert main(["export", "--model", "stamp", "--catalog-size", "50", "--out", str(out)]) == 0
    assert load_model(str(out)).catalog_size == 50


def test_export_to_gcs_and_load_from_it(gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/models/gru4rec-c100-jit.pt"
    assert main(["export", "--model", "gru4rec", "--catalog-size", "100", "--out", uri, "--if-missing"]) == 0
    assert storage.exists(uri)
    assert load_model(uri).catalog_size == 100
    assert main(["export", "--model", "gru4rec", "--catalog-size", "100", "--out", uri, "--if-missing"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gru5rec", "--catalog-size", "10"], "unknown model 'gru5rec'; known models: core, gcsan"),
        (["--model", "sasrec", "--catalog-size", "0"], "--catalog-size must be >= 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "m.pt"
    assert main(["export", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unwritable_output_is_refused_without_a_partial_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["export", "--model", "stamp", "--catalog-size", "10", "--out", str(blocker / "m.pt")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["export", "--model", "stamp", "--catalog-size", "10", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_cli_error_has_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "etude",
            "export",
            "--model",
            "nope",
            "--catalog-size",
            "5",
            "--out",
            str(tmp_path / "m.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "known models" in proc.stderr and "Traceback" not in proc.stderr


class WrongDtype(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.catalog_size = 10
        self.max_session_length = 50

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, k: int) -> torch.Tensor:
        return torch.zeros(item_seq.size(0), k)


class OutOfRange(WrongDtype):
    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, k: int) -> torch.Tensor:
        return torch.arange(k).unsqueeze(0).expand(item_seq.size(0), k) + 9


class Repeats(WrongDtype):
    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, k: int) -> torch.Tensor:
        return torch.zeros(item_seq.size(0), k, dtype=torch.long)


class WrongSignature(WrongDtype):
    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        return item_seq


class NoCatalogSize(torch.nn.Module):
    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, k: int) -> torch.Tensor:
        return torch.arange(k).unsqueeze(0).expand(item_seq.size(0), k)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (WrongDtype(), "must return an int64 tensor of shape"),
        (OutOfRange(), "outside [0, catalog_size=10)"),
        (Repeats(), "repeated item ids"),
        (WrongSignature(), "failed"),
        (NoCatalogSize(), "int attribute `catalog_size`"),
    ],
)
def test_a_model_that_breaks_the_contract_is_refused_on_load(
    tmp_path: Path, module: torch.nn.Module, message: str
) -> None:
    path = tmp_path / "user.pt"
    torch.jit.script(module).save(str(path))
    with pytest.raises(UsageError, match=re.escape(message)):
        load_model(str(path))


def test_not_a_model_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a zip")
    with pytest.raises(UsageError, match="is not a TorchScript model"):
        load_model(str(junk))
    with pytest.raises(UsageError, match="cannot read"):
        load_model(str(tmp_path / "absent.pt"))
    eager_pickle = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), str(eager_pickle))
    with pytest.raises(UsageError, match="is not a TorchScript model"):
        load_model(str(eager_pickle))


def test_the_readme_wrapping_example_meets_the_contract(tmp_path: Path) -> None:
    """The ~10-line example of wrapping one's own trained model (README, models section) loads and serves."""
    catalog = 100

    class Trained(torch.nn.Module):  # a stand-in for a user's model: scores [B, C] for ids shifted by one
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(catalog + 1, 8, padding_idx=0)

        def forward(self, seq: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
            return self.emb(seq).sum(1) @ self.emb.weight[1:].t()

    class Served(torch.nn.Module):
        def __init__(self, trained: torch.nn.Module, catalog_size: int) -> None:
            super().__init__()
            self.trained = trained.eval()
            self.catalog_size = catalog_size
            self.max_session_length = 50

        def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, k: int) -> torch.Tensor:
            mask = torch.arange(item_seq.size(1)).unsqueeze(0) < item_seq_len.unsqueeze(1)
            scores = self.trained(torch.where(mask, item_seq + 1, 0), item_seq_len)  # [B, C]
            return torch.topk(scores, k, dim=1).indices  # [B, k], best first

    path = tmp_path / "my-model.pt"
    torch.jit.script(Served(Trained(), catalog_size=catalog)).save(str(path))
    model = load_model(str(path))
    assert model.catalog_size == catalog
    assert model(torch.tensor([[1, 2, 0]]), torch.tensor([2]), 5).shape == (1, 5)
