"""Verbs of this package for the `etude` command line: `generate` (Algorithm 1 to a file) and `fit` (a real log).

`add_workload_args`, `check_workload` and `laws_from_args` give every verb that takes a workload the same flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etude.errors import UsageError

if TYPE_CHECKING:
    from etude.loadgen.workload import Law

log = logging.getLogger(__name__)

OUT_SUFFIXES = (".parquet", ".csv")
PROGRESS_S = 5.0
WORKLOAD_HELP = (
    "Workload: --workload FILE (a click log's statistics, written by `etude fit CLICKLOG --out FILE`; local or "
    "gs://), --preset bolcom|rsc15 (the fits of the ETUDE paper's logs: the integer part of a draw from "
    "scipy.stats.powerlaw(a, loc, scale); bolcom sessions a=0.07004 loc=2 scale=277, clicks a=0.04069 loc=1 "
    "scale=2335; rsc15 sessions a=0.10325 loc=1 scale=199, clicks a=0.07981 loc=1 scale=147418), or exponents "
    "--alpha-length A --alpha-clicks B, 0 < A, B <= 10, for p(x) proportional to x^-alpha with session lengths "
    "on [1, 200] and per-item click counts on [1, 100000]."
)


def add_workload_args(parser: argparse.ArgumentParser, *, clicklog: bool = False) -> None:
    """--workload | --preset | --alpha-length + --alpha-clicks, and with `clicklog` the alternative of replaying
    a real log (--clicklog); exactly one of them (`check_workload`)."""
    group = parser.add_argument_group("workload", WORKLOAD_HELP)
    group.add_argument("--workload", metavar="FILE", help="a fitted workload model (etude fit CLICKLOG --out FILE)")
    group.add_argument("--preset", help="bolcom or rsc15")
    group.add_argument("--alpha-length", type=float, metavar="A", help="exponent of the session-length law")
    group.add_argument("--alpha-clicks", type=float, metavar="B", help="exponent of the per-item click-count law")
    if clicklog:
        group.add_argument("--clicklog", metavar="FILE", help="replay a real click log (CSV/Parquet with "
                           "session_id, item_id; ids mapped onto [0, C)), starting over at its end")
        group.add_argument("--item-ids", metavar="FILE", help="with --clicklog: the trained model's item tokens, "
                           "one per line in its id order, line 0 padding (RecBole's field2id_token['item_id']); "
                           "a click on the token of line j sends id j - 1")


def check_workload(args: argparse.Namespace) -> None:
    """Exactly one workload given, and a synthetic one valid (its file read); UsageError otherwise."""
    given = [flag for flag, value in (("--workload", args.workload), ("--preset", args.preset),
                                      ("--alpha-*", _either(args.alpha_length, args.alpha_clicks)),
                                      ("--clicklog", getattr(args, "clicklog", None))) if value is not None]
    if len(given) > 1:
        raise UsageError(f"give one workload, not both {given[0]} and {given[1]}")
    if getattr(args, "item_ids", None) is not None and getattr(args, "clicklog", None) is None:
        raise UsageError("--item-ids maps the items of a click log: give it with --clicklog")
    if not given:
        choices = "--workload FILE, --preset bolcom|rsc15, --alpha-length with --alpha-clicks"
        raise UsageError(f"give a workload: {choices}{', or --clicklog' if hasattr(args, 'clicklog') else ''}")
    if given != ["--clicklog"]:
        laws_from_args(args)


def _either(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def laws_from_args(args: argparse.Namespace) -> tuple[Law, Law]:
    """(session length law, item clicks law) from the flags of `add_workload_args`; UsageError when invalid."""
    from etude.loadgen.workload import workload_laws

    if args.workload is not None:
        from etude.loadgen.fitted import read_workload

        return read_workload(args.workload).laws()
    return workload_laws(args.preset, args.alpha_length, args.alpha_clicks)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's verbs to the `etude` parser."""
    gen = sub.add_parser(
        "generate",
        help="write synthetic sessions (paper Algorithm 1) to Parquet or CSV",
        description="Write N synthetic clicks (session_id, item_id, timestamp) for a catalog of C items, whole "
        "sessions, as Parquet or CSV by the extension of --out. Session ids and timestamps (a logical clock, "
        "one tick per click) count from 1; item ids are in [0, C). The same --seed gives the same sessions as "
        "the load generator. The file appears whole or not at all.",
    )
    gen.add_argument("--catalog-size", type=int, required=True, metavar="C", help="number of items, >= 1")
    gen.add_argument("--clicks", type=int, required=True, metavar="N", help="clicks to write, >= 1")
    add_workload_args(gen)
    gen.add_argument("--seed", type=int, default=42, help="random seed, >= 0 (default 42)")
    gen.add_argument("--out", required=True, metavar="FILE", help="output file, .parquet or .csv")
    gen.add_argument("--batch", type=int, default=1 << 20, help=argparse.SUPPRESS)
    gen.set_defaults(func=run_generate)

    fit = sub.add_parser(
        "fit",
        help="fit a workload model to a real click log; prints JSON",
        description="Fit discrete truncated power laws p(x) proportional to x^-alpha on [x_min, x_max] to the "
        "session lengths and per-item click counts of a click log (CSV or Parquet with columns session_id, "
        "item_id; local or gs://): maximum likelihood with x_min chosen by KS distance (Clauset, Shalizi and "
        "Newman 2009), x_max the observed maximum. Prints {session_length: {alpha, x_min, x_max, ks}, "
        "item_clicks: {...}, sessions, clicks, items}. --out FILE writes the workload model (the log's "
        "empirical body below x_min and the better-fitting tail above it, docs/design.md) for --workload; "
        "--compare adds the log and a synthetic log of as many clicks from the model side by side to the JSON "
        "and writes compare.json and ccdf.png (log-log CCDFs of both marginals) into --out-dir.",
    )
    fit.add_argument("clicklog", metavar="CLICKLOG", help="CSV (.csv, .csv.gz, .tsv) or Parquet (.parquet) file")
    fit.add_argument("--out", metavar="FILE", help="write the workload model here (JSON; local or gs://)")
    fit.add_argument("--compare", action="store_true", help="real vs synthetic from the model, side by side")
    fit.add_argument("--out-dir", default=".", metavar="DIR", help="where --compare writes its files (default .)")
    fit.add_argument("--seed", type=int, default=42, help="random seed of the synthetic log of --compare")
    fit.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from etude import storage
    from etude.loadgen.fit import read_clicklog, summary
    from etude.loadgen.fitted import fit_workload, write_workload

    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    out_dir = Path(args.out_dir)
    if args.compare and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir}: no such folder")
    log_ = read_clicklog(args.clicklog)
    model = fit_workload(log_, args.clicklog)
    result: dict[str, Any] = summary(log_)
    if args.out is not None:
        write_workload(model, args.out)
    if args.compare:
        from etude.loadgen.compare import ccdf_plot, side_by_side, synthetic_marginals

        real = (log_.session_lengths(), log_.item_clicks())
        synthetic = synthetic_marginals(model.laws(), len(log_), model.items, args.seed)
        result["compare"] = side_by_side(real, synthetic, model.items)
        storage.write_bytes(str(out_dir / "compare.json"), (json.dumps(result["compare"], indent=2) + "\n").encode())
        ccdf_plot(real, synthetic, f"{Path(args.clicklog).name}: real vs synthetic ({len(log_)} clicks)",
                  out_dir / "ccdf.png")
    print(json.dumps(result, indent=2))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    out = str(args.out)
    if out.startswith("gs://"):
        raise UsageError(f"--out {out}: generate writes a local file (copy it to GCS afterwards)")
    suffix = Path(out).suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise UsageError(f"--out {out}: unknown extension {suffix or '(none)'!r}; use .parquet or .csv")
    if args.catalog_size < 1:
        raise UsageError(f"--catalog-size must be >= 1, got {args.catalog_size}")
    if args.clicks < 1:
        raise UsageError(f"--clicks must be >= 1, got {args.clicks}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    check_workload(args)
    session_length, item_clicks = laws_from_args(args)
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"--out {out}: folder {path.parent} does not exist")

    from etude.loadgen.workload import SyntheticWorkload

    started_ns = time.perf_counter_ns()
    workload = SyntheticWorkload(args.catalog_size, session_length, item_clicks, args.seed)
    setup_s = (time.perf_counter_ns() - started_ns) / 1e9
    chunks = workload.clicks(args.clicks, batch=args.batch)
    clicks, sessions = write_clicks(path, chunks, expected=args.clicks)
    seconds = (time.perf_counter_ns() - started_ns) / 1e9
    log.info(
        "wrote %d clicks in %d sessions to %s in %.2f s (%.2f s catalog setup)", clicks, sessions, out, seconds, setup_s
    )
    summary = {
        "out": out,
        "clicks": clicks,
        "sessions": sessions,
        "seconds": round(seconds, 3),
        "clicks_per_s": round(clicks / seconds) if seconds > 0 else None,
    }
    print(json.dumps(summary))
    return 0


