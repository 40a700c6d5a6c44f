"""Synthetic workload (Algorithm 1): the laws match their exponents and the published fits (docs/design.md),
items follow the sampled click counts, the streams are lazy, whole-session and reproducible, and a real log
replays in order."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from etude.errors import UsageError
from etude.loadgen.workload import (
    ITEM_CLICKS_SUPPORT,
    PRESETS,
    SESSION_LENGTH_SUPPORT,
    BinnedPowerLaw,
    PowerLaw,
    SyntheticWorkload,
    clicklog_sessions,
    workload_laws,
)

# The fits in docs/design.md ("Workload presets"): scipy.stats.powerlaw(a, loc, scale), (session length, clicks).
PUBLISHED_FITS = {
    "bolcom": ((0.07004, 2, 277), (0.04069, 1, 2335)),
    "rsc15": ((0.10325, 1, 199), (0.07981, 1, 147418)),
}


def chi_square_p(observed: np.ndarray, expected_p: np.ndarray) -> float:
    """p-value of a chi-square goodness-of-fit test, merging the sparse tail into one bin (expected >= 5)."""
    expected = expected_p * observed.sum()
    keep = np.flatnonzero(expected >= 5)
    last = keep[-1]
    obs = np.append(observed[:last], observed[last:].sum())
    exp = np.append(expected[:last], expected[last:].sum())
    mask = exp >= 5
    obs, exp = np.append(obs[mask], obs[~mask].sum()), np.append(exp[mask], exp[~mask].sum())
    if obs[-1] == 0 and exp[-1] < 5:
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 1.7, 3.0])
def test_power_law_samples_follow_x_to_the_minus_alpha(alpha: float) -> None:
    law = PowerLaw(alpha, 1, 200)
    x = np.arange(1, 201)
    assert np.allclose(law.pmf(), x**-alpha / (x**-alpha).sum(), rtol=1e-12)
    draws = law.sample(np.random.default_rng(1), 200_000)
    assert draws.dtype == np.int64 and draws.min() >= 1 and draws.max() <= 200
    assert chi_square_p(np.bincount(draws - 1, minlength=200), law.pmf()) > 1e-3


@pytest.mark.parametrize("preset", ["bolcom", "rsc15"])
def test_presets_reproduce_the_scipy_fits_of_design_md(preset: str) -> None:
    rng = np.random.default_rng(2)
    n = 200_000
    for law, (a, loc, scale) in zip(PRESETS[preset], PUBLISHED_FITS[preset], strict=True):
        assert isinstance(law, BinnedPowerLaw) and law.scipy_params == pytest.approx((a, loc, scale))
        fitted = stats.powerlaw(a, loc=loc, scale=scale)
        k = law.support()
        # The law is floor(X) for X ~ the fit: P(K <= k) = P(X < k + 1), exactly ...
        assert np.allclose(law.cdf(), fitted.cdf(k + 1), atol=1e-12)
        # ... and so are its draws: KS distance to the fit's CDF on the integers below the 1% critical value.
        draws = law.sample(rng, n)
        empirical = np.cumsum(np.bincount(draws - loc, minlength=len(k))) / n
        assert np.abs(empirical - fitted.cdf(k + 1)).max() < 1.63 / math.sqrt(n)
        # A continuous draw of the fit, rounded down, has the same mean.
        assert draws.mean() == pytest.approx(np.floor(fitted.rvs(size=n, random_state=rng)).mean(), rel=0.05)


def test_preset_tail_decays_with_exponent_one_minus_a() -> None:
    session_length, _ = PRESETS["bolcom"]
    pmf, k = session_length.pmf(), session_length.support()
    far = k >= 50
    slope = np.polyfit(np.log(k[far] - session_length.x_min + 0.5), np.log(pmf[far]), 1)[0]
    assert slope == pytest.approx(-session_length.alpha, abs=0.01)
    assert session_length.alpha == pytest.approx(1 - 0.07004)


def test_exponent_mode_uses_the_documented_supports() -> None:
    length, clicks = workload_laws(alpha_length=2.0, alpha_clicks=1.5)
    assert (length.alpha, length.x_min, length.x_max) == (2.0, *SESSION_LENGTH_SUPPORT)
    assert (clicks.alpha, clicks.x_min, clicks.x_max) == (1.5, *ITEM_CLICKS_SUPPORT)
    assert workload_laws("rsc15") == PRESETS["rsc15"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give a workload"),
        ({"preset": "amazon"}, "unknown preset 'amazon'; known presets: bolcom, rsc15"),
        ({"preset": "rsc15", "alpha_length": 2.0, "alpha_clicks": 2.0}, "not both"),
        ({"alpha_length": 2.0}, "both --alpha-length and --alpha-clicks"),
        ({"alpha_length": 0.0, "alpha_clicks": 2.0}, "--alpha-length 0.0 is out of range"),
        ({"alpha_length": 2.0, "alpha_clicks": -1.0}, "--alpha-clicks -1.0 is out of range"),
        ({"alpha_length": 10.5, "alpha_clicks": 2.0}, "supported: 0 < alpha <= 10"),
        ({"alpha_length": math.nan, "alpha_clicks": 2.0}, "out of range"),
    ],
)
def test_bad_workload_is_a_usage_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        workload_laws(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [(0.0, 1, 10), (11.0, 1, 10), (1.0, 0, 10), (1.0, 5, 4), (math.inf, 1, 2)])
def test_power_law_rejects_what_it_cannot_sample(args: tuple[float, int, int]) -> None:
    with pytest.raises(UsageError):
        PowerLaw(*args)


def test_sampled_click_counts_follow_the_clicks_law() -> None:
    law = PowerLaw(1.8, 1, 1000)
    workload = SyntheticWorkload(200_000, PowerLaw(2.0, 1, 50), law, seed=3)
    counts = workload.items.counts()
    assert counts.shape == (200_000,) and counts.min() >= 1 and counts.max() <= 1000
    assert chi_square_p(np.bincount(counts - 1, minlength=1000), law.pmf()) > 1e-3
    # Popularity is not tied to the item id: the counts of the lower and upper half of the ids look alike.
    assert stats.ks_2samp(counts[:100_000], counts[100_000:]).pvalue > 1e-3


def test_items_are_drawn_in_proportion_to_their_sampled_counts() -> None:
    workload = SyntheticWorkload(2_000, PowerLaw(1.5, 1, 20), PowerLaw(1.2, 1, 5_000), seed=4)
    counts = workload.items.counts()
    draws = workload.items.sample(np.random.default_rng(5), 3_000_000)
    assert draws.dtype == np.int64 and draws.min() >= 0 and draws.max() < 2_000
    observed = np.bincount(draws, minlength=2_000)
    expected = counts / counts.sum() * len(draws)
    assert float(stats.chisquare(observed, expected).pvalue) > 1e-3
    # The most-sampled item is the one with the largest count (its share is far above its neighbours').
    assert observed.argmax() == counts.argmax()


@pytest.mark.parametrize("preset", ["bolcom", "rsc15"])
def test_session_lengths_in_the_stream_follow_the_length_law(preset: str) -> None:
    length, clicks = PRESETS[preset]
    workload = SyntheticWorkload(10_000, length, clicks, seed=6)
    lengths = np.array([len(s) for s in itertools.islice(workload.sessions(), 50_000)])
    observed = np.bincount(lengths - length.x_min, minlength=length.x_max - length.x_min + 1)
    assert chi_square_p(observed, length.pmf()) > 1e-3


def test_clicks_are_whole_sessions_numbered_from_one() -> None:
    workload = SyntheticWorkload(1_000, PowerLaw(1.2, 1, 200), PowerLaw(1.5, 1, 1_000), seed=7)
    chunks = list(workload.clicks(100_000, batch=4_096))
    assert all(len(c[0]) <= 4_096 for c in chunks)
    session, item, tick = (np.concatenate(col) for col in zip(*chunks, strict=True))
    assert session.dtype == item.dtype == tick.dtype == np.int64
    assert len(item) >= 100_000
    assert np.array_equal(tick, np.arange(1, len(item) + 1))
    assert session[0] == 1 and set(np.diff(session).tolist()) <= {0, 1}
    last = session[-1]
    assert len(item) - np.count_nonzero(session == last) < 100_000  # the last session was needed, and is whole
    assert item.min() >= 0 and item.max() < 1_000
    # The stream is the same as sessions(): same sessions, same order.
    per_session = np.split(item, np.flatnonzero(np.diff(session)) + 1)
    for got, want in zip(per_session, workload.sessions(), strict=False):
        assert np.array_equal(got, want)


def test_streams_are_reproducible_and_independent_of_the_batch_size() -> None:
    def run(seed: int, batch: int) -> np.ndarray:
        workload = SyntheticWorkload(5_000, *PRESETS["bolcom"], seed=seed)
        return np.concatenate([np.stack(c) for c in workload.clicks(60_000, batch=batch)], axis=1)

    first = run(8, 1 << 20)
    assert np.array_equal(first, run(8, 777))
    assert not np.array_equal(first[1][:1000], run(9, 1 << 20)[1][:1000])


def test_streams_are_lazy() -> None:
    workload = SyntheticWorkload(1_000, *PRESETS["rsc15"], seed=9)
    session_ids, items, ticks = next(workload.clicks(10**15, batch=1_000))  # no attempt to hold 10^15 clicks
    assert len(items) == 1_000
    sessions = workload.sessions()
    assert sum(len(s) for s in itertools.islice(sessions, 100_000)) > 100_000  # endless, and still going
    assert len(next(sessions)) >= 1


@pytest.mark.parametrize(("catalog_size", "seed"), [(0, 1), (-5, 1), (10, -1), (2.5, 1)])
def test_bad_catalog_or_seed_is_a_usage_error(catalog_size: int, seed: int) -> None:
    with pytest.raises(UsageError):
        SyntheticWorkload(catalog_size, *PRESETS["rsc15"], seed=seed)


def test_bad_click_count_is_a_usage_error_at_the_call() -> None:
    workload = SyntheticWorkload(10, *PRESETS["rsc15"], seed=1)
    for n_clicks, batch in ((0, 10), (10, 0)):
        with pytest.raises(UsageError, match="must be >= 1"):
            workload.clicks(n_clicks, batch=batch)  # raised before any iteration


def test_a_catalog_of_one_item() -> None:
    workload = SyntheticWorkload(1, *PRESETS["bolcom"], seed=1)
    assert set(np.concatenate(list(itertools.islice(workload.sessions(), 100))).tolist()) == {0}


# --- replaying a real log ------------------------------------------------------------------------------------


def write_log(path: Path, rows: Sequence[tuple[object, ...]], header: str = "session_id,item_id,timestamp") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_clicklog_replays_sessions_in_time_order_with_items_by_popularity(tmp_path: Path) -> None:
    rows = [  # shuffled on purpose: session 20 starts first, clicks out of order within sessions
        (10, 777, 105.0), (20, 777, 101.0), (10, 555, 103.0), (20, 555, 102.0), (30, 999, 110.0),
        (10, 777, 104.0), (20, 777, 100.0),
    ]  # fmt: skip
    log = write_log(tmp_path / "log.csv", rows)
    # Popularity: 777 (4 clicks) -> 0, 555 (2) -> 1, 999 (1) -> 2.
    assert [s.tolist() for s in clicklog_sessions(str(log), 1_000)] == [[0, 0, 1], [1, 0, 0], [2]]
    assert [s.tolist() for s in clicklog_sessions(str(log), 2)] == [[0, 0, 1], [1, 0, 0], [0]]  # rank mod C
    looped = clicklog_sessions(str(log), 1_000, loop=True)
    assert [s.tolist() for s in itertools.islice(looped, 4)][3] == [0, 0, 1]


def test_clicklog_with_item_ids_sends_the_ids_the_model_was_trained_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [(10, 777, 1.0), (10, 555, 2.0), (20, 999, 3.0), (20, 777, 4.0), (30, 999, 5.0), (10, 123, 6.0)]
    log = write_log(tmp_path / "log.csv", rows)
    # RecBole's field2id_token['item_id']: [PAD] is internal id 0, then the tokens in RecBole's own order.
    tokens = write_log(tmp_path / "items.txt", [("555",), ("999",), ("777",), ("444",)], header="[PAD]")
    with caplog.at_level("WARNING"):
        sessions = [s.tolist() for s in clicklog_sessions(str(log), 4, item_ids=str(tokens))]
    assert sessions == [[2, 0], [1, 2], [1]]  # 777 -> 3 - 1, 555 -> 1 - 1, 999 -> 2 - 1; 123 is not listed
    assert "1 of 6 clicks" in caplog.text


@pytest.mark.parametrize(
    ("content", "catalog_size", "message"),
    [
        ("[PAD]\n1\n2\n", 3, "2 item tokens after the padding line, but the catalog has 3 items"),
        ("[PAD]\n1\n1\n", 2, "item token '1' is listed more than once"),
        ("[PAD]\n8\n9\n", 2, "none of the items of"),
    ],
)
def test_a_wrong_item_token_list_is_refused_with_what_is_wrong(
    tmp_path: Path, content: str, catalog_size: int, message: str
) -> None:
    log = write_log(tmp_path / "log.csv", [(1, 1, 1.0), (1, 2, 2.0)])
    (tmp_path / "items.txt").write_text(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        clicklog_sessions(str(log), catalog_size, item_ids=str(tmp_path / "items.txt"))
    with pytest.raises(UsageError, match="no such file|cannot read"):
        clicklog_sessions(str(log), catalog_size, item_ids=str(tmp_path / "missing.txt"))


def test_clicklog_without_timestamps_keeps_file_order_and_reads_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"session_id": ["b", "a", "b", "a"], "item_id": ["x", "y", "y", "y"]})
    pq.write_table(table, tmp_path / "log.parquet")
    assert [s.tolist() for s in clicklog_sessions(str(tmp_path / "log.parquet"), 10)] == [[1, 0], [0, 0]]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("log.csv", "session_id,timestamp\n1,2\n", "missing column(s) item_id; found: session_id, timestamp"),
        ("log.csv", "session_id,item_id\n", "no clicks"),
        ("log.csv", "", "cannot read click log"),
        ("log.csv", "session_id,item_id\n1,\n2,3\n", "empty value(s) in column item_id"),
        ("log.csv", "session_id,item_id,timestamp\n1,2,soon\n", "timestamp must hold numbers or date-times"),
        ("log.parquet", "not parquet at all", "cannot read click log"),
        ("log.json", "{}", "unknown click log format"),
    ],
)
def test_bad_clicklog_is_a_usage_error_before_iterating(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        clicklog_sessions(str(path), 100)


def test_missing_clicklog_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        clicklog_sessions(str(tmp_path / "nope.csv"), 100)


def test_real_clicklogs_replay_every_click_once(shared_data: Path) -> None:
    for path in sorted(shared_data.glob("*.csv")):
        lines = path.read_text().splitlines()[1:]
        sessions = list(clicklog_sessions(str(path), 1_000))
        assert sum(len(s) for s in sessions) == len(lines)
        assert len(sessions) == len({line.split(",")[0] for line in lines})
        assert all(s.dtype == np.int64 and s.min() >= 0 and s.max() < 1_000 for s in sessions)


def test_clicklog_from_gcs(gcs_bucket: str) -> None:
    from etude import storage

    uri = f"gs://{gcs_bucket}/logs/clicks.csv"
    storage.write_bytes(uri, b"session_id,item_id,timestamp\n1,5,2.0\n1,6,1.0\n2,5,3.0\n")
    assert [s.tolist() for s in clicklog_sessions(uri, 10)] == [[1, 0], [0]]
    with pytest.raises(UsageError, match="cannot read"):
        clicklog_sessions(f"gs://{gcs_bucket}/logs/missing.csv", 10)
