"""The fitted workload model: a click log's two marginals as statistics, written by `etude fit --out` and read
by every verb that takes `--workload FILE` (docs/design.md, "The workload model file").

Each marginal (session lengths, per-item click counts) is the log's empirical distribution below x_min
(probabilities of 1, 2, ..., x_min - 1) and a fitted tail on [x_min, x_max] holding the rest of the mass: a
discrete truncated power law or a truncated geometric law, each fitted by maximum likelihood with its x_min
chosen by KS distance over the tail (Clauset, Shalizi and Newman 2009; `etude.loadgen.fit`); of the two, the one
whose whole-range model (body + tail) is closer to the log in KS distance is kept. x_min is at most
MAX_BODY + 1, so a file holds at most 2 x MAX_BODY probabilities; a marginal with fewer than MIN_DISTINCT
distinct values (nothing to fit a tail to) is all body.
No ids and no sessions: only counts of counts, as probabilities, and the log's totals.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from etude.errors import UsageError
from etude.loadgen.fit import (
    MIN_DISTINCT,
    ClickLog,
    GeometricFit,
    PowerLawFit,
    fit_geometric,
    fit_power_law,
    geometric_cdf,
    read_clicklog,
)
from etude.loadgen.workload import MAX_SUPPORT_SIZE, PowerLaw, TabulatedLaw

VERSION: Literal[1] = 1
MAX_BODY = 1000
_DIGITS = 8  # significant digits of the probabilities in the file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tail(_Strict):
    """The fitted law above the body: p(x) proportional to x^-alpha (power_law) or exp(-decay x) (geometric) on
    [x_min, x_max], with total probability `mass`; `ks` is its KS distance to the log above x_min."""

    family: Literal["power_law", "geometric"]
    x_min: int = Field(ge=1, le=MAX_BODY + 1)
    x_max: int = Field(ge=1)
    mass: float = Field(gt=0.0, le=1.0)
    alpha: float | None = Field(default=None, gt=0.0, le=10.0)
    decay: float | None = Field(default=None, gt=0.0, le=100.0)
    ks: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> Tail:
        if self.x_max < self.x_min:
            raise ValueError(f"tail x_max {self.x_max} is below x_min {self.x_min}")
        if self.x_max > MAX_SUPPORT_SIZE:
            raise ValueError(f"tail x_max {self.x_max} is above {MAX_SUPPORT_SIZE}")
        if (self.alpha is None) != (self.family == "geometric") or (self.decay is None) != (self.family == "power_law"):
            raise ValueError("a power_law tail has alpha (and no decay), a geometric tail has decay (and no alpha)")
        return self

    def pmf(self) -> np.ndarray:
        """Probabilities (summing to 1) of x_min, ..., x_max."""
        if self.alpha is not None:
            return PowerLaw(self.alpha, self.x_min, self.x_max).pmf()
        assert self.decay is not None
        cdf = geometric_cdf(self.decay, self.x_min, self.x_max, np.arange(self.x_min - 1, self.x_max + 1))
        return np.diff(cdf)


class Marginal(_Strict):
    """`body[v - 1]` = P(X = v) for v < x_min; the tail holds the remaining probability."""

    body: list[float] = Field(max_length=MAX_BODY)
    tail: Tail | None

    @model_validator(mode="after")
    def _sums_to_one(self) -> Marginal:
        if any(not (math.isfinite(p) and 0.0 <= p <= 1.0) for p in self.body):
            raise ValueError("body probabilities must lie in [0, 1]")
        if self.tail is not None and self.tail.x_min != len(self.body) + 1:
            raise ValueError(f"tail x_min {self.tail.x_min} must follow the body's {len(self.body)} values")
        total = sum(self.body) + (self.tail.mass if self.tail else 0.0)
        if abs(total - 1.0) > 1e-4:
            raise ValueError(f"probabilities sum to {total:.6f}, not 1")
        return self

    def law(self, epoch: int) -> TabulatedLaw:
        """This marginal as a law drawn in passes of `epoch` quantiles (`TabulatedLaw`)."""
        pmf = np.array(self.body, dtype=np.float64)
        if self.tail is not None:
            pmf = np.concatenate([pmf, self.tail.mass * self.tail.pmf()])
        return TabulatedLaw(pmf, epoch)


class WorkloadModel(_Strict):
    """A fitted workload (the file of `etude fit --out`)."""

    version: Literal[1]
    clicks: int = Field(ge=1)
    sessions: int = Field(ge=2)
    items: int = Field(ge=1)
    session_length: Marginal
    item_clicks: Marginal

    def laws(self) -> tuple[TabulatedLaw, TabulatedLaw]:
        """(session length law, per-item click count law) for `SyntheticWorkload`."""
        return self.session_length.law(self.sessions), self.item_clicks.law(self.items)


def fit_marginal(values: np.ndarray, what: str) -> Marginal:
    """Empirical body + the better-fitting tail family (see the module docstring)."""
    values = np.asarray(values, dtype=np.int64)
    uniq, cnt = np.unique(values, return_counts=True)
    n = values.size
    if len(uniq) < MIN_DISTINCT:
        if uniq[-1] > MAX_BODY:
            raise UsageError(f"cannot fit {what}: {len(uniq)} distinct values up to {uniq[-1]}, too few for a tail "
                             f"and too large for a table of {MAX_BODY}")
        return Marginal(body=_probabilities(values, int(uniq[-1]) + 1), tail=None)
    power = fit_power_law(values, what, max_x_min=MAX_BODY + 1)
    geometric = fit_geometric(values, what, max_x_min=MAX_BODY + 1)
    # Whole-range KS distance of body + tail = the tail's share x the tail's KS distance (the body is exact).
    closer = power.ks * power.n_tail <= geometric.ks * geometric.n_tail
    best: PowerLawFit | GeometricFit = power if closer else geometric
    tail = Tail(
        family="power_law" if best is power else "geometric",
        x_min=best.x_min,
        x_max=best.x_max,
        mass=_round(best.n_tail / n),
        alpha=_round(power.alpha) if best is power else None,
        decay=_round(geometric.decay) if best is geometric else None,
        ks=round(best.ks, 6),
    )
    body = _probabilities(values, best.x_min)
    return Marginal(body=body, tail=tail.model_copy(update={"mass": _round(1.0 - math.fsum(body))}))


def _probabilities(values: np.ndarray, below: int) -> list[float]:
    """P(X = v) for v = 1 .. below - 1, rounded."""
    counts = np.bincount(values[values < below], minlength=below)[1:]
    return [_round(c / values.size) for c in counts.tolist()]


def _round(x: float) -> float:
    return float(f"{x:.{_DIGITS}g}")


def fit_workload(log: ClickLog, path: str = "click log") -> WorkloadModel:
    """The workload model of a click log; UsageError when the log cannot give one (e.g. a single session)."""
    lengths = log.session_lengths()
    if len(lengths) < 2:
        raise UsageError(f"{path}: one session only; a workload model needs at least 2 sessions")
    clicks = log.item_clicks()
    return WorkloadModel(
        version=VERSION,
        clicks=len(log),
        sessions=len(lengths),
        items=len(clicks),
        session_length=fit_marginal(lengths, "session lengths"),
        item_clicks=fit_marginal(clicks, "item click counts"),
    )


def fit_file(path: str) -> WorkloadModel:
    return fit_workload(read_clicklog(path), path)


def read_workload(path: str) -> WorkloadModel:
    """Read and check a workload model file (local path or gs://); UsageError naming the file and the problem."""
    from etude import storage

    try:
        if storage.is_gcs(path):
            raw = storage.read_bytes(path)
        else:
            if not Path(path).is_file():
                raise UsageError(f"--workload {path}: no such file")
            raw = Path(path).read_bytes()
        doc: Any = json.loads(raw)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UsageError(f"--workload {path}: not a workload model (JSON): {str(err).splitlines()[0]}") from None
    if not isinstance(doc, dict) or "version" not in doc:
        raise UsageError(f"--workload {path}: not a workload model (no version field; write one with etude fit --out)")
    if doc["version"] != VERSION:
        raise UsageError(f"--workload {path}: workload model version {doc['version']!r}; this etude reads version "
                         f"{VERSION} (fit the log again with etude fit --out)")
    try:
        return WorkloadModel.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise UsageError(f"--workload {path}: {where}: {first['msg'].removeprefix('Value error, ')}") from None


def write_workload(model: WorkloadModel, out: str) -> None:
    """Write the model as JSON to a local path or gs://, whole or not at all."""
    from etude import storage

    if not storage.is_gcs(out) and Path(out).is_dir():
        raise UsageError(f"--out {out} is a directory")
    storage.write_bytes(out, (model.model_dump_json(indent=1) + "\n").encode())
