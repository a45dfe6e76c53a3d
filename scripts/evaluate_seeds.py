"""Evaluate several trained models on one subset with ``training.evaluate --streaming`` and tabulate.

    python scripts/evaluate_seeds.py --subset test --out runs/eval \
        delta=/work/models/seed-0.keras,/work/models/seed-1.keras,/work/models/seed-2.keras \
        baseline=/work/models/seed-0_baseline.keras,/work/models/seed-1_baseline.keras,/work/models/seed-2_baseline.keras

Each ``NAME=PATH,PATH,...`` is one row group (seeds); the script runs ``training.evaluate`` once
per model (JSON in ``--out``; an existing JSON is reused, so an interrupted run continues) and
prints a markdown table per model and the mean and spread (min-max) per group.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIELDS = [("clip acc", ("clip", "accuracy")), ("streaming acc (last frame)", ("streaming", "accuracy_last_frame")),
          ("streaming acc (mean)", ("streaming", "accuracy_mean")),
          ("dense Keras streaming acc (last)", ("dense_streaming", "accuracy_last_frame")),
          ("clip MAC density", ("clip", "mac_density")), ("streaming MAC density", ("streaming", "mac_density")),
          ("executed", ("streaming", "executed_mac_density")), ("top-1 vs dense", ("streaming", "top1_agreement_with_dense"))]


def main() -> int:
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("groups", nargs="+", help="NAME=MODEL.keras,MODEL.keras,...")
    p.add_argument("--subset", choices=("test", "val"), default="test")
    p.add_argument("--out", default="runs/eval", help="folder for the per-model JSON files")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = [["group", "model"] + [f for f, _ in FIELDS]]
    summary = []
    for group in args.groups:
        name, _, paths = group.partition("=")
        if not paths:
            p.error(f"expected NAME=PATH[,PATH...], got {group!r}")
        rows = []
        for path in paths.split(","):
            js = out / f"{name}_{Path(path).stem}_{args.subset}.json"
            if not js.exists():
                cmd = [sys.executable, "-m", "training.evaluate", "--model", path, "--subset", args.subset, "--streaming",
                       "--threads", str(args.threads), "--json", str(js), "--quiet"]
                print("$", " ".join(cmd), file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, cwd=ROOT)
            res = json.loads(js.read_text())
            values = [res[a][b] for _, (a, b) in FIELDS]
            rows.append(values)
            table.append([name, Path(path).name] + [f"{v:.3f}" for v in values])
        a = np.array(rows)
        summary.append([name, f"mean of {len(rows)}"] + [f"{m:.3f} ({lo:.3f}-{hi:.3f})" for m, lo, hi in
                                                          zip(a.mean(0), a.min(0), a.max(0))])
    for row in table[:1] + table[1:] + summary:
        print("| " + " | ".join(row) + " |")
        if row is table[0]:
            print("|" + " --- |" * len(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
