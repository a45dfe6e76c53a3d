"""Scene cuts and moving cameras: the delta engine with and without its dense fallback, beside
its dense mode and TFLite fp32, on the same frames in one process.

    python scripts/fallback_eval.py --model /work/models/seed-0.keras --out docs/fallback.md

Clips: ``bikes.mp4`` (hard cuts) and every clip that ``MANIFEST.csv`` (in ``--data``) marks as a
moving camera. Per clip, the first ``--tuning-frames`` frames choose the kernels
(``streaming.tuning.tune_granularity``) and warm every contender up; they are never timed.
The fallback's break-evens are measured once per kernel choice (``tune_fallback``, synthetic
deltas). Then the remaining frames run in interleaved blocks (every contender takes the same
block in turn, each delta engine's stream going on across blocks), so load drift hits all
alike; speedups are medians of per-block ratios (each block against the same block of the
other contender). Writes the table between the markers of ``--out`` (the rest of the file is
kept) and, with ``--json``, every figure. Progress on stderr.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from deltanet.cli import ArgumentParser, CliError, fail, positive_int

BEGIN, END = "<!-- fallback_eval:begin -->", "<!-- fallback_eval:end -->"
CONTENDERS = ("fallback", "no_fallback", "dense_engine", "tflite")


def clips_of(data: Path) -> list[tuple[str, str]]:
    """``[(file, camera)]``: bikes.mp4 (hard cuts) and the manifest's moving-camera clips."""
    manifest = data / "MANIFEST.csv"
    if not manifest.is_file():
        raise CliError(f"--data: no MANIFEST.csv in {data}")
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = [("bikes.mp4", "hard cuts")]
    out += [(r["file"], "moving") for r in rows if r["camera"] == "moving" and r["file"] != "bikes.mp4"]
    missing = [f for f, _ in out if not (data / f).is_file()]
    if missing:
        raise CliError(f"--data: missing clips {missing}")
    return out


def _stats(ms) -> dict:
    a = np.asarray(ms)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90))}


def evaluate_clip(plan, tflite, frames: np.ndarray, tuning: int, threads: int, block: int, keras_logits: np.ndarray) -> dict:
    """Every contender on ``frames[tuning:]`` after tuning and warming up on ``frames[:tuning]``;
    ``keras_logits``: the Keras delta model's per-frame logits of ``frames[tuning:]`` as one clip."""
    from streaming.bench import rel_logit_error

    from streaming.engine import DeltaEngine
    from streaming.tuning import tune as tune_engine

    tune, timed = frames[:tuning], frames[tuning:]
    on = DeltaEngine(plan, threads=threads)
    t0 = time.perf_counter()
    tune_engine(on, tune)  # kernel choice on the tuning frames, then the break-evens
    tune_s = time.perf_counter() - t0
    off = on.clone(fallback=False)
    dense = DeltaEngine(plan, mode="dense", threads=threads)
    stats = {"fallback": [], "no_fallback": []}
    logits = {name: [] for name in CONTENDERS}

    def engine_step(engine, key):
        def step(f):
            out, s = engine.step(f)
            stats[key].append(s)
            return out

        return step

    run = {"fallback": engine_step(on, "fallback"), "no_fallback": engine_step(off, "no_fallback"),
           "dense_engine": lambda f: dense.step(f)[0], "tflite": tflite}  # fmt: skip
    for fn in run.values():
        for f in tune:
            fn(f)
    for e in (on, off, dense):
        e.reset()
    for v in stats.values():
        v.clear()
    times = {name: [] for name in CONTENDERS}
    blocks = {name: [] for name in CONTENDERS}
    for b0 in range(0, len(timed), block):
        for name, fn in run.items():
            t = []
            for f in timed[b0 : b0 + block]:
                t1 = time.perf_counter()
                out = fn(f)
                t.append((time.perf_counter() - t1) * 1e3)
                logits[name].append(out)
            times[name] += t
            blocks[name].append(float(np.median(t[1:] if b0 == 0 and len(t) > 1 else t)))
    later = slice(1, None)  # the first timed frame is each delta engine's keyframe
    on_stats = stats["fallback"][later]
    fell = np.array([s.fallback_layers for s in on_stats])
    a, b = np.stack(logits["fallback"]), np.stack(logits["no_fallback"])

    def paired(x, y):
        return float(np.median(np.asarray(blocks[x]) / np.asarray(blocks[y])))

    return {
        "frames_timed": len(timed),
        "frames_tuning": len(tune),
        "tuning_s": tune_s,  # kernel choice and break-evens
        "breakeven": {k: (v if math.isfinite(v) else None) for k, v in on.breakeven.items()},  # None: never
        "ms_per_frame": {name: _stats(t[1:] if name in stats else t) for name, t in times.items()},
        "speedup": {  # medians of per-block ratios: how much faster the first is
            "fallback_vs_tflite": 1.0 / paired("fallback", "tflite"),
            "no_fallback_vs_tflite": 1.0 / paired("no_fallback", "tflite"),
            "fallback_vs_no_fallback": 1.0 / paired("fallback", "no_fallback"),
            "dense_engine_vs_tflite": 1.0 / paired("dense_engine", "tflite"),
        },
        "mac_density": float(np.mean([s.mac_density for s in on_stats])),
        "executed_mac_density": {k: float(np.mean([s.executed_mac_density for s in v[later]])) for k, v in stats.items()},
        "frames_with_fallback": int(fell.any(axis=1).sum()),
        "fallback_layer_frames": int(fell.sum()),
        "layers": len(on.layer_names),
        "max_rel_logit_diff_fallback_vs_not": float(rel_logit_error(a, b).max()),
        "top1_agreement_fallback_vs_not": float(np.mean(a.argmax(1) == b.argmax(1))),
        "vs_keras": {k: {"max_rel_logit_error": float(rel_logit_error(v, keras_logits).max()),
                         "top1_agreement": float(np.mean(v.argmax(1) == keras_logits.argmax(1)))}
                     for k, v in (("fallback", a), ("no_fallback", b))},  # fmt: skip
    }


