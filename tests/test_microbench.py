"""`etude microbench`: a tiny run writes the CSV, plot and bandwidth figures; bad input is refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from etude.cli import main
from etude.models.microbench import synthetic_sessions
from etude.results import MICROBENCH_COLUMNS


def test_tiny_run_writes_csv_plot_and_bound(tmp_path: Path) -> None:
    out = tmp_path / "mb"
    assert (
        main(
            [
                "microbench",
                "--models",
                "gru4rec,noop",
                "--catalog-sizes",
                "100,1000",
                "--runtimes",
                "eager,jit",
                "--device",
                "cpu",
                "--requests",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with (out / "microbench.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == MICROBENCH_COLUMNS
        rows = list(reader)
    assert {(r["model"], r["runtime"], r["catalog_size"]) for r in rows} == {
        (m, r, c) for m in ("gru4rec", "noop") for r in ("eager", "jit") for c in ("100", "1000")
    }
    for r in rows:
        assert r["device"] == "cpu" and r["requests"] == "5"
        assert 0 < float(r["p50_ms"]) <= float(r["p90_ms"])
    assert {r["embedding_dim"] for r in rows if r["catalog_size"] == "1000"} == {"6"}
    assert (out / "microbench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "microbench.json").read_text())
    assert meta["read_bandwidth_gbs"] > 0 and set(meta["bound_ms"]) == {"100", "1000"}


def test_python_runtime_is_measured_too(tmp_path: Path) -> None:
    assert (
        main(
            [
                "microbench",
                "--models",
                "stamp",
                "--catalog-sizes",
                "100",
                "--runtimes",
                "python,jit",
                "--requests",
                "3",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((tmp_path / "microbench.csv").open()))
    assert [r["runtime"] for r in rows] == ["python", "jit"]


def test_sessions_follow_the_workload_and_keep_50_items() -> None:
    sessions = synthetic_sessions(1000, 200, seed=1)
    assert len(sessions) == 200
    assert all(1 <= len(s) <= 50 and s.min() >= 0 and s.max() < 1000 for s in sessions)
    assert len({len(s) for s in sessions}) > 3  # lengths vary
    assert [s.tolist() for s in synthetic_sessions(1000, 5, seed=1)] == [s.tolist() for s in sessions[:5]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "gru4rec,bert4rec"], "unknown model 'bert4rec'"),
        (["--catalog-sizes", "100,x"], "comma-separated integers"),
        (["--catalog-sizes", "0"], ">= 1"),
        (["--runtimes", "tensorrt"], "unknown runtime 'tensorrt'"),
        (["--device", "tpu"], "--device must be cpu"),
        (["--requests", "0"], "--requests must be >= 1"),
    ],
)
def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["microbench", *args, "--out", str(tmp_path / "mb")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "mb").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["microbench", "--device", "cuda", "--catalog-sizes", "100", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_run_on_cuda(tmp_path: Path) -> None:
    assert (
        main(
            [
                "microbench",
                "--models",
                "srgnn,repeatnet",
                "--catalog-sizes",
                "1000",
                "--device",
                "cuda",
                "--requests",
                "5",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