def write_clicks(path: Path, chunks: Any, expected: int | None = None) -> tuple[int, int]:
    """Stream (session_id, item_id, timestamp) chunks to Parquet or CSV at `path`, atomically; (clicks, sessions).

    Logs progress every PROGRESS_S seconds (`expected`: the number of clicks asked for, for a percentage).
    """
    import pyarrow as pa

    schema = pa.schema([("session_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())])
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # same folder: the rename is atomic
    clicks, last_session = 0, 0
    next_report_ns = time.perf_counter_ns() + int(PROGRESS_S * 1e9)
    try:
        with _writer(tmp, path.suffix.lower(), schema) as writer:
            for session_ids, items, ticks in chunks:
                writer.write_batch(pa.record_batch([session_ids, items, ticks], schema=schema))
                clicks += len(items)
                last_session = int(session_ids[-1])
                if time.perf_counter_ns() >= next_report_ns:
                    share = f" ({100 * clicks / expected:.0f}%)" if expected else ""
                    log.info("%s: %d clicks written%s", path.name, clicks, share)
                    next_report_ns += int(PROGRESS_S * 1e9)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"--out {path}: cannot write: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return clicks, last_session


def _writer(tmp: Path, suffix: str, schema: Any) -> Any:
    if suffix == ".csv":
        import pyarrow.csv as pacsv

        try:  # a plain header line; quoting_header needs pyarrow >= 19
            options = pacsv.WriteOptions(quoting_style="none", quoting_header="none")
        except TypeError:
            options = pacsv.WriteOptions(quoting_style="none")
        return pacsv.CSVWriter(str(tmp), schema, write_options=options)
    import pyarrow.parquet as pq

    return pq.ParquetWriter(str(tmp), schema, compression="zstd")
