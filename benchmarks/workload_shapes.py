"""The shape of each workload beside a real log: the log itself, the workload fitted to it (`etude fit --out`),
the two presets and the bare exponents of `etude fit`, each generated with as many clicks as the log, at C = the
log's item count (seed 42). Prints a Markdown table (README "Synthetic sessions"); deterministic, not timed.

    .venv/bin/python benchmarks/workload_shapes.py [../shared/data/rsc15_100k_sessionrec.csv ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etude.loadgen.compare import ks_distance, shape, synthetic_marginals  # noqa: E402
from etude.loadgen.fit import read_clicklog, summary  # noqa: E402
from etude.loadgen.fitted import fit_workload  # noqa: E402
from etude.loadgen.workload import workload_laws  # noqa: E402

DEFAULT_LOGS = [ROOT.parent / "shared" / "data" / n for n in ("rsc15_100k_sessionrec.csv",
                                                              "diginetica_sample_srgnn.csv")]  # fmt: skip


def main() -> int:
    logs = [Path(a) for a in sys.argv[1:]] or DEFAULT_LOGS
    print("| log | workload | sessions | mean length | median | p90 | p99 | max | KS | top 1 % / 10 % / 50 % share "
          "| items clicked |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in logs:
        log = read_clicklog(str(path))
        model = fit_workload(log, str(path))
        fitted = summary(log)
        real = (log.session_lengths(), log.item_clicks())
        rows = {"real log": real, "fitted (--workload)": synthetic_marginals(model.laws(), len(log), model.items, 42)}
        exponents = (fitted["session_length"]["alpha"], fitted["item_clicks"]["alpha"])
        rows[f"--alpha-length {exponents[0]} --alpha-clicks {exponents[1]}"] = synthetic_marginals(
            workload_laws(alpha_length=exponents[0], alpha_clicks=exponents[1]), len(log), model.items, 42)
        for preset in ("bolcom", "rsc15"):
            rows[f"--preset {preset}"] = synthetic_marginals(workload_laws(preset), len(log), model.items, 42)
        for name, (lengths, clicks) in rows.items():
            s = shape(lengths, clicks, model.items)
            shares = " / ".join(f"{s[f'top_{q}pct_share']:.2f}" for q in (1, 10, 50))
            print(f"| {path.name} | {name} | {s['sessions']:,} | {s['mean_length']:.2f} | {s['median_length']} | "
                  f"{s['p90_length']} | {s['p99_length']} | {s['max_length']} | {ks_distance(real[0], lengths):.3f} "
                  f"| {shares} | {s['items_clicked']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
