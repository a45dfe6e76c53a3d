"""The headline experiment: baseline vs delta model, same budget, on the embedded dataset.

    python scripts/headline.py --out runs/headline [--epochs N] [-- extra training.fit flags]

Trains ``python -m training.fit --baseline`` and ``python -m training.fit`` (the delta model)
with identical data, architecture, epochs and seed, then prints (and writes as
``OUT/headline.md``) a table: validation accuracy, spatial density, temporal density, MAC
density, and the ratio ``baseline mac_density / delta mac_density``, with the date and
machine. Each run's metrics.json holds the per-layer details.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(out: Path, flags: list[str]) -> dict:
    if not (out / "metrics.json").exists():
        cmd = [sys.executable, "-m", "training.fit", "--out", str(out), "--quiet", *flags]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads((out / "metrics.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/headline")
    p.add_argument("--epochs", type=int, default=None, help="epochs for both runs (default: training.fit's)")
    p.add_argument("--refine-epochs", type=int, default=0, help="also deltafy the trained baseline and fine-tune it this many epochs")
    p.add_argument("extra", nargs="*", help="more training.fit flags for both runs (after --)")
    args = p.parse_args(argv)
    out = Path(args.out)
    common = list(args.extra) + (["--epochs", str(args.epochs)] if args.epochs else [])
    started = time.time()
    rows = {"baseline": train(out / "baseline", ["--baseline", *common]), "delta": train(out / "delta", common)}
    if args.refine_epochs:
        refine = [f for f in common if f != "--epochs"]
        rows["delta (refined from baseline)"] = train(
            out / "refined", ["--init", str(out / "baseline" / "model.keras"), *refine, "--epochs", str(args.refine_epochs)]
        )
    base = rows["baseline"]["mac_density"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {os.cpu_count()} CPU cores "
        f"({platform.processor() or 'unknown CPU'}), embedded dataset, command: "
        f"`python scripts/headline.py --out {args.out}" + (f" --epochs {args.epochs}" if args.epochs else "")
        + (f" --refine-epochs {args.refine_epochs}" if args.refine_epochs else "") + (" -- " + " ".join(args.extra) if args.extra else "") + "`",
        "",
        "| model | val accuracy | spatial density | temporal density | MAC density | baseline / this MAC density | train+eval s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['val_accuracy']:.3f} | {m['spatial_mac_density']:.3f} | {m['temporal_mac_density']:.3f} | "
            f"{m['mac_density']:.3f} | {base / m['mac_density']:.1f}x | {m['seconds']:.0f} |"
        )
    lines.append("")
    lines.append(
        "Spatial/temporal density are MAC-weighted over the MAC layers' inputs (deltanet.density); "
        "MAC density is the temporal one for delta models and the spatial one for the baseline "
        "(a runtime that skips zero activations)."
    )
    text = "\n".join(lines)
    (out / "headline.md").write_text(text + "\n")
    print(text)
    print(f"total {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
