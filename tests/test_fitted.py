"""The fitted workload model: a click log's statistics in, the same statistics out (for both shared logs and for
logs drawn from known non-power-law laws), the catalog scaled to other sizes by item quantile, the urn and the
shuffle it rests on, the file (versioned, statistics only, checked), and bad input as one-line errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from etude.cli import main
from etude.errors import UsageError
from etude.loadgen.compare import ks_distance, shape, side_by_side, synthetic_marginals
from etude.loadgen.fit import ClickLog, fit_geometric, read_clicklog
from etude.loadgen.fitted import MAX_BODY, VERSION, WorkloadModel, fit_marginal, fit_workload, read_workload
from etude.loadgen.workload import ItemUrn, Shuffle, SyntheticWorkload, TabulatedLaw

SHARED_LOGS = ["rsc15_100k_sessionrec.csv", "diginetica_sample_srgnn.csv"]


def assert_reproduces(real: dict[str, float | int], synthetic: dict[str, float | int], ks: float) -> None:
    """The fidelity targets: session lengths (KS, mean, p90) and popularity (top shares, items clicked)."""
    assert ks <= 0.03
    assert synthetic["mean_length"] == pytest.approx(real["mean_length"], rel=0.05)
    assert abs(synthetic["p90_length"] - real["p90_length"]) <= max(1, 0.1 * real["p90_length"])
    for key in ("top_1pct_share", "top_10pct_share", "top_50pct_share"):
        assert synthetic[key] == pytest.approx(real[key], abs=0.03), key
    assert synthetic["items_clicked"] == pytest.approx(real["items_clicked"], rel=0.05)


def reproduce(log: ClickLog, seed: int = 42) -> dict[str, object]:
    model = fit_workload(log)
    real = (log.session_lengths(), log.item_clicks())
    return side_by_side(real, synthetic_marginals(model.laws(), len(log), model.items, seed), model.items)


@pytest.mark.parametrize("name", SHARED_LOGS)
def test_a_shared_log_is_reproduced(shared_data: Path, name: str) -> None:
    path = shared_data / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    for seed in (1, 2):
        got = reproduce(read_clicklog(str(path)), seed)
        assert_reproduces(got["real"], got["synthetic"], got["session_length_ks"])  # type: ignore[arg-type]


def known_law_log(lengths: str, rng: np.random.Generator, sessions: int = 6_000) -> ClickLog:
    """A log nobody tuned for: geometric or lognormal session lengths, Zipf-Mandelbrot popularity over 30,000
    items, p(rank) proportional to (rank + 8)^-1.15."""
    if lengths == "geometric":
        per_session = rng.geometric(0.28, sessions)
    else:
        per_session = np.ceil(rng.lognormal(1.1, 0.75, sessions)).astype(np.int64)
    ranks = np.arange(1, 30_001)
    popularity = (ranks + 8.0) ** -1.15
    items = rng.choice(len(ranks), size=int(per_session.sum()), p=popularity / popularity.sum())
    codes = np.repeat(np.arange(sessions), per_session)
    return ClickLog(session_codes=codes, item_ids=items, timestamps=None)


@pytest.mark.parametrize("lengths", ["geometric", "lognormal"])
def test_logs_from_known_non_power_laws_are_reproduced(lengths: str) -> None:
    log = known_law_log(lengths, np.random.default_rng(21))
    got = reproduce(log)
    assert_reproduces(got["real"], got["synthetic"], got["session_length_ks"])  # type: ignore[arg-type]


def test_the_geometric_fit_recovers_its_decay() -> None:
    draws = np.random.default_rng(22).geometric(0.2, 30_000)  # P(k) proportional to 0.8^k: decay -ln 0.8
    fit = fit_geometric(draws)
    assert fit.decay == pytest.approx(-np.log(0.8), rel=0.05) and fit.ks < 0.02


@pytest.mark.parametrize("law", ["geometric", "power_law", "lognormal"])
def test_the_whole_range_model_is_close_to_the_data(law: str) -> None:
    from etude.loadgen.workload import PowerLaw

    rng = np.random.default_rng(23)
    draws = {"geometric": lambda: rng.geometric(0.2, 30_000),
             "power_law": lambda: PowerLaw(2.3, 1, 5_000).sample(rng, 30_000),
             "lognormal": lambda: np.ceil(rng.lognormal(2.0, 1.0, 30_000)).astype(np.int64)}[law]()  # fmt: skip
    marginal = fit_marginal(draws, "values")
    assert marginal.tail is not None and len(marginal.body) <= MAX_BODY
    model_cdf = marginal.law(draws.size).cdf()
    empirical = np.cumsum(np.bincount(draws, minlength=len(model_cdf) + 1)[1:]) / draws.size
    assert np.abs(model_cdf - empirical[: len(model_cdf)]).max() < 0.01
    assert marginal.law(draws.size).mean() == pytest.approx(draws.mean(), rel=0.03)


def test_the_catalog_keeps_the_share_of_clicks_curve_at_other_sizes() -> None:
    log = known_law_log("geometric", np.random.default_rng(24))
    model = fit_workload(log)
    real = shape(log.session_lengths(), log.item_clicks(), model.items)
    for catalog_size in (model.items // 4, 10 * model.items):
        _, clicks = model.laws()
        counts = np.repeat(clicks.support(), clicks.quantile_histogram(catalog_size))[::-1]
        scaled = shape(np.array([1, 2]), counts, catalog_size)  # the catalog's own counts: its curve exactly
        for key in ("top_1pct_share", "top_10pct_share", "top_50pct_share"):
            assert scaled[key] == pytest.approx(real[key], abs=0.03), (catalog_size, key)
        # and a stream of clicks follows it
        synthetic = synthetic_marginals(model.laws(), 4 * len(log), catalog_size, seed=3)
        drawn = shape(*synthetic, catalog_size)
        assert drawn["top_10pct_share"] == pytest.approx(real["top_10pct_share"], abs=0.03)


def test_at_the_logs_item_count_the_counts_per_item_are_the_logs() -> None:
    log = known_law_log("lognormal", np.random.default_rng(25))
    model = fit_workload(log)
    _, clicks = model.laws()
    body = len(model.item_clicks.body)
    real = np.bincount(log.item_clicks(), minlength=body + 1)[1 : body + 1]
    assert np.abs(clicks.quantile_histogram(model.items)[:body] - real).max() <= 1  # rounding only


@pytest.mark.parametrize("size", [1, 2, 3, 17, 1000, 65_537])
def test_a_shuffle_visits_every_position_once_per_epoch(size: int) -> None:
    take = Shuffle(size).stream(np.random.default_rng(26))
    first, second = take(size), take(size)
    assert sorted(first.tolist()) == list(range(size)) == sorted(second.tolist())
    if size >= 1000:
        assert not np.array_equal(first, second)  # a new permutation per epoch
        assert abs(np.corrcoef(np.arange(size), first.astype(float))[0, 1]) < 0.05  # no order kept


def test_an_urn_epoch_holds_every_item_exactly_its_count_times() -> None:
    support = np.arange(1, 6)
    per_value = np.array([40, 30, 20, 5, 5])  # 100 items with 1..5 clicks
    urn = ItemUrn(support, per_value, np.random.default_rng(27))
    take = urn.sampler(np.random.default_rng(28))
    epoch = int((support * per_value).sum())
    drawn = np.bincount(take(epoch), minlength=100)
    assert np.array_equal(np.sort(drawn), np.repeat(support, per_value))
    assert np.array_equal(np.bincount(take(epoch), minlength=100), drawn)  # the next epoch too


def test_fitted_streams_are_reproducible_and_restart_from_the_beginning() -> None:
    model = fit_workload(known_law_log("geometric", np.random.default_rng(29), sessions=500))
    workload = SyntheticWorkload(model.items, *model.laws(), seed=5)
    first = [s.tolist() for _, s in zip(range(200), workload.sessions(), strict=False)]
    again = [s.tolist() for _, s in zip(range(200), workload.sessions(), strict=False)]
    other = SyntheticWorkload(model.items, *model.laws(), seed=5)
    assert first == again == [s.tolist() for _, s in zip(range(200), other.sessions(), strict=False)]


def test_tabulated_law_quantiles_sum_to_n_and_follow_the_law() -> None:
    law = TabulatedLaw(np.array([0.5, 0.25, 0.125, 0.125]), epoch=8)
    assert law.quantile_histogram(8).tolist() == [4, 2, 1, 1]
    assert law.quantile_histogram(1_000_003).sum() == 1_000_003
    take = law.sampler(np.random.default_rng(30))
    assert sorted(take(8).tolist()) == [1, 1, 1, 1, 2, 2, 3, 4]


# ---- the file -----------------------------------------------------------------------------------------------------


def write_log(path: Path, rows: Sequence[tuple[object, object]], header: str = "session_id,item_id") -> Path:
    path.write_text(header + "\n" + "".join(f"{s},{i}\n" for s, i in rows))
    return path


def test_the_file_is_small_versioned_statistics_only_and_round_trips(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shared_data / SHARED_LOGS[0]
    if not path.is_file():
        pytest.skip(f"{path} not found")
    out = tmp_path / "workload.json"
    assert main(["fit", str(path), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"session_length", "item_clicks", "sessions", "clicks", "items"}  # the summary as before
    doc = json.loads(out.read_text())
    assert doc["version"] == VERSION and set(doc) == {"version", "clicks", "sessions", "items", "session_length",
                                                       "item_clicks"}  # fmt: skip
    assert (doc["clicks"], doc["sessions"], doc["items"]) == (83_846, 21_210, 2_933)
    assert out.stat().st_size < 4 * 1024
    for key in ("session_length", "item_clicks"):
        assert set(doc[key]) == {"body", "tail"} and len(doc[key]["body"]) <= MAX_BODY
    assert read_workload(str(out)) == WorkloadModel.model_validate(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "workload model version 2; this etude reads version 1"),
        ({"version": None}, "workload model version None"),
        ({"clicks": -1}, "clicks"),
        ({"item_clicks": {"body": [0.5], "tail": None}}, "sum to 0.5"),
        ({"sessions_ids": [1, 2]}, "sessions_ids"),
    ],
)
def test_a_bad_workload_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], message: str
) -> None:
    model = fit_workload(known_law_log("geometric", np.random.default_rng(31), sessions=300))
    path = tmp_path / "workload.json"
    path.write_text(json.dumps({**model.model_dump(), **change}))
    out = tmp_path / "clicks.csv"
    argv = ["generate", "--catalog-size", "100", "--clicks", "100", "--workload", str(path), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(path) in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a workload model"),
        ("[1, 2]", "no version field"),
    ],
)
def test_a_file_that_is_no_workload_model_is_a_one_line_error(content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "workload.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        read_workload(str(path))
    with pytest.raises(UsageError, match="no such file"):
        read_workload(str(tmp_path / "missing.json"))


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([(1, 10), (2, 11)], "session,item_id", "missing column(s) session_id"),
        ([(1, 10), (2, 11)], "session_id,item", "missing column(s) item_id"),
        ([], "session_id,item_id", "no clicks"),
        ([(1, 10), (1, 11), (1, 12)], "session_id,item_id", "one session only"),
    ],
)
def test_bad_click_logs_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[tuple[object, object]], header: str, message: str
) -> None:
    log = write_log(tmp_path / "clicks.csv", rows, header)
    out = tmp_path / "workload.json"
    assert main(["fit", str(log), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_generate_from_a_fitted_workload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = known_law_log("lognormal", np.random.default_rng(32), sessions=2_000)
    model = fit_workload(log)
    path = tmp_path / "workload.json"
    path.write_text(model.model_dump_json())
    out = tmp_path / "clicks.parquet"
    argv = ["generate", "--catalog-size", str(model.items), "--clicks", str(len(log)), "--workload", str(path),
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    generated = read_clicklog(str(out))
    assert ks_distance(generated.session_lengths(), log.session_lengths()) <= 0.03
    assert main([*argv[:-2], "--preset", "bolcom", "--out", str(tmp_path / "x.csv")]) == 2
    assert "give one workload, not both --workload and --preset" in capsys.readouterr().err


def test_fit_compare_prints_both_sides_and_writes_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(33)
    rows = [(s, int(rng.zipf(1.8)) % 500) for s in range(400) for _ in range(int(rng.geometric(0.35)))]
    log = write_log(tmp_path / "clicks.csv", rows)
    assert main(["fit", str(log), "--compare", "--out-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    compare = printed["compare"]
    for side in ("real", "synthetic"):
        assert {"mean_length", "median_length", "p90_length", "p99_length", "max_length", "top_1pct_share",
                "top_10pct_share", "top_50pct_share", "items_clicked"} <= set(compare[side])  # fmt: skip
    assert compare["real"]["clicks"] == len(rows) and compare["synthetic"]["clicks"] >= len(rows)
    assert 0 <= compare["session_length_ks"] <= 1
    assert json.loads((tmp_path / "compare.json").read_text()) == compare
    assert (tmp_path / "ccdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["fit", str(log), "--compare", "--out-dir", str(tmp_path / "nope")]) == 2


def test_a_fitted_workload_from_gcs(gcs_bucket: str) -> None:
    from etude import storage

    model = fit_workload(known_law_log("geometric", np.random.default_rng(34), sessions=300))
    uri = f"gs://{gcs_bucket}/workloads/w.json"
    storage.write_bytes(uri, model.model_dump_json().encode())
    assert read_workload(uri) == model
