"""The `etude` command line: one console script, one verb per job.

Each part registers its own verbs (`register(subparsers)` in the modules below) and keeps heavy imports
(torch, numpy, aiohttp) inside the functions that run them, so `etude --help` stays fast.
A `UsageError` (bad arguments, config or files) prints one line and exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from etude import __version__
from etude.errors import UsageError

VERB_MODULES = (
    "etude.loadgen.workload_cli",  # generate, fit
    "etude.loadgen.cli",  # loadgen
    "etude.models.cli",  # export, microbench
    "etude.serving.cli",  # serve
    "etude.local",  # local
    "etude.report",  # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etude",
        description="Benchmark the inference latency of session-based recommendation models, locally or on GKE.",
    )
    parser.add_argument("--version", action="version", version=f"etude {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"etude {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"etude {args.verb}: interrupted", file=sys.stderr)
        return 130
