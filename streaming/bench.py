"""``python -m streaming.bench``: the delta engine against dense runtimes, side by side, same frames.

Contenders, all fed the same decoded frames (``--crop`` cut out, resized once to the model
input, gray for a one-channel model: ``streaming.preprocess``):

* ``delta_engine``: ``DeltaEngine`` (numba sparse-delta kernels);
* ``dense_engine``: the same engine with delta layers as identities and dense kernels;
* ``keras``: the model's dense per-frame equivalent as a compiled ``tf.function`` at batch 1;
* ``tflite``: that same per-frame model in the TFLite interpreter (XNNPACK).

Every contender runs with the same thread count (numba, TensorFlow intra-op, TFLite,
BLAS), after a warm-up, in interleaved blocks of frames so that machine-load drift hits
all of them alike. Exactness (``max_rel_logit_error``, ``top1_agreement``) compares the
delta engine with the Keras *delta* model (its per-frame logits on the whole clip, state
included); ``float32_floor`` is the same comparison of Keras against itself, XLA against
TensorFlow's kernels, i.e. how far two correct float32 implementations drift apart once a
threshold decision flips. Timing claims belong to this script, never to tests.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from deltanet.cli import ArgumentParser, CliError, add_crop_argument, add_motion_argument, fail, positive_int

CONTENDERS = ("delta_engine", "dense_engine", "keras", "tflite")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m streaming.bench", description="Benchmark delta inference against dense runtimes on a video.")
    p.add_argument("--model", required=True, help="a trained clip model (.keras)")
    p.add_argument("--source", required=True, help="a video file (or any streaming.sources spec, e.g. synthetic:)")
    p.add_argument("--frames", type=positive_int, default=300, help="frames to run (default 300)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for every contender (default 2)")
    p.add_argument("--warmup", type=positive_int, default=10, help="warm-up frames per contender (default 10)")
    p.add_argument("--block", type=positive_int, default=25, help="frames per interleaved block (default 25)")
    p.add_argument("--granularity", choices=("element", "pixel", "auto"), default="auto", help="delta MAC granularity (auto: measured per layer)")
    p.add_argument("--skip", default="", help="comma-separated contenders to leave out (keras, tflite)")
    p.add_argument("--json", default=None, help="write the results here")
    add_crop_argument(p)
    add_motion_argument(p)
    return p


def _read_frames(source: str, n: int, shape: tuple[int, int, int], crop=None) -> np.ndarray:
    """The first ``n`` frames of ``source`` as model inputs of ``shape`` (``crop`` cut out first)."""
    from streaming.preprocess import crop_image, to_model_input
    from streaming.sources import SourceError, open_source

    frames = []
    try:
        with open_source(source, live=False) as src:
            for frame in src:
                frames.append(to_model_input(crop_image(frame.image, crop), shape))
                if len(frames) >= n:
                    break
    except SourceError as e:
        raise CliError(str(e)) from e
    except ValueError as e:  # a crop that does not fit the frames
        raise CliError(f"--crop: {e}") from e
    if len(frames) < 2:
        raise CliError(f"{source}: need at least 2 frames, got {len(frames)}")
    return np.stack(frames)


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean())}


def _tflite_runner(per_frame, threads: int, shape):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1,) + tuple(shape), tf.float32)])
    def serve(x):
        return per_frame(x, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], per_frame)
    content = converter.convert()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # older stacks
        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_content=content, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]

    def run(frame):
        interp.set_tensor(inp, frame[None].astype(np.float32))
        interp.invoke()
        return interp.get_tensor(out)[0]

    return run


def rel_logit_error(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per frame: max |logits - reference| / max |reference| (rows are frames)."""
    return np.abs(logits - reference).max(axis=1) / np.maximum(np.abs(reference).max(axis=1), 1e-12)


def float32_floor(frames_model, clip: np.ndarray) -> tuple[np.ndarray, dict]:
    """The Keras reference logits of ``clip`` and how far Keras itself is from them.

    The reference is the clip model's graph on the whole clip (TensorFlow kernels); the floor
    is the same graph compiled by XLA (``jit_compile=True``), whose convolutions sum in
    another order: any float32 implementation, the delta engine included, can differ from
    the reference by this much once a threshold decision flips.
    """
    import tensorflow as tf

    x = tf.constant(clip[None].astype(np.float32))
    reference = tf.function(lambda v: frames_model(v, training=False), jit_compile=False)(x).numpy()[0]
    xla = tf.function(lambda v: frames_model(v, training=False), jit_compile=True)(x).numpy()[0]
    err = rel_logit_error(xla, reference)
    return reference, {
        "how": "the Keras delta model on the whole clip, XLA (jit_compile=True) against TensorFlow's kernels",
        "max_rel_logit_error": float(err.max()),
        "frames_over_1e-4": int(np.sum(err > 1e-4)),
        "top1_agreement": float(np.mean(xla.argmax(1) == reference.argmax(1))),
    }


