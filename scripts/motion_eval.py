"""Moving cameras (issue #14): MAC density, agreement and speed with and without motion compensation.

For every clip: the default delta engine (``--motion none``), the motion-compensated engine
(``MotionEngine``, ``--motion global``) and TFLite fp32 run the same frames, interleaved in
blocks (same threads, after warm-up); both engines are compared with the dense per-frame Keras
model (each frame alone, delta layers as identities: what the network computes without deltas).

    python scripts/motion_eval.py --model /work/models/seed-0.keras --clips ../shared/data/real \\
        --extra ../shared/data/tree.avi --threads 2 --json motion_eval.json --markdown motion_eval.md

Clips come from ``MANIFEST.csv`` of ``--clips`` (its measured global motion sorts them into
moving >= 0.3 px/frame, static: ``camera == static``, the rest "some motion"); ``--extra`` files
are added with motion measured here by the tracker. Progress on stderr, the table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltanet.cli import ArgumentParser, CliError, fail, positive_int  # noqa: E402

MOVING = 0.3  # px/frame at 160 px wide (the manifest's unit): the "moving camera" clips


def read_clip(path: str, n: int, shape) -> np.ndarray:
    """Up to ``n`` frames of a video as model inputs."""
    from streaming.preprocess import to_model_input
    from streaming.sources import open_source

    frames = []
    with open_source(path, live=False) as src:
        for frame in src:
            frames.append(to_model_input(frame.image, shape))
            if len(frames) >= n:
                break
    if len(frames) < 2:
        raise CliError(f"{path}: need at least 2 frames, got {len(frames)}")
    return np.stack(frames)


def clip_list(clips_dir: str | None, extra: list[str], kinds: set[str]) -> list[dict]:
    rows = []
    if clips_dir:
        manifest = Path(clips_dir) / "MANIFEST.csv"
        if not manifest.is_file():
            raise CliError(f"--clips: no MANIFEST.csv in {clips_dir}")
        with open(manifest, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                motion = float(r["global_motion_px_per_frame_at_160w"])
                kind = "moving" if motion >= MOVING else "static" if r["camera"] == "static" else "some"
                if kind in kinds:
                    rows.append({"file": str(Path(clips_dir) / r["file"]), "kind": kind, "manifest_motion": motion})
    for p in extra:
        if not Path(p).is_file():
            raise CliError(f"--extra: no such file: {p}")
        rows.append({"file": p, "kind": "extra", "manifest_motion": None})
    return rows


def summarize(logits, stats, reference) -> dict:
    from streaming.bench import rel_logit_error

    later = stats[1:]  # frame 0 is the dense keyframe of both engines
    err = rel_logit_error(logits, reference)
    out = {
        "mac_density": float(np.mean([s.mac_density for s in later])),
        "executed_mac_density": float(np.mean([s.executed_mac_density for s in later])),
        "top1_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
        "max_rel_logit_error": float(err.max()),
        "median_rel_logit_error": float(np.median(err)),
    }
    if hasattr(later[0], "dx"):
        out["camera_px_per_frame"] = float(np.mean([np.hypot(s.dx, s.dy) for s in later]))
        out["frames_on_canvas"] = float(np.mean([s.on_canvas for s in later]))
        out["canvas_refreshes"] = int(sum(s.refresh for s in later))  # canvas keyframes and scene cuts
        out["motion_ms_median"] = float(np.median([s.motion_ms for s in later]))
    return out


def evaluate(model: str, rows: list[dict], *, frames: int, threads: int, block: int, log) -> dict:
    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import deltanet
    from streaming.contenders import tflite_runner
    from streaming.canvas import MotionEngine
    from streaming.convert import to_plan
    from streaming.engine import DeltaEngine
    from streaming.tuning import tune_granularity

    clip_model = deltanet.load_model(model)
    plan = to_plan(clip_model)
    shape = plan.input_shape
    per_frame = deltanet.per_frame_model(clip_model)
    tflite = tflite_runner(per_frame, threads, shape)
    clips = [(r, read_clip(r["file"], frames, shape)) for r in rows]
    tune_on = next((c for r, c in clips if r["kind"] == "moving"), clips[0][1])
    gran = tune_granularity(plan, tune_on[:60], threads=threads)
    plain = DeltaEngine(plan, granularity=gran, threads=threads)
    compensated = MotionEngine(plain.clone())
    plain.warmup()
    compensated.warmup()
    results = []
    for r, clip in clips:
        name = Path(r["file"]).name
        reference = per_frame.predict(clip.astype(np.float32), batch_size=32, verbose=0).astype(np.float32)
        for f in clip[:10]:
            tflite(f)
        plain.reset()
        compensated.reset()
        out = {"plain": ([], [], []), "global": ([], [], []), "tflite": ([], [], [])}
        runs = {"plain": plain.step, "global": compensated.step, "tflite": lambda f: (tflite(f), None)}
        clock = time.perf_counter
        for b0 in range(0, len(clip), block):
            for key, step in runs.items():
                for f in clip[b0 : b0 + block]:
                    t0 = clock()
                    logits, st = step(f)
                    out[key][2].append((clock() - t0) * 1e3)
                    out[key][0].append(logits)
                    out[key][1].append(st)
        res = {"clip": name, "kind": r["kind"], "manifest_motion": r["manifest_motion"], "frames": len(clip)}
        for key in ("plain", "global"):
            logits, stats, ms = out[key]
            res[key] = summarize(np.stack(logits), stats, reference)
            res[key]["ms_median"] = float(np.median(ms[1:]))
        res["bit_identical"] = bool(np.array_equal(np.stack(out["plain"][0]), np.stack(out["global"][0])))
        res["tflite_ms_median"] = float(np.median(out["tflite"][2]))
        res["tflite_top1_agreement"] = float(np.mean(np.stack(out["tflite"][0]).argmax(1) == reference.argmax(1)))
        results.append(res)
        log(f"{name}: density {res['plain']['mac_density']:.3f} -> {res['global']['mac_density']:.3f}, top-1 "
            f"{res['plain']['top1_agreement']:.3f} / {res['global']['top1_agreement']:.3f}, ms {res['plain']['ms_median']:.2f} / "
            f"{res['global']['ms_median']:.2f} (TFLite {res['tflite_ms_median']:.2f})")  # fmt: skip
    return {
        "model": model, "threads": threads, "frames_per_clip": frames, "granularity_tuned_on": "the first moving clip (60 frames)",
        "reference": "the dense per-frame Keras model (deltanet.per_frame_model: each frame alone, delta layers as identities)",
        "load_average_at_end": os.getloadavg()[0], "clips": results,
    }  # fmt: skip


def estimator_cost(rows: list[dict], frames: int, repeats: int = 3) -> list[dict]:
    """Median ``CameraTracker.update`` time per frame (ms) on each clip at 112x112, best of ``repeats`` passes."""
    from streaming.motion import CameraTracker

    out = []
    # Warm-up before anything is timed: the first ~2 s of tracker calls in a process ran ~1.5x
    # slower than later ones on this machine (0.30 vs 0.20 ms, same clip, best of 3 passes each).
    warm = read_clip(rows[0]["file"], frames, (112, 112, 3))
    t_end = time.perf_counter() + 3.0
    while time.perf_counter() < t_end:
        tracker = CameraTracker(warm.shape[1:3])
        for f in warm:
            tracker.update(f)
    for r in rows:
        clip = read_clip(r["file"], frames, (112, 112, 3))
        best = np.inf
        for _ in range(repeats):
            tracker, ms = CameraTracker(clip.shape[1:3]), []
            for f in clip:
                t0 = time.perf_counter()
                tracker.update(f)
                ms.append((time.perf_counter() - t0) * 1e3)
            best = min(best, float(np.median(ms[1:])))
        out.append({"clip": Path(r["file"]).name, "kind": r["kind"], "tracker_ms_median": best})
    return out


def alignment_bound(rows: list[dict], frames: int, level: int = 8, search: int = 3) -> list[dict]:
    """How much any integer global alignment could save, at the input: the fraction of pixels whose
    value changes by more than ``level`` (any channel) from the previous frame, as is, after the
    tracker's alignment, and after the best integer shift within ``search`` px (an oracle)."""
    from streaming.motion import CameraTracker

    out = []
    for r in rows:
        clip = read_clip(r["file"], frames, (112, 112, 3))
        tracker = CameraTracker(clip.shape[1:3])
        motions = [tracker.update(f) for f in clip]
        clip = clip.astype(np.int16)
        h, w = clip.shape[1:3]
        m = search + 8  # compare the same interior whatever the shift

        def changed(t: int, dx: int, dy: int) -> float:
            a, b = clip[t - 1], clip[t]  # b(x) ~ a(x - d)
            return float(np.mean(np.abs(b[m : h - m, m : w - m] - a[m - dy : h - m - dy, m - dx : w - m - dx]).max(axis=2) > level))

        plain, tracked, best = [], [], []
        for t in range(1, len(clip)):
            d = (motions[t].offset_x - motions[t - 1].offset_x, motions[t].offset_y - motions[t - 1].offset_y)
            if motions[t].refresh or max(map(abs, d)) > search:
                continue
            plain.append(changed(t, 0, 0))
            tracked.append(changed(t, *d))
            best.append(min(changed(t, x, y) for x in range(-search, search + 1) for y in range(-search, search + 1)))
        out.append({"clip": Path(r["file"]).name, "kind": r["kind"], "changed_plain": float(np.mean(plain)),
                    "changed_tracker_aligned": float(np.mean(tracked)), "changed_best_integer_shift": float(np.mean(best))})  # fmt: skip
    return out


