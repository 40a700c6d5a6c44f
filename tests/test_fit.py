"""Fitting the workload's power laws: exact normaliser, exponent recovery (directly and from generated logs
through `etude fit`), a planted x_min found by KS distance, and plausible, stable figures on real logs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from etude.cli import main
from etude.errors import UsageError
from etude.loadgen.fit import fit_clicklog, fit_power_law, power_sum, read_clicklog
from etude.loadgen.workload import PowerLaw, workload_laws


@pytest.mark.parametrize("alpha", [0.05, 0.5, 1.0 - 1e-13, 1.0, 1.5, 2.5, 9.5])
@pytest.mark.parametrize(("a", "b"), [(1, 1), (1, 31), (1, 200), (3, 100_000), (40, 1_000), (7, 5)])
def test_power_sum_matches_the_exact_sum(alpha: float, a: int, b: int) -> None:
    exact = float((np.arange(a, b + 1, dtype=float) ** -alpha).sum())
    assert float(power_sum(alpha, a, b)) == pytest.approx(exact, rel=1e-11, abs=0.0)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.6, 2.5])
def test_fit_recovers_the_exponent_of_power_law_draws(alpha: float) -> None:
    draws = PowerLaw(alpha, 1, 500).sample(np.random.default_rng(11), 20_000)
    fit = fit_power_law(draws)
    assert fit.alpha == pytest.approx(alpha, abs=0.1)
    assert fit.x_max == draws.max() and fit.ks < 0.02


def test_fit_finds_a_planted_x_min() -> None:
    rng = np.random.default_rng(12)
    head = rng.integers(1, 20, 5_000)  # flat below 20: not a power law
    tail = PowerLaw(2.2, 20, 5_000).sample(rng, 20_000)
    fit = fit_power_law(np.concatenate([head, tail]))
    assert 18 <= fit.x_min <= 26
    assert fit.alpha == pytest.approx(2.2, abs=0.1)


def test_fit_needs_two_distinct_values() -> None:
    with pytest.raises(UsageError, match="all 5 values are 3"):
        fit_power_law(np.full(5, 3), "session lengths")


@pytest.mark.parametrize(("alpha_length", "alpha_clicks", "catalog_size"), [(1.5, 2.5, 20_000), (2.5, 1.8, 20_000)])
def test_generate_then_fit_recovers_both_exponents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alpha_length: float, alpha_clicks: float, catalog_size: int
) -> None:
    # Per-item click counts in a log are Poisson around N * counts[i] / sum(counts): with N about ten times
    # the sum of the sampled counts they follow the clicks law (scaled), which the fit must see through.
    _, clicks_law = workload_laws(alpha_length=alpha_length, alpha_clicks=alpha_clicks)
    n_clicks = int(10 * catalog_size * clicks_law.mean())
    out = tmp_path / "synthetic.parquet"
    argv = ["generate", "--catalog-size", str(catalog_size), "--clicks", str(n_clicks), "--seed", "13",
            "--alpha-length", str(alpha_length), "--alpha-clicks", str(alpha_clicks), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["fit", str(out)]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["session_length"]["alpha"] == pytest.approx(alpha_length, abs=0.1)
    assert fitted["item_clicks"]["alpha"] == pytest.approx(alpha_clicks, abs=0.1)
    assert fitted["clicks"] >= n_clicks and fitted["items"] <= catalog_size


def independent_counts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Session lengths and per-item click counts, read with the csv module."""
    lengths: dict[str, int] = {}
    clicks: dict[str, int] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            lengths[row["session_id"]] = lengths.get(row["session_id"], 0) + 1
            clicks[row["item_id"]] = clicks.get(row["item_id"], 0) + 1
    return np.array(list(lengths.values())), np.array(list(clicks.values()))


@pytest.mark.parametrize("name", ["rsc15_100k_sessionrec.csv", "diginetica_sample_srgnn.csv"])
def test_fit_on_real_logs_is_plausible_and_stable(shared_data: Path, name: str) -> None:
    path = shared_data / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    fitted = fit_clicklog(str(path))
    lengths, clicks = independent_counts(path)
    assert (fitted["sessions"], fitted["clicks"], fitted["items"]) == (len(lengths), lengths.sum(), len(clicks))
    for key, observed in (("session_length", lengths), ("item_clicks", clicks)):
        fit = fitted[key]
        assert fit["x_max"] == observed.max()
        assert observed.min() <= fit["x_min"] < fit["x_max"]
        assert 1.0 < fit["alpha"] < 6.0, "real session and popularity tails decay faster than 1/x"
        assert fit["ks"] < 0.05
        assert np.count_nonzero(observed >= fit["x_min"]) >= 50
    assert fit_clicklog(str(path)) == fitted  # deterministic


def test_fit_on_halves_of_the_rsc15_log_agrees(shared_data: Path) -> None:
    path = shared_data / "rsc15_100k_sessionrec.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    log = read_clicklog(str(path))
    full = fit_clicklog(str(path))
    in_half = (np.random.default_rng(14).random(log.session_codes.max() + 1) < 0.5)[log.session_codes]
    for rows in (in_half, ~in_half):
        lengths = np.bincount(log.session_codes[rows])
        clicks = np.unique(log.item_ids[rows], return_counts=True)[1]
        assert fit_power_law(lengths[lengths > 0]).alpha == pytest.approx(full["session_length"]["alpha"], abs=0.5)
        assert fit_power_law(clicks).alpha == pytest.approx(full["item_clicks"]["alpha"], abs=0.2)
