"""Model-size scaling of the delta engine against its contenders (issue #17): one ``streaming.bench`` run per
(model, clip), then a table and a plot of speedup against MAC density per model.

Each (model, clip) pair runs in its own ``python -m streaming.bench`` process (the contenders side by side in
that process, same threads, after warm-up; see ``streaming/bench.py``), so one model's memory and compiled code
do not sit under the next one's timings. Results are appended as JSON lines, so an interrupted run resumes
where it stopped (pairs already in ``--out`` are skipped).

    python scripts/scaling.py --models /work/models/seed-0.keras /work/models/scale/*.keras \
        --clips ../shared/data/box.mp4 ../shared/data/real/surveillance_classroom.gif ... \
        --out runs/scaling/results.jsonl --threads 2

Writes ``results.jsonl`` (one bench JSON per pair), ``scaling.md`` (the table) and ``scaling.png`` beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltanet.cli import ArgumentParser, positive_int  # noqa: E402

#: contenders in table order (a missing one is left blank)
CONTENDERS = ("delta_engine", "dense_engine", "tflite", "tflite_int8", "onnxruntime", "keras", "keras_nojit")
#: the refresh table's paired speedups of delta_refresh (bench --refresh)
REFRESH_VS = ("vs_delta_engine", "vs_dense_engine", "vs_tflite", "vs_tflite_int8")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python scripts/scaling.py", description="Delta engine vs dense runtimes across model sizes.")
    p.add_argument("--models", nargs="+", required=True, help="clip models (.keras)")
    p.add_argument("--clips", nargs="+", required=True, help="videos (static-camera clips for the scaling claim)")
    p.add_argument("--out", default="runs/scaling/results.jsonl", help="JSON lines, appended (default runs/scaling/results.jsonl)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for every contender (default 2)")
    p.add_argument("--frames", type=positive_int, default=300, help="at most this many frames of each clip (default 300)")
    p.add_argument("--bench-args", default="", help="extra arguments for streaming.bench, e.g. '--tune-frames 15 --block 10'")
    p.add_argument("--timeout", type=positive_int, default=1800, help="seconds per bench run (default 1800)")
    return p


def _done(out: Path) -> set[tuple[str, str]]:
    if not out.is_file():
        return set()
    return {(r["model"], r["source"]) for r in map(json.loads, out.read_text().splitlines()) if r.get("model")}


def run_pairs(args) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    pairs = [(m, c) for m in args.models for c in args.clips]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    for i, (model, clip) in enumerate(pairs, 1):
        if (str(model), str(clip)) in done:
            print(f"[{i}/{len(pairs)}] {Path(model).name} on {Path(clip).name}: already in {out}", file=sys.stderr)
            continue
        tmp = out.with_name(f".bench_{os.getpid()}.json")
        cmd = [sys.executable, "-m", "streaming.bench", "--model", str(model), "--source", str(clip),
               "--frames", str(args.frames), "--threads", str(args.threads), "--json", str(tmp), *args.bench_args.split()]  # fmt: skip
        print(f"[{i}/{len(pairs)}] {Path(model).name} on {Path(clip).name} ...", file=sys.stderr, flush=True)
        t0 = time.time()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        if r.returncode != 0 or not tmp.is_file():
            print(f"    failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:] or ''}", file=sys.stderr)
            continue
        result = json.loads(tmp.read_text())
        tmp.unlink()
        result.update(model=str(model), source=str(clip), wall_s=round(time.time() - t0, 1))
        with out.open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"    {time.time() - t0:.0f} s", file=sys.stderr)


def _name(r: dict) -> str:
    """A model's name for the table: its file's stem, or its folder's name for a ``.../NAME/model.keras``."""
    path = Path(r["model"])
    return path.parent.name if path.stem == "model" else path.stem


def _ms(r: dict, name: str) -> float | None:
    entry = r.get("ms_per_frame", {}).get(name)
    return None if not entry else float(entry["median"])


def table(results: list[dict]) -> str:
    head = ["model", "clip", "MMACs", "MAC density", *[f"{c} ms" for c in CONTENDERS], "vs dense engine", "vs TFLite",
            "vs TFLite int8", "% of theory"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        delta = _ms(r, "delta_engine")
        cells = [_name(r), Path(r["source"]).name, f"{r['dense_macs_per_frame'] / 1e6:.0f}", f"{r['mac_density']:.3f}"]
        cells += ["" if _ms(r, c) is None else f"{_ms(r, c):.2f}" for c in CONTENDERS]
        for other in ("dense_engine", "tflite", "tflite_int8"):
            cells.append("" if _ms(r, other) is None else f"{_ms(r, other) / delta:.2f}x")
        dense = _ms(r, "dense_engine")
        cells.append(f"{100 * (dense / delta) * r['mac_density']:.0f}%" if dense else "")
        lines.append("| " + " | ".join(cells) + " |")
    refreshed = [r for r in results if r.get("refresh")]
    if refreshed:  # bench --refresh: the engine with refresh frames, paired against the others in the same run
        head = ["model", "clip", "refresh at", "frames refreshed", "delta_refresh ms", *[f"paired vs {k.removeprefix('vs_')}" for k in REFRESH_VS],
                "top-1 vs dense (plain / refresh)"]  # fmt: skip
        lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in refreshed:
            f, sp = r["refresh"], r["speedup_refresh"]
            cells = [_name(r), Path(r["source"]).name, "never" if f["at"] is None else f"{f['at']:.2f}",
                     f"{f['frames_refreshed']}/{r['frames']['timed_count'] - 1}", f"{_ms(r, 'delta_refresh'):.2f}"]  # fmt: skip
            cells += [f"{sp[k]['paired']:.2f}x" if k in sp else "" for k in REFRESH_VS]
            cells.append(f"{r['top1_agreement_vs_dense']:.3f} / {f['top1_agreement_vs_dense']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_model: dict[str, list[dict]] = {}
    for r in results:
        by_model.setdefault(_name(r), []).append(r)
    for name, rs in by_model.items():
        pts = [(r["mac_density"], _ms(r, "tflite") / _ms(r, "delta_engine")) for r in rs if _ms(r, "tflite")]
        if pts:
            color = ax.scatter(*zip(*pts), label=name, s=28).get_facecolor()[0]
            # bench --refresh: the engine with refresh frames, at the plain engine's MAC density (same clip)
            ref = [(r["mac_density"], _ms(r, "tflite") / _ms(r, "delta_refresh")) for r in rs if _ms(r, "tflite") and _ms(r, "delta_refresh")]
            if ref:
                ax.scatter(*zip(*ref), marker="x", color=color, s=32, label=f"{name}, refresh frames")
    xs = [i / 100 for i in range(3, 101)]
    ax.plot(xs, [1 / x for x in xs], "k:", lw=1, label="1 / MAC density (theory vs own dense)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="MAC density (transmitted non-zero deltas)", ylabel="speedup vs TFLite fp32 (median ms)",
           title="delta engine vs TFLite fp32, per clip (2 threads)")  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    run_pairs(args)
    out = Path(args.out)
    results = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    if not results:
        print("no results", file=sys.stderr)
        return 1
    md = out.with_name("scaling.md")
    md.write_text(table(results) + "\n")
    plot(results, out.with_name("scaling.png"))
    print(table(results))
    print(f"wrote {md} and {out.with_name('scaling.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