def long_pan(model: str, image_path: str, frames: int, threads: int, log) -> dict:
    """Memory and re-centring over a long synthetic pan (a circular path over one large real frame)."""
    import resource
    import tracemalloc

    import deltanet
    from streaming.canvas import MotionEngine
    from streaming.convert import to_plan
    from streaming.engine import DeltaEngine

    big = read_clip(image_path, 2, (720, 1280, 3))[0]
    engine = MotionEngine(DeltaEngine(to_plan(deltanet.load_model(model)), threads=threads))
    engine.warmup()
    h, w = engine.input_shape[:2]
    samples, refreshes = [], 0
    tracemalloc.start()
    for t in range(frames):
        a = 2 * np.pi * t / 2000  # a 2000-frame circle of radius 300 px: ~0.94 px/frame
        y, x = int(300 + 250 * np.sin(a)), int(580 + 450 * np.cos(a))
        refreshes += engine.step(np.ascontiguousarray(big[y : y + 2 * h : 2, x : x + 2 * w : 2]))[1].refresh
        if (t + 1) % max(1, frames // 10) == 0:
            traced = tracemalloc.get_traced_memory()[0]
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            samples.append({"frame": t + 1, "python_heap_kb": traced / 1024, "max_rss_mb": rss})
            log(f"pan frame {t + 1}: Python heap {traced / 1024:.0f} KB, max RSS {rss:.0f} MB, {refreshes} canvas keyframes")
    tracemalloc.stop()
    return {"frames": frames, "canvas_refreshes": refreshes, "samples": samples}


def markdown(result: dict) -> str:
    head = ("| clip | kind | camera px/frame (manifest, 160w) | MAC density none | MAC density global | ratio | top-1 none | "
            "top-1 global | max rel. logit err none | global | ms none | ms global | ms TFLite | speedup vs TFLite none | global | "
            "frames on canvas | canvas keyframes | motion ms | logits bit-identical |")  # fmt: skip
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in result["clips"]:
        a, b = r["plain"], r["global"]
        mm = "-" if r["manifest_motion"] is None else f"{r['manifest_motion']:.2f}"
        lines.append(
            f"| {r['clip']} | {r['kind']} | {mm} | {a['mac_density']:.3f} | {b['mac_density']:.3f} | "
            f"{b['mac_density'] / a['mac_density']:.2f} | {a['top1_agreement']:.3f} | {b['top1_agreement']:.3f} | "
            f"{a['max_rel_logit_error']:.2g} | {b['max_rel_logit_error']:.2g} | {a['ms_median']:.2f} | {b['ms_median']:.2f} | "
            f"{r['tflite_ms_median']:.2f} | {r['tflite_ms_median'] / a['ms_median']:.2f} | {r['tflite_ms_median'] / b['ms_median']:.2f} | "
            f"{b['frames_on_canvas']:.2f} | {b['canvas_refreshes']} | {b['motion_ms_median']:.3f} | {'yes' if r['bit_identical'] else 'no'} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.partial-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="scripts/motion_eval.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a trained clip model (.keras)")
    p.add_argument("--clips", default=None, help="a folder with MANIFEST.csv (e.g. ../shared/data/real)")
    p.add_argument("--kinds", default="moving,static", help="which manifest clips: moving, static, some (comma-separated)")
    p.add_argument("--extra", action="append", default=[], help="another video (repeatable), e.g. ../shared/data/tree.avi")
    p.add_argument("--frames", type=positive_int, default=300, help="frames per clip at most")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for the engines and TFLite")
    p.add_argument("--block", type=positive_int, default=25, help="frames per interleaved timing block")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--markdown", default=None, help="write the table here")
    p.add_argument("--estimator-only", action="store_true", help="only time the camera tracker on each clip")
    p.add_argument("--alignment-bound", action="store_true",
                   help="only measure the input pixels that change, as is / tracker-aligned / best integer shift (an oracle)")
    p.add_argument("--long-pan", type=positive_int, default=None, metavar="FRAMES",
                   help="only run a long synthetic pan over the first frame of the first clip (memory and re-centring)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    if not kinds <= {"moving", "static", "some"}:
        return fail("motion_eval", f"--kinds: unknown kind(s) {sorted(kinds - {'moving', 'static', 'some'})}")
    try:
        if not Path(args.model).is_file():
            raise CliError(f"--model: no such file: {args.model}")
        rows = clip_list(args.clips, args.extra, kinds)
        if not rows:
            raise CliError("no clips: give --clips and/or --extra")
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        if args.estimator_only or args.alignment_bound or args.long_pan:
            if args.long_pan:
                result = long_pan(args.model, rows[0]["file"], args.long_pan, args.threads, log)
            else:
                result = (estimator_cost if args.estimator_only else alignment_bound)(rows, args.frames)
            text = json.dumps(result, indent=1)
            if args.json:
                _write_atomic(args.json, text)
            print(text)
            return 0
        result = evaluate(args.model, rows, frames=args.frames, threads=args.threads, block=args.block, log=log)
    except CliError as e:
        return fail("motion_eval", str(e))
    table = markdown(result)
    if args.json:
        _write_atomic(args.json, json.dumps(result, indent=1))
    if args.markdown:
        _write_atomic(args.markdown, table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