def format_table(results: dict) -> str:
    rows = ["| clip | camera | frames | MAC density | frames with fallback (layer-frames) | ms/frame median / p90: "
            "fallback on | fallback off | dense engine | TFLite fp32 | on vs TFLite | off vs TFLite | on vs off | dense vs TFLite |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for clip, r in results["clips"].items():
        ms, sp = r["ms_per_frame"], r["speedup"]
        cell = [f"{ms[c]['median']:.2f} / {ms[c]['p90']:.2f}" for c in CONTENDERS]
        rows.append(f"| {clip} | {r['camera']} | {r['frames_timed']} | {r['mac_density']:.3f} | "
                    f"{r['frames_with_fallback']} ({r['fallback_layer_frames']}) | " + " | ".join(cell) + " | "
                    f"{sp['fallback_vs_tflite']:.2f}x | {sp['no_fallback_vs_tflite']:.2f}x | {sp['fallback_vs_no_fallback']:.2f}x | "
                    f"{sp['dense_engine_vs_tflite']:.2f}x |")  # fmt: skip
    rows += ["", "| clip | vs Keras: max rel. logit error / top-1 agreement: fallback on | fallback off | float32 floor (XLA vs TF) "
             "| on vs off: max rel. logit difference / top-1 agreement |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for clip, r in results["clips"].items():
        k, f = r["vs_keras"], r["float32_floor"]
        rows.append(f"| {clip} | {k['fallback']['max_rel_logit_error']:.2e} / {k['fallback']['top1_agreement']:.3f} | "
                    f"{k['no_fallback']['max_rel_logit_error']:.2e} / {k['no_fallback']['top1_agreement']:.3f} | "
                    f"{f['max_rel_logit_error']:.2e} / {f['top1_agreement']:.3f} | "
                    f"{r['max_rel_logit_diff_fallback_vs_not']:.2e} / {r['top1_agreement_fallback_vs_not']:.3f} |")  # fmt: skip
    m = results["machine"]
    head = (f"Measured {results['date']} on {m['host']} ({m['cpus']} CPUs), load average {m['load_before'][0]:.1f} before / "
            f"{m['load_after'][0]:.1f} after{' -- LOADED: read ratios only, re-run on a quiet machine' if m['loaded'] else ''}; "
            f"model `{results['model']}`, {results['threads']} threads for every contender, BLAS 1 thread; speedups are "
            f"medians of per-block ratios ({results['block']} frames a block), > 1 means the first is faster.")  # fmt: skip
    return "\n".join([head, "", *rows, "", f"```bash\n{results['command']}\n```"])


def write_section(path: Path, text: str) -> None:
    """Replace the text between the markers of ``path`` (or append them); atomic."""
    old = path.read_text() if path.is_file() else "# Dense fallback\n"
    section = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + section + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = ArgumentParser(prog="scripts/fallback_eval.py", description="Dense fallback on scene cuts and moving cameras.")
    p.add_argument("--model", default="/work/models/seed-0.keras", help="a trained clip model (default /work/models/seed-0.keras)")
    p.add_argument("--data", default="/work/shared/data/real", help="folder with MANIFEST.csv and the clips (default /work/shared/data/real)")
    p.add_argument("--clips", default="", help="comma-separated clip files to run instead (default: bikes.mp4 + the moving ones)")
    p.add_argument("--frames", type=positive_int, default=300, help="frames per clip at most, tuning included (default 300)")
    p.add_argument("--tuning-frames", type=positive_int, default=30, help="first frames: kernel choice and warm-up, never timed (default 30)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for every contender (default 2)")
    p.add_argument("--block", type=positive_int, default=25, help="frames per interleaved block (default 25)")
    p.add_argument("--out", default="docs/fallback.md", help="markdown file whose marked section gets the table (default docs/fallback.md)")
    p.add_argument("--json", default=None, help="also write every figure here (default: none)")
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        data = Path(args.data)
        clips = [(c, "given") for c in args.clips.split(",") if c] or clips_of(data)
        if not Path(args.model).is_file():
            raise CliError(f"--model: no such file: {args.model}")
        from deltanet.cli import import_tensorflow_quietly

        import_tensorflow_quietly()
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import deltanet
        from streaming.bench import read_frames
        from streaming.bench_exactness import float32_floor
        from streaming.contenders import tflite_runner
        from streaming.convert import to_plan

        clip_model = deltanet.load_model(args.model)
        plan = to_plan(clip_model)
        tflite = tflite_runner(deltanet.per_frame_model(clip_model), args.threads, plan.input_shape)
        load_before = os.getloadavg()
        results = {"model": args.model, "threads": args.threads, "block": args.block, "clips": {},
                   "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "command": "python scripts/fallback_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])}  # fmt: skip
        for name, camera in clips:
            frames = read_frames(str(data / name), args.frames, plan.input_shape)
            if len(frames) <= args.tuning_frames + 1:
                raise CliError(f"{name}: {len(frames)} frames, need more than --tuning-frames + 1")
            log(f"{name}: {len(frames)} frames ({args.tuning_frames} for tuning)")
            keras_logits, floor = float32_floor(clip_model, frames[args.tuning_frames :])
            r = evaluate_clip(plan, tflite, frames, args.tuning_frames, args.threads, args.block, keras_logits)
            r["float32_floor"] = floor
            r["camera"] = camera
            results["clips"][name] = r
            log(f"  fallback {r['ms_per_frame']['fallback']['median']:.2f} ms, off {r['ms_per_frame']['no_fallback']['median']:.2f} ms, "
                f"TFLite {r['ms_per_frame']['tflite']['median']:.2f} ms; {r['frames_with_fallback']} frames fell back")  # fmt: skip
        load_after = os.getloadavg()
        cpus = os.cpu_count() or 1
        results["machine"] = {"host": platform.node(), "cpus": cpus, "load_before": load_before, "load_after": load_after,
                              "loaded": max(load_before[0], load_after[0]) > 0.5 * cpus}  # fmt: skip
    except CliError as e:
        return fail(p.prog, str(e))
    write_section(Path(args.out), format_table(results))
    if args.json:
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=float))
        os.replace(tmp, args.json)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