def run(model: str, source: str, *, frames: int = 300, threads: int = 2, warmup: int = 10, block: int = 25,
        granularity: str = "auto", skip: tuple = (), json_out: str | None = None, crop=None, log=print, motion: str = "none") -> dict:
    """Run the benchmark; returns (and optionally writes) the results dict."""
    from deltanet.cli import import_tensorflow_quietly

    if not Path(model).is_file():
        raise CliError(f"--model: no such file: {model}")
    import_tensorflow_quietly()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import deltanet
    from deltanet import density
    from streaming.convert import ConversionError, to_plan
    from streaming.engine import DeltaEngine
    from streaming.tuning import tune_granularity

    try:
        clip_model = deltanet.load_model(model)
        plan = to_plan(clip_model)
    except ConversionError as e:
        raise CliError(str(e)) from e
    except (ValueError, OSError) as e:
        raise CliError(f"cannot load model {model}: {e}") from e
    shape = plan.input_shape
    clip = _read_frames(source, frames, shape, crop)
    n = len(clip)
    log(f"{n} frames of {source} at {shape[1]}x{shape[0]}, {threads} thread(s)")

    # Exactness: the Keras delta model on the whole clip (its state included), and the
    # float32 floor beside it: the same model under an equivalent, differently ordered
    # evaluation (XLA's convolutions instead of TensorFlow's), which flips thresholds too.
    keras_delta, floor = float32_floor(deltanet.frame_logits_model(clip_model), clip)

    try:
        from threadpoolctl import threadpool_limits

        blas_limit = threadpool_limits(limits=threads)
    except ImportError:  # optional: without it BLAS uses its own default
        blas_limit = None

    gran = granularity
    if granularity == "auto":
        gran = tune_granularity(plan, clip[: min(n, 60)], threads=threads)
        log("kernel choice per MAC layer: " + ", ".join(f"{c}: {sum(v == c for v in gran.values())}" for c in sorted(set(gran.values()))))
    from streaming.model_io import apply_motion

    delta = apply_motion(DeltaEngine(plan, granularity=gran, threads=threads), motion, model)  # --motion global: streaming.canvas
    dense = DeltaEngine(plan, mode="dense", threads=threads)
    per_frame = deltanet.per_frame_model(clip_model)

    contenders = {}
    delta_stats = []

    def delta_step(f):
        logits, s = delta.step(f)
        delta_stats.append(s)
        return logits

    contenders["delta_engine"] = delta_step
    contenders["dense_engine"] = lambda f: dense.step(f)[0]
    if "keras" not in skip:
        serve = tf.function(lambda x: per_frame(x, training=False), jit_compile=True, reduce_retracing=True)
        contenders["keras"] = lambda f: serve(tf.constant(f[None], tf.float32)).numpy()[0]
    if "tflite" not in skip:
        contenders["tflite"] = _tflite_runner(per_frame, threads, shape)

    # Warm-up: compile everything, then start the streams from a clean state.
    for name, fn in contenders.items():
        for f in clip[: min(warmup, n)]:
            fn(f)
    delta.reset()
    dense.reset()
    delta_stats.clear()

    outputs = {name: [] for name in contenders}
    times = {name: [] for name in contenders}
    clock = time.perf_counter
    for b0 in range(0, n, block):
        for name, fn in contenders.items():
            for f in clip[b0 : b0 + block]:
                t0 = clock()
                out = fn(f)
                times[name].append((clock() - t0) * 1e3)
                outputs[name].append(out)
    if blas_limit is not None:
        blas_limit.restore_original_limits()

    engine_logits = np.stack(outputs["delta_engine"])
    err = rel_logit_error(engine_logits, keras_delta)
    dense_macs = delta.dense_macs
    later = delta_stats[1:]  # frames after the first
    # The MAC density belongs to the model and the video: the transmitted non-zero deltas,
    # MAC-weighted (FrameStats.mac_density). What the chosen kernels multiplied is reported
    # apart: pixel-wise kernels also multiply an active pixel's zeros.
    layer_density = np.mean([s.layer_mac_density for s in later], axis=0)
    layer_executed = np.mean([s.layer_executed_mac_density for s in later], axis=0)
    mac_density = float(np.mean([s.mac_density for s in later]))
    executed_density = float(np.mean([s.executed_mac_density for s in later]))
    ms = {name: _stats(t[1:] if name == "delta_engine" else t) for name, t in times.items()}
    speedup = {}
    for other, key in (("dense_engine", "vs_dense_engine"), ("keras", "vs_keras"), ("tflite", "vs_tflite")):
        if other in ms:
            speedup[key] = ms[other]["median"] / ms["delta_engine"]["median"]
    # Per-step times come from an extra profiled pass over the same frames, after the timed
    # runs: the same loop reading a clock around each step (per phase and per MAC layer, its
    # encoder included), kept apart so that the timed pass carries no clock readings.
    profiled = DeltaEngine(plan, granularity=gran, threads=threads, profile=True)
    profiled.warmup()
    if blas_limit is not None:
        blas_limit = threadpool_limits(limits=threads)
    _, pstats = profiled.run(clip)
    if blas_limit is not None:
        blas_limit.restore_original_limits()
    pstats = [s for s in pstats if not s.keyframe]
    phases = {k: float(np.median([s.phase_ms[k] for s in pstats])) for k in pstats[0].phase_ms}
    phases["total (profiled pass)"] = float(np.median([s.total_ms for s in pstats]))
    layer_ms = np.stack([s.layer_ms for s in pstats])
    layers = []
    mac_steps = plan.mac_steps()
    for i, name in enumerate(delta.layer_names):
        layers.append(
            {
                "name": name,
                "type": mac_steps[i]["op"],
                "granularity": delta.granularity[name],
                "macs_dense": int(dense_macs[i]),
                "temporal_density": float(layer_density[i]),
                "mac_density": float(layer_density[i]),
                "executed_mac_density": float(layer_executed[i]),
                "ms": float(np.median(layer_ms[:, i])),
            }
        )
    result = {
        "model": str(model),
        "source": str(source),
        "crop": crop.spec() if crop is not None else None,
        "frames": int(n),
        "threads": threads,
        "input_shape": list(shape),
        "motion": motion,  # "global": the delta engine's figures are the compensated run's (the profile is the plain engine's)
        "mac_density": mac_density,
        "executed_mac_density": executed_density,  # with the kernels chosen (pixel-wise ones count zeros)
        "theoretical_speedup": density.theoretical_speedup(mac_density),
        "ms_per_frame": ms,
        "speedup": speedup,
        "max_rel_logit_error": float(err.max()),
        "top1_agreement": float(np.mean(engine_logits.argmax(1) == keras_delta.argmax(1))),
        # A threshold/rounding decision that lands on the other side in float32 (the engine
        # sums deltas in another order than a dense convolution) changes that element by up
        # to theta until it fires again; these say whether and when that happened.
        "frames_over_1e-4": int(np.sum(err > 1e-4)),
        "first_frame_over_1e-4": int(np.argmax(err > 1e-4)) if np.any(err > 1e-4) else None,
        "float32_floor": floor,
        "phase_ms": phases,
        "layers": layers,
        "dense_macs_per_frame": int(dense_macs.sum()),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }
    log(format_table(result))
    if json_out:
        tmp = Path(json_out).with_name(Path(json_out).name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, json_out)
    return result


