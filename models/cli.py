"""Verbs of this package for the `etude` command line: `export`, `import-recbole` and `microbench`."""

from __future__ import annotations

import argparse

from etude.errors import UsageError
from etude.spec import BUILTIN_MODELS, EXPORT_DEVICES, RUNTIMES

DEFAULT_CATALOG_SIZES = "10000,100000,1000000,10000000"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's verbs to the `etude` parser."""
    p = sub.add_parser(
        "export",
        help="export a built-in model (seeded random weights) for a runtime",
        description="Export a built-in model with seeded random weights to a file of the runtime's format "
        "that meets the serialized-model contract (docs/design.md, Runtimes).",
    )
    p.add_argument("--model", required=True, help=f"one of: {', '.join(BUILTIN_MODELS)}")
    p.add_argument("--catalog-size", type=int, required=True, help="number of items C (embedding size ceil(C^0.25))")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="jit",
        help="eager: scripted only; jit: scripted, frozen and optimize_for_inference (default); aot: "
        "torch.export + AOTInductor (needs a C++ compiler); bf16, int8: the item table quantized; onnx: ONNX "
        "Runtime; ann: a faiss IVF index for approximate top-k",
    )
    p.add_argument(
        "--device",
        choices=EXPORT_DEVICES,
        default="cpu",
        help="the device the model is exported for; the export itself runs on the CPU (default: cpu)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the random weights")
    p.add_argument("--out", required=True, help="file path or gs://bucket/path")
    p.add_argument("--if-missing", action="store_true", help="do nothing (exit 0) when --out already exists")
    p.set_defaults(func=_export)

    r = sub.add_parser(
        "import-recbole",
        help="turn a RecBole checkpoint (.pth) into a serialized model",
        description="Read a checkpoint as RecBole 1.2.1's Trainer saves it (GRU4Rec, NARM, STAMP, SASRec, SRGNN, "
        "GCSAN, CORE, RepeatNet, SINE, LightSANs; no RecBole needed, nothing in the file runs) and write a "
        "serialized model (any runtime) that meets the serialized-model contract.",
    )
    r.add_argument("checkpoint", help="the .pth file: path or gs://bucket/path")
    r.add_argument("--runtime", choices=RUNTIMES, default="jit", help="default: jit")
    r.add_argument("--device", choices=EXPORT_DEVICES, default="cpu", help="where it will be served (default: cpu)")
    r.add_argument("--out", required=True, help="file path or gs://bucket/path")
    r.add_argument("--if-missing", action="store_true", help="do nothing (exit 0) when --out already exists")
    r.set_defaults(func=_import_recbole)

    m = sub.add_parser(
        "microbench",
        help="serial latency per model x catalog size x runtime (paper Fig. 3)",
        description="Serial requests of synthetic bol.com sessions against each model, runtime "
        "and catalog size; writes microbench.csv, microbench.png and microbench.json.",
    )
    m.add_argument("--models", default=",".join(BUILTIN_MODELS), help="comma-separated (default: all)")
    m.add_argument("--catalog-sizes", default=DEFAULT_CATALOG_SIZES, help="comma-separated")
    m.add_argument(
        "--runtimes",
        default="eager,jit",
        help=f"comma-separated, of: {', '.join(RUNTIMES)} (see etude export --help); also python (the "
        "nn.Module in Python eager mode, not exportable). Default: eager,jit",
    )
    m.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument(
        "--requests",
        type=int,
        default=None,
        help="timed requests per cell (default: 200 up to C=100k, 50 at 1M, 15 above)",
    )
    m.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    m.add_argument("--seed", type=int, default=42)
    m.set_defaults(func=_microbench)


def _export(args: argparse.Namespace) -> int:
    from etude.models.export import export_model

    export_model(args.model, args.catalog_size, args.runtime, args.out, seed=args.seed, if_missing=args.if_missing,
                 device=args.device)
    return 0


def _import_recbole(args: argparse.Namespace) -> int:
    from etude.models.recbole_import import import_recbole

    import_recbole(args.checkpoint, args.runtime, args.out, device=args.device, if_missing=args.if_missing)
    return 0


def _csv(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"{flag} is empty")
    return items


def _microbench(args: argparse.Namespace) -> int:
    from etude.models.microbench import run
    from etude.models.registry import check_name

    models = [check_name(m) for m in _csv(args.models, "--models")]
    runtimes = _csv(args.runtimes, "--runtimes")
    for r in runtimes:
        if r not in (*RUNTIMES, "python"):
            raise UsageError(f"--runtimes: unknown runtime {r!r}; known runtimes: {', '.join(RUNTIMES)}, python")
    try:
        sizes = [int(s) for s in _csv(args.catalog_sizes, "--catalog-sizes")]
    except ValueError:
        raise UsageError(f"--catalog-sizes must be comma-separated integers, got {args.catalog_sizes!r}") from None
    if any(c < 1 for c in sizes):
        raise UsageError(f"--catalog-sizes must all be >= 1, got {args.catalog_sizes}")
    if args.requests is not None and args.requests < 1:
        raise UsageError(f"--requests must be >= 1, got {args.requests}")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    cells = run(
        models, sizes, runtimes, args.device, args.out, requests=args.requests, seed=args.seed, threads=args.threads
    )
    for c in cells:
        print(
            f"{c.model:10s} {c.runtime:6s} C={c.catalog_size:<9d} p50 {c.p50_ms:9.2f} ms  p90 {c.p90_ms:9.2f} ms"
            f"  recall@21 {c.recall:.4f}"
        )
    print(f"wrote {args.out}/microbench.csv, microbench.png, microbench.json")
    return 0
