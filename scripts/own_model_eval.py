"""Your own model on your own footage: delta variants against the dense teacher, as users run them.

For a pretrained clip model (``scripts/fer_model.py`` output, or any ``pretrained_clip_model``)
and held-out videos, measures at matched MAC densities:

* ``no calibration``: one uniform threshold for every delta layer (solved for the density);
* ``TEAL``, ``TEAL-w`` (TEAL's allocation, thresholds shaped per channel by the weights), ``CHESS``:
  training-free calibration (``deltanet.calibrate``);
* each ``--distilled NAME=PATH`` model (``training.distill``), its thresholds scaled by one factor
  to the density (``deltanet.calibrate.match_density``).

Thresholds are set on clips of ``--calib-videos`` (never the evaluated ones). Each variant then
runs in the streaming engine over every ``--videos`` file from its first frame (RGB frames,
``--crop`` cut out, resized and made gray as in ``streaming.live``) and is compared per frame
with the dense teacher (Keras): top-1 agreement, logit RMSE, MAC density (frames after the
first, zeros skipped). Timing: the engine (kernels tuned per layer) against the teacher in
TFLite fp32 and full-integer int8 (post-training quantization, representative frames from
``--calib-videos``), same threads, after warm-up, in interleaved blocks. Timings taken on a
loaded machine are provisional.

Example::

    python scripts/own_model_eval.py --teacher runs/fer_clip.keras --distilled distilled=runs/fer_distilled.keras \\
        --calib-videos <distil videos> --videos <held-out videos> --crop 262,45,115,115 --json runs/own_model.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deltanet.cli import ArgumentParser, CliError, add_crop_argument, fail, import_tensorflow_quietly, positive_int  # noqa: E402

# variant label -> (calibrate method, TEAL's channel shape)
METHODS = {"no calibration": ("uniform", "uniform"), "TEAL": ("teal", "uniform"), "TEAL-w": ("teal", "weights"),
           "CHESS": ("chess", "uniform")}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="scripts/own_model_eval.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="the pretrained clip model (.keras, dense)")
    p.add_argument("--distilled", action="append", default=[], metavar="NAME=PATH", help="a training.distill model (repeatable)")
    p.add_argument("--videos", nargs="+", required=True, help="held-out videos to evaluate on")
    p.add_argument("--calib-videos", nargs="+", required=True, help="videos for calibration / density matching / int8 representative data")
    add_crop_argument(p)
    p.add_argument("--target-density", default="0.15", help="MAC density target(s), comma-separated (default 0.15)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"training-free variants, comma-separated (default {','.join(METHODS)}; '' for none)")
    p.add_argument("--frames", type=positive_int, default=16, help="frames per calibration clip (default 16)")
    p.add_argument("--calib-clips", type=positive_int, default=32, help="calibration clips (default 32)")
    p.add_argument("--sweep-clips", type=positive_int, default=8, help="clips of the teal/chess error sweeps (default 8)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for every timed runtime (default 2)")
    p.add_argument("--block", type=positive_int, default=25, help="frames per interleaved timing block (default 25)")
    p.add_argument("--json", default=None, help="write all rows here")
    return p


def _tflite(per_frame, calib_frames: np.ndarray | None, threads: int):
    """A TFLite interpreter of ``per_frame``: fp32, or full-integer int8 calibrated on ``calib_frames`` -- the very
    conversion ``streaming.bench`` times (``streaming.contenders``: ``from_keras_model``, whose graph XNNPACK runs
    in one piece; a concrete-function conversion kept the weights as variable reads and ran ~30x slower)."""
    from streaming.contenders import tflite_contender, tflite_flatbuffer

    shape = tuple(per_frame.input.shape[1:])
    return tflite_contender(tflite_flatbuffer(per_frame, shape, calibration=calib_frames), threads).run


def _compare(logits: np.ndarray, teacher: np.ndarray) -> dict:
    return {"top1_agreement": float(np.mean(logits.argmax(-1) == teacher.argmax(-1))),
            "logit_rmse": float(np.sqrt(np.mean((logits - teacher) ** 2)))}


def _engine_pass(plan, videos: list[np.ndarray]) -> tuple[list[np.ndarray], float, float]:
    """Per-video engine logits (from each video's first frame), the MAC density (``deltanet.density``:
    non-zero deltas, MAC-weighted; what Keras measures) and the executed MAC density (what the chosen
    kernels multiplied: depthwise kernels multiply every channel of an active pixel, and a layer that
    falls back runs dense), both over the frames after each video's first."""
    from deltanet import density
    from streaming.engine import DeltaEngine

    engine = DeltaEngine(plan, granularity="element")
    logits, executed, nonzero = [], [], []
    for frames in videos:
        engine.reset()
        out, stats = engine.run(frames)
        logits.append(out)
        executed += [s.executed_macs for s in stats[1:]]
        nonzero += [s.layer_mac_density for s in stats[1:]]
    per_layer = np.mean(executed, axis=0) / engine.dense_macs
    return (logits, density.mac_density(engine.dense_macs, np.mean(nonzero, axis=0)),
            density.mac_density(engine.dense_macs, per_layer))


