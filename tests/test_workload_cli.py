"""`etude generate` and `etude fit` as a user runs them: files appear whole with the promised columns, the
same seed gives the same file, and every mistake is one line on stderr, exit 2, and no file left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from etude.cli import main
from etude.loadgen.workload import PRESETS, SyntheticWorkload


def generate(out: Path, *extra: str, clicks: int = 50_000, catalog_size: int = 1_000) -> int:
    argv = ["generate", "--catalog-size", str(catalog_size), "--clicks", str(clicks), "--out", str(out), *extra]
    return main(argv)


@pytest.mark.parametrize("name", ["clicks.parquet", "clicks.csv"])
def test_generate_writes_whole_sessions_with_the_promised_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    out = tmp_path / name
    assert generate(out, "--preset", "rsc15", "--seed", "3") == 0
    summary = json.loads(capsys.readouterr().out)
    table = pq.read_table(out) if name.endswith(".parquet") else pacsv.read_csv(out)
    assert table.column_names == ["session_id", "item_id", "timestamp"]
    session, item, tick = (table.column(c).to_numpy() for c in table.column_names)
    assert summary["clicks"] == len(item) >= 50_000 and summary["sessions"] == session[-1]
    assert item.min() >= 0 and item.max() < 1_000
    assert np.array_equal(tick, np.arange(1, len(item) + 1))
    # The file holds exactly the sessions the load generator gets for the same seed.
    workload = SyntheticWorkload(1_000, *PRESETS["rsc15"], seed=3)
    for got, want in zip(np.split(item, np.flatnonzero(np.diff(session)) + 1), workload.sessions(), strict=False):
        assert np.array_equal(got, want)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary files left


def test_generate_is_reproducible(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv", "c.csv"):
        assert generate(tmp_path / name, "--alpha-length", "1.5", "--alpha-clicks", "2", "--seed", "5") == 0
    assert generate(tmp_path / "d.csv", "--alpha-length", "1.5", "--alpha-clicks", "2", "--seed", "6") == 0
    a, b, c, d = ((tmp_path / n).read_bytes() for n in ("a.csv", "b.csv", "c.csv", "d.csv"))
    assert a == b == c != d
    assert a.startswith(b"session_id,item_id,timestamp\n1,")


def test_generate_batches_do_not_change_the_file(tmp_path: Path) -> None:
    assert generate(tmp_path / "big.csv", "--preset", "bolcom") == 0
    assert generate(tmp_path / "small.csv", "--preset", "bolcom", "--batch", "999") == 0
    assert (tmp_path / "big.csv").read_bytes() == (tmp_path / "small.csv").read_bytes()


BAD_GENERATE = [
    (["--catalog-size", "0"], "--catalog-size must be >= 1, got 0"),
    (["--clicks", "0"], "--clicks must be >= 1, got 0"),
    (["--clicks", "-3"], "--clicks must be >= 1, got -3"),
    (["--alpha-length", "0", "--alpha-clicks", "2"], "--alpha-length 0.0 is out of range; supported: 0 < alpha <= 10"),
    (["--alpha-length", "2", "--alpha-clicks", "12"], "--alpha-clicks 12.0 is out of range"),
    (["--alpha-length", "nan", "--alpha-clicks", "2"], "--alpha-length nan is out of range"),
    (["--preset", "amazon"], "unknown preset 'amazon'; known presets: bolcom, rsc15"),
    (["--preset", "rsc15", "--alpha-length", "2", "--alpha-clicks", "2"], "not both"),
    (["--alpha-length", "2"], "both --alpha-length and --alpha-clicks"),
    ([], "give a workload"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--out", "{dir}/clicks.json"], "unknown extension '.json'; use .parquet or .csv"),
    (["--out", "{dir}/clicks"], "unknown extension '(none)'"),
    (["--out", "{dir}/missing/clicks.csv"], "does not exist"),
    (["--out", "gs://bucket/clicks.parquet"], "writes a local file"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_GENERATE)
def test_generate_mistakes_are_one_line_exit_2_and_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = {"--catalog-size": "100", "--clicks": "1000", "--out": str(tmp_path / "clicks.parquet")}
    workload = [] if "--preset" in extra or "--alpha-length" in extra or extra == [] else ["--preset", "rsc15"]
    flat = [x.replace("{dir}", str(tmp_path)) for x in extra]
    for key, value in argv.items():
        if key not in flat:
            flat += [key, value]
    assert main(["generate", *flat, *workload]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("etude generate: error: ")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_generate_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = SyntheticWorkload.clicks

    def interrupted(self: SyntheticWorkload, n_clicks: int, batch: int = 1 << 20):  # noqa: ANN202
        chunks = real(self, n_clicks, batch)
        yield next(chunks)
        yield next(chunks)
        raise KeyboardInterrupt

    monkeypatch.setattr(SyntheticWorkload, "clicks", interrupted)
    for name in ("clicks.parquet", "clicks.csv"):
        assert generate(tmp_path / name, "--preset", "bolcom", "--batch", "1000") == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_generate_replaces_an_existing_file_only_when_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clicks.csv"
    out.write_text("old\n")

    def broken(self: SyntheticWorkload, n_clicks: int, batch: int = 1 << 20):  # noqa: ANN202
        yield from ()
        raise OSError("disk full")

    monkeypatch.setattr(SyntheticWorkload, "clicks", broken)
    assert generate(out, "--preset", "bolcom") == 2
    assert "cannot write: disk full" in capsys.readouterr().err  # one line for the user, not a traceback
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["clicks.csv"]


def test_generate_help_states_the_supports() -> None:
    done = subprocess.run([sys.executable, "-m", "etude", "generate", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "on [1, 200]" in text and "on [1, 100000]" in text and "0 < A, B <= 10" in text


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    argv = [sys.executable, "-m", "etude", "generate", "--catalog-size", "0", "--clicks", "10", "--preset", "rsc15",
            "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "etude generate: error: --catalog-size must be >= 1, got 0"
    assert not out.exists()


def test_fit_prints_the_promised_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "log.parquet"
    assert generate(out, "--alpha-length", "2", "--alpha-clicks", "2", clicks=20_000) == 0
    capsys.readouterr()
    assert main(["fit", str(out)]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert set(fitted) == {"session_length", "item_clicks", "sessions", "clicks", "items"}
    for key in ("session_length", "item_clicks"):
        assert set(fitted[key]) == {"alpha", "x_min", "x_max", "ks"}
    assert fitted["clicks"] >= 20_000


BAD_LOGS = [
    ("log.csv", "session_id,when\n1,2\n", "missing column(s) item_id; found: session_id, when"),
    ("log.csv", "session_id,item_id,timestamp\n", "no clicks"),
    ("log.csv", "", "cannot read click log"),
    ("log.parquet", "PAR1 but not really", "cannot read click log"),
    ("log.csv.gz", "not gzip", "cannot read click log"),
    ("log.txt", "session_id,item_id\n1,2\n", "unknown click log format"),
    ("log.csv", "session_id,item_id\n1,2\n1,3\n", "one session only; a workload model needs at least 2 sessions"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_LOGS)
def test_fit_mistakes_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("etude fit: error: ") and message in err


def test_fit_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(tmp_path / "nope.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