def format_table(r: dict) -> str:
    lines = [f"{'contender':<14}{'median ms':>10}{'p90 ms':>10}{'delta speedup':>15}"]
    for name, s in r["ms_per_frame"].items():
        sp = r["ms_per_frame"][name]["median"] / r["ms_per_frame"]["delta_engine"]["median"]
        lines.append(f"{name:<14}{s['median']:>10.3f}{s['p90']:>10.3f}{sp:>14.2f}x")
    lines.append(
        f"mac_density {r['mac_density']:.4f} (theoretical speedup {r['theoretical_speedup']:.1f}x; executed with the "
        f"chosen kernels {r.get('executed_mac_density', float('nan')):.4f}), "
        f"max_rel_logit_error {r['max_rel_logit_error']:.2e} ({r['frames_over_1e-4']} frames over 1e-4), "
        f"top1_agreement {r['top1_agreement']:.3f}"
    )
    if r.get("float32_floor"):
        f = r["float32_floor"]
        lines.append(f"float32 floor (Keras vs Keras, XLA vs TF kernels): max_rel_logit_error {f['max_rel_logit_error']:.2e} "
                     f"({f['frames_over_1e-4']} frames over 1e-4), top1_agreement {f['top1_agreement']:.3f}")
    lines.append(format_profile(r))
    return "\n".join(lines)


def format_profile(r: dict) -> str:
    """The profiled pass as text: median ms per phase, then per MAC layer (encoder included)."""
    lines = ["delta engine profile (median ms per frame, profiled pass):"]
    lines.append("  " + ", ".join(f"{k} {v:.3f}" for k, v in r["phase_ms"].items()))
    lines.append(f"  {'layer':<20}{'type':<10}{'kernel':<18}{'mac density':>12}{'executed':>10}{'ms':>8}")
    for layer in sorted(r["layers"], key=lambda x: -x["ms"]):
        lines.append(f"  {layer['name']:<20}{layer['type']:<10}{layer['granularity']:<18}{layer['mac_density']:>12.3f}"
                     f"{layer.get('executed_mac_density', float('nan')):>10.3f}{layer['ms']:>8.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    skip = tuple(s for s in args.skip.split(",") if s)
    bad = [s for s in skip if s not in ("keras", "tflite")]
    if bad:
        return fail(parser.prog, f"--skip: unknown contender(s) {bad}; choose from keras, tflite")
    try:
        run(args.model, args.source, frames=args.frames, threads=args.threads, warmup=args.warmup, block=args.block,
            granularity=args.granularity, skip=skip, json_out=args.json, crop=args.crop, log=lambda m: print(m, file=sys.stderr),
            motion=args.motion)
    except CliError as e:
        return fail(parser.prog, str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