def _time(contenders: dict, frames: np.ndarray, block: int) -> dict:
    """Median ms per frame of each contender, interleaved in blocks, after a warm-up."""
    for fn in contenders.values():
        for f in frames[:10]:
            fn(f)
    times = {name: [] for name in contenders}
    clock = time.perf_counter
    for b0 in range(0, len(frames), block):
        for name, fn in contenders.items():
            for f in frames[b0 : b0 + block]:
                t0 = clock()
                fn(f)
                times[name].append((clock() - t0) * 1e3)
    return {name: float(np.median(t[1:])) for name, t in times.items()}


def run(args, log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    import_tensorflow_quietly()

    import deltanet
    from deltanet import calibrate as cal
    from deltanet.pretrained import load_frame_model
    from streaming.convert import to_plan
    from streaming.engine import DeltaEngine
    from streaming.preprocess import crop_image, to_model_input
    from streaming.tuning import tune_granularity
    from training.footage import load_footage, sample_clips
    from training.video import read_video

    targets = [float(t) for t in args.target_density.split(",")]
    teacher_clip = deltanet.load_model(args.teacher)
    teacher, info = load_frame_model(args.teacher)
    shape = tuple(int(s) for s in teacher.input.shape[1:])
    calib = load_footage(args.calib_videos, shape, crop=args.crop)
    clips = sample_clips(calib, args.calib_clips, args.frames, np.random.default_rng(0))
    batches = [clips[i : i + 8] for i in range(0, len(clips), 8)]
    raw = [np.stack([crop_image(f, args.crop) for f in read_video(v)]) for v in args.videos]
    inputs = [np.stack([to_model_input(f, shape) for f in v]) for v in raw]
    reference = [np.asarray(teacher.predict(x.astype(np.float32), verbose=0)) for x in inputs]
    ref_all = np.concatenate(reference)
    n_frames = len(ref_all)
    changes = int(sum(np.sum(np.diff(r.argmax(-1)) != 0) for r in reference))
    log(f"{n_frames} frames of {len(raw)} held-out video(s); the dense teacher changes its label {changes} times")

    exact_plan = to_plan(teacher_clip)
    _, exact_density, exact_executed = _engine_pass(exact_plan, raw)
    rows = [{"variant": "dense teacher, exact deltas", "target": None, "mac_density": exact_density,
             "executed_mac_density": exact_executed, "top1_agreement": 1.0,
             "logit_rmse": 0.0, "plan": exact_plan}]
    for target in targets:
        for label, method in ((k, v) for k, v in METHODS.items() if k in args.methods.split(",")):
            model = cal.prepare_model(teacher_clip)
            log(f"calibrating {label} for {target} ...")
            name, channels = method
            res = cal.calibrate(model, batches, target, name, sweep_clips=args.sweep_clips, teal_channels=channels)
            log(f"  calibration clips: MAC density {res.mac_density:.4f}, agreement {res.top1_agreement:.4f} ({res.model_runs} model runs)")
            rows.append({"variant": label, "target": target, "model": model})
        for spec in args.distilled:
            name, _, path = spec.partition("=")
            model = deltanet.load_model(path)
            cal.match_density(model, batches, target)
            rows.append({"variant": name, "target": target, "model": model})
    for row in rows:
        plan = row.get("plan") or to_plan(row.pop("model"))
        row["plan"] = plan
        logits, row["mac_density"], row["executed_mac_density"] = _engine_pass(plan, raw)
        row.update(_compare(np.concatenate(logits), ref_all))
        log(f"{row['variant']} @ {row['target']}: agreement {row['top1_agreement']:.4f}, logit RMSE {row['logit_rmse']:.3f}, "
            f"MAC density {row['mac_density']:.4f} (executed {row['executed_mac_density']:.4f})")

    per_frame = deltanet.per_frame_model(teacher_clip)
    rep = np.concatenate([f.frames for f in calib])
    tfl = {"tflite_fp32": _tflite(per_frame, None, args.threads), "tflite_int8": _tflite(per_frame, rep, args.threads)}
    int8 = _compare(np.concatenate([np.stack([tfl["tflite_int8"](f) for f in x]) for x in inputs]), ref_all)
    timing_frames = np.concatenate(inputs)
    try:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=args.threads)
    except ImportError:
        limit = None
    for row in rows:
        plan = row.pop("plan")
        gran = tune_granularity(plan, timing_frames[:60], threads=args.threads)
        engine = DeltaEngine(plan, granularity=gran, threads=args.threads)
        engine.warmup()
        # the timed stream runs through every held-out video back to back, as one camera would
        ms = _time({"engine": lambda f: engine.step(f), **tfl}, timing_frames, args.block)
        row.update(engine_ms=ms["engine"], tflite_fp32_ms=ms["tflite_fp32"], tflite_int8_ms=ms["tflite_int8"],
                   speedup_vs_tflite_fp32=ms["tflite_fp32"] / ms["engine"], speedup_vs_tflite_int8=ms["tflite_int8"] / ms["engine"])
        log(f"{row['variant']} @ {row['target']}: engine {ms['engine']:.3f} ms, TFLite fp32 {ms['tflite_fp32']:.3f} ms, "
            f"int8 {ms['tflite_int8']:.3f} ms")
    if limit is not None:
        limit.restore_original_limits()
    result = {"teacher": args.teacher, "videos": args.videos, "calib_videos": args.calib_videos,
              "crop": args.crop.spec() if args.crop else None, "frames": n_frames, "teacher_label_changes": changes,
              "threads": args.threads, "tflite_int8": int8, "rows": rows,
              "dense_macs_per_frame": int(DeltaEngine(to_plan(teacher_clip)).dense_macs.sum())}
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def markdown(r: dict) -> str:
    lines = ["| variant | target | MAC density | executed MAC density | top-1 agreement | logit RMSE | engine ms | TFLite fp32 ms | TFLite int8 ms | vs fp32 | vs int8 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        t = "-" if row["target"] is None else f"{row['target']:g}"
        lines.append(f"| {row['variant']} | {t} | {row['mac_density']:.3f} | {row['executed_mac_density']:.3f} | {row['top1_agreement']:.3f} | {row['logit_rmse']:.3f} | "
                     f"{row['engine_ms']:.3f} | {row['tflite_fp32_ms']:.3f} | {row['tflite_int8_ms']:.3f} | "
                     f"{row['speedup_vs_tflite_fp32']:.2f}x | {row['speedup_vs_tflite_int8']:.2f}x |")
    q = r["tflite_int8"]
    lines.append(f"\nTFLite int8 against the dense teacher: top-1 agreement {q['top1_agreement']:.3f}, logit RMSE {q['logit_rmse']:.3f}. "
                 f"{r['frames']} held-out frames, {r['teacher_label_changes']} label changes of the teacher, {r['threads']} threads.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for t in args.target_density.split(","):
            if not 0 < float(t) < 1:
                raise ValueError
    except ValueError:
        return fail(parser.prog, f"--target-density: expected numbers in (0, 1), got {args.target_density!r}")
    unknown = [m for m in args.methods.split(",") if m and m not in METHODS]
    if unknown:
        return fail(parser.prog, f"--methods: unknown variant {unknown[0]!r}; choose from {','.join(METHODS)}")
    missing = [p for p in [args.teacher, *args.videos, *args.calib_videos, *(d.partition("=")[2] for d in args.distilled)] if not Path(p).exists()]
    if missing:
        return fail(parser.prog, f"no such file: {missing[0]}")
    try:
        run(args)
    except CliError as e:
        return fail(parser.prog, str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
