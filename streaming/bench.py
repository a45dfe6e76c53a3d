"""``python -m streaming.bench``: the delta engine against dense runtimes, side by side, same frames.

Contenders (``streaming.contenders``), all fed the same decoded frames (``--crop`` cut out, resized
once to the model input, gray for a one-channel model: ``streaming.preprocess``), at batch 1:

* ``delta_engine``: ``DeltaEngine`` (numba sparse-delta kernels);
* ``dense_engine``: the same engine with delta layers as identities and dense kernels;
* ``delta_refresh`` (``--refresh``): the delta engine with refresh frames (``DeltaEngine(refresh_at=)``,
  the break-even measured by ``streaming.tuning.tune_refresh`` on the tuning frames): a frame whose first
  encoder fires in enough of its 8x8 tiles (a cut, a pan) runs dense and resets every reference; its logits on
  those frames are the dense network's, not the delta model's; ``speedup_refresh`` holds its speedups;
* ``keras`` / ``keras_nojit``: the model's dense per-frame equivalent as a ``tf.function``, compiled by
  XLA (``jit_compile=True``) or run on TensorFlow's kernels; ``speedup.vs_keras`` takes the faster;
* ``tflite``: that per-frame model in the LiteRT interpreter (XNNPACK), float32;
* ``tflite_int8``: the same model, full-integer post-training quantized (int8 weights and activations,
  float32 input and output), calibrated on the tuning frames, in the same interpreter (XNNPACK's int8
  path); ``int8_top1_agreement`` is its top-1 agreement with the float per-frame model;
* ``onnxruntime``: the per-frame model exported by tf2onnx (``deltanet.onnx_export``, as
  ``training.export`` does) in ONNX Runtime, CPU execution provider.

A contender whose package is missing or whose converter refuses the model is reported under
``skipped`` with the reason; ``--skip`` leaves any of the dense ones out.

Frames: the first ``--tune-frames`` of the source are the tuning segment: the delta engine's kernel
choice is measured on them, int8 is calibrated on them, every contender warms up on them. None of
them is timed. The timed segment is the ``--frames`` after it (``frames.tuning`` / ``frames.timed``
in the JSON, half-open ranges). Every stream starts the timed segment from a reset: the first timed
frame is the engine's keyframe, as when a live stream starts (it is left out of the delta engine's
times, which are those of steady-state delta frames).

Timing: every contender runs with the same thread count (numba, TensorFlow intra-op, TFLite, ONNX
Runtime, BLAS), in interleaved blocks of ``--block`` frames (the order reversed every other block),
so that load drift hits all of them alike. ``ms_per_frame.<name>`` = {median, mean, p90};
``speedup.<vs_x>`` = {of_medians, paired, paired_iqr, blocks} (``streaming.bench_stats``).

Exactness: ``max_rel_logit_error`` / ``top1_agreement`` compare the delta engine with the Keras
*delta* model (its per-frame logits on the timed segment, from zero state); ``float32_floor`` is the
same comparison of Keras against itself, XLA against TensorFlow's kernels, i.e. how far two correct
float32 implementations drift apart once a threshold decision flips. ``top1_agreement_vs_dense``
compares the delta engine with the same weights run dense (the per-frame model, TensorFlow's
kernels), ``agreement_vs_per_frame`` every dense contender with it.

Memory (``memory``): the engines' arenas by role (``streaming.lower`` sizes them), each artifact's
size, and, unless ``--memory off``, each contender's resident memory loaded alone in a fresh process
(``streaming.bench_memory``). Timing claims belong to this script, never to tests.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deltanet.cli import ArgumentParser, CliError, add_crop_argument, add_motion_argument, fail, positive_int
from streaming.bench_exactness import agreement, dense_reference, float32_floor, rel_logit_error
from streaming.bench_stats import ms_stats, paired_ratios, speedups
from streaming.contenders import SKIPPABLE, Unavailable


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m streaming.bench", description="Benchmark delta inference against dense runtimes on a video.")
    p.add_argument("--model", required=True, help="a trained clip model (.keras)")
    p.add_argument("--source", required=True, help="a video file (or any streaming.sources spec, e.g. synthetic:)")
    p.add_argument("--frames", type=positive_int, default=300, help="frames to time, after the tuning segment (default 300)")
    p.add_argument("--tune-frames", type=positive_int, default=60,
                   help="frames at the start of the source for kernel tuning, int8 calibration and warm-up; never timed (default 60)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for every contender (default 2)")
    p.add_argument("--warmup", type=positive_int, default=10, help="warm-up frames per contender, from the tuning segment (default 10)")
    p.add_argument("--block", type=positive_int, default=25, help="frames per interleaved block (default 25)")
    p.add_argument("--granularity", choices=("element", "pixel", "patch", "auto"), default="auto", help="delta MAC granularity (auto: measured per layer; default auto)")
    p.add_argument("--skip", default="", help=f"comma-separated contenders to leave out, of {', '.join(SKIPPABLE)} (default none)")
    p.add_argument("--memory", choices=("subprocess", "off"), default="subprocess",
                   help="measure each contender's resident memory in a fresh process, or not (default subprocess)")
    p.add_argument("--json", default=None, help="write the results here (default: none, the table goes to stderr)")
    add_crop_argument(p)
    add_motion_argument(p)
    p.add_argument("--no-fallback", action="store_true", help="delta engine without the per-layer dense fallback (default: on, break-evens measured)")
    p.add_argument("--refresh", action="store_true",
                   help="also time the delta engine with refresh frames (dense frame + reference reset on cuts and pans; "
                        "break-even measured), as contender delta_refresh")
    p.add_argument("--save-tuning", default=None, metavar="PATH",
                   help="also write the delta engine's measured tuning here, for streaming.live/report --tuning (e.g. MODEL.tuning.json)")
    return p


def read_frames(source: str, n: int, shape: tuple[int, int, int], crop=None) -> np.ndarray:
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


def _build_contenders(plan, per_frame, model: str, engines, tune: np.ndarray, threads: int, skip: tuple, work: Path, log):
    """``({name: Contender}, {name: skip reason}, {name: artifact path})`` for every contender."""
    from streaming import contenders as c
    from streaming.bundle import save_bundle

    delta, dense, delta_stats, refresh, refresh_stats = engines
    built = {"delta_engine": c.engine_contender(delta, delta_stats), "dense_engine": c.engine_contender(dense)}
    artifacts = {"delta_engine": save_bundle(plan, work / "bundle")}
    artifacts["dense_engine"] = artifacts["delta_engine"]
    if refresh is not None:
        built["delta_refresh"] = c.engine_contender(refresh, refresh_stats)
    skipped = {name: "--skip" for name in skip}
    builders = {
        "keras": lambda: c.keras_contender(per_frame, jit=True),
        "keras_nojit": lambda: c.keras_contender(per_frame, jit=False),
        "tflite": lambda: c.tflite_contender(_write(work / "fp32.tflite", c.tflite_flatbuffer(per_frame, plan.input_shape)), threads),
        "tflite_int8": lambda: c.tflite_contender(
            _write(work / "int8.tflite", c.tflite_flatbuffer(per_frame, plan.input_shape, calibration=tune)), threads),
        "onnxruntime": lambda: c.onnx_contender(_write(work / "model.onnx", c.onnx_bytes(per_frame)), threads),
    }
    files = {"keras": model, "keras_nojit": model, "tflite": work / "fp32.tflite", "tflite_int8": work / "int8.tflite",
             "onnxruntime": work / "model.onnx"}
    for name, build in builders.items():
        if name in skip:
            continue
        try:
            built[name] = build()
        except Unavailable as e:
            skipped[name] = str(e)
            log(f"{name}: skipped ({e})")
            continue
        artifacts[name] = Path(files[name])
    return built, skipped, artifacts


def _write(path: Path, content: bytes) -> bytes:
    path.write_bytes(content)
    return content


def _time_blocks(contenders: dict, frames: np.ndarray, block: int) -> tuple[dict, dict]:
    """Run every contender over ``frames`` in interleaved blocks; per-block times (ms) and all outputs."""
    names = list(contenders)
    blocks = {n: [] for n in names}
    outputs = {n: [] for n in names}
    clock = time.perf_counter
    for b, b0 in enumerate(range(0, len(frames), block)):
        for name in names if b % 2 == 0 else names[::-1]:
            run, ms = contenders[name].run, []
            for f in frames[b0 : b0 + block]:
                t0 = clock()
                out = run(f)
                ms.append((clock() - t0) * 1e3)
                outputs[name].append(out)
            blocks[name].append(ms)
    return blocks, {n: np.stack(o) for n, o in outputs.items()}


def _refresh_speedups(blocks: dict) -> dict:
    """``delta_refresh``'s speedups: against every dense contender, and against the plain delta engine."""
    out = speedups(blocks, base="delta_refresh")
    r = paired_ratios(blocks["delta_refresh"], blocks["delta_engine"])
    medians = {n: ms_stats(np.concatenate(blocks[n]))["median"] for n in ("delta_refresh", "delta_engine")}
    out["vs_delta_engine"] = {"of_medians": medians["delta_engine"] / medians["delta_refresh"], "paired": float(np.median(r)),
                              "paired_iqr": [float(np.percentile(r, 25)), float(np.percentile(r, 75))], "blocks": int(r.size)}
    return out


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _memory(engines, artifacts: dict, tune: np.ndarray, threads: int, granularity: dict, how: str, work: Path, log) -> dict:
    from streaming.bench_memory import measure_rss
    from streaming.contenders import engine_arena_bytes

    delta, dense = engines[:2]
    out = {
        "engine_arena_bytes": {"delta_engine": engine_arena_bytes(delta), "dense_engine": engine_arena_bytes(dense)},
        "artifact_bytes": {n: _size(a) for n, a in artifacts.items()},
    }
    if how == "off":
        return out
    frames = work / "frames.npy"
    np.save(frames, tune[: min(len(tune), 10)])
    out["rss_how"] = ("each contender alone in a fresh process (streaming.bench_memory): growth_mb = RSS after building it "
                      "and running 10 tuning frames - RSS of Python + NumPy + the frames; libraries included")
    # The probes run after the timed runs, side by side (a probe's RSS does not depend on the others').
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        log(f"memory: {len(artifacts)} contenders, each in a fresh process")
        futures = {name: pool.submit(measure_rss, name, path, frames, threads, granularity if name == "delta_engine" else None)
                   for name, path in artifacts.items()}
        out["rss"] = {name: f.result() for name, f in futures.items()}
    return out


def run(model: str, source: str, *, frames: int = 300, tune_frames: int = 60, threads: int = 2, warmup: int = 10, block: int = 25,
        granularity: str = "auto", skip: tuple = (), memory: str = "subprocess", json_out: str | None = None, crop=None,
        log=print, motion: str = "none", fallback: bool = True, save_tuning_to: str | None = None, refresh: bool = False) -> dict:
    """Run the benchmark; returns (and optionally writes) the results dict."""
    from deltanet.cli import import_tensorflow_quietly

    if not Path(model).is_file():
        raise CliError(f"--model: no such file: {model}")
    if refresh and motion != "none":
        raise CliError("--refresh times the plain delta engine with refresh frames: leave out --motion")
    if save_tuning_to and not Path(save_tuning_to).resolve().parent.is_dir():
        raise CliError(f"--save-tuning: folder {Path(save_tuning_to).parent} does not exist")
    import_tensorflow_quietly()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import deltanet
    from deltanet import density
    from streaming.convert import ConversionError, to_plan
    from streaming.engine import DeltaEngine
    from streaming.model_io import apply_motion
    from streaming.tuning import save_tuning, tune_dense_parallel, tune_fallback, tune_refresh, tuning_record
    from streaming.tuning import tune as tune_engine

    try:
        clip_model = deltanet.load_model(model)
        plan = to_plan(clip_model)
    except ConversionError as e:
        raise CliError(str(e)) from e
    except (ValueError, OSError) as e:
        raise CliError(f"cannot load model {model}: {e}") from e
    shape = plan.input_shape
    clip = read_frames(source, tune_frames + frames, shape, crop)
    if len(clip) < tune_frames + 2:
        raise CliError(f"{source}: {len(clip)} frames, need --tune-frames {tune_frames} + at least 2 to time")
    tune, timed = clip[:tune_frames], clip[tune_frames:]
    n = len(timed)
    log(f"{source} at {shape[1]}x{shape[0]}: frames [0, {tune_frames}) tune, [{tune_frames}, {tune_frames + n}) timed; {threads} thread(s)")

    # Exactness references on the timed segment, from zero state (the engine starts it from a reset).
    keras_delta, floor = float32_floor(clip_model, timed)
    per_frame = deltanet.per_frame_model(clip_model)
    dense_logits = dense_reference(per_frame, timed)

    try:
        from threadpoolctl import threadpool_limits

        blas_limit = threadpool_limits(limits=threads)
    except ImportError:  # optional: without it BLAS uses its own default
        threadpool_limits, blas_limit = None, None

    # The kernel choice is measured on the tuning frames, the dense fallback's per-layer
    # break-evens on synthetic deltas (streaming.tuning): nothing timed below is tuned on.
    delta = DeltaEngine(plan, granularity="element" if granularity == "auto" else granularity, threads=threads, fallback=fallback)
    if granularity == "auto":
        tune_engine(delta, tune)
    else:
        delta.dense_parallel = tune_dense_parallel(delta)
        if fallback:
            delta.breakeven = tune_fallback(delta)
    gran = delta.granularity
    if delta.tuning_check:
        log("whole-frame check on the tuning frames (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in delta.tuning_check["ms_per_frame"].items())
            + f"; kept: {delta.tuning_check['kept']}")
    log("kernel choice per MAC layer: " + ", ".join(f"{c}: {sum(v == c for v in gran.values())}" for c in sorted(set(gran.values()))))
    if save_tuning_to and not refresh:
        log(f"tuning saved: {save_tuning(tuning_record(delta, len(tune)), save_tuning_to)}")
    breakeven = {k: (None if not np.isfinite(v) else float(v)) for k, v in delta.breakeven.items()} if fallback else None  # None: never
    refresh_at = None
    if refresh:
        refresh_at = tune_refresh(delta, tune)
        log(f"refresh frames from a tile occupancy of {refresh_at:.3f} on" if refresh_at is not None
            else "refresh frames: never faster than a delta frame on the tuning frames and cuts (delta_refresh never refreshes)")
    delta = apply_motion(delta, motion, model)  # --motion global: streaming.canvas (the profile below is the plain engine's)
    refresh_engine = delta.clone(refresh_at=refresh_at) if refresh else None
    if save_tuning_to and refresh:  # the saved tuning turns refresh frames on, as measured here
        log(f"tuning saved with refresh frames: {save_tuning(dict(tuning_record(delta, len(tune)), refresh_at=refresh_at), save_tuning_to)}")
    dense = DeltaEngine(plan, mode="dense", threads=threads, dense_parallel=delta.dense_parallel)  # the same dense kernels
    log(f"dense kernels in parallel row blocks: {sum(delta.dense_parallel.values())} of {len(gran)} MAC layers")
    delta_stats, refresh_stats = [], []
    engines = (delta, dense, delta_stats, refresh_engine, refresh_stats)
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        work = Path(work)
        contenders, skipped, artifacts = _build_contenders(plan, per_frame, model, engines, tune, threads, skip, work, log)
        for c in contenders.values():  # warm-up: compile everything, on frames that are never timed
            for i in range(warmup):
                c.run(tune[i % len(tune)])
        for e in (delta, dense, refresh_engine):
            if e is not None:
                e.reset()
        delta_stats.clear()
        refresh_stats.clear()
        blocks, outputs = _time_blocks(contenders, timed, block)
        for name in ("delta_engine", "delta_refresh"):
            if name in blocks:
                blocks[name][0] = blocks[name][0][1:]  # the keyframe: not a delta frame
        if blas_limit is not None:
            blas_limit.restore_original_limits()
        mem = _memory(engines, artifacts, tune, threads, delta.granularity, memory, work, log)

    engine_logits = outputs["delta_engine"]
    err = rel_logit_error(engine_logits, keras_delta)
    dense_macs = delta.dense_macs
    later = delta_stats[1:]  # frames after the keyframe
    # The MAC density belongs to the model and the video: the transmitted non-zero deltas,
    # MAC-weighted (FrameStats.mac_density). What the chosen kernels multiplied is reported
    # apart: pixel-wise kernels also multiply an active pixel's zeros.
    layer_density = np.mean([s.layer_mac_density for s in later], axis=0)
    layer_executed = np.mean([s.layer_executed_mac_density for s in later], axis=0)
    mac_density = float(np.mean([s.mac_density for s in later]))
    executed_density = float(np.mean([s.executed_mac_density for s in later]))
    ms = {name: ms_stats(np.concatenate(b)) for name, b in blocks.items()}
    # Per-step times come from an extra profiled pass over the same frames, after the timed
    # runs: the same loop reading a clock around each step (per phase and per MAC layer, its
    # encoder included), kept apart so that the timed pass carries no clock readings.
    profiled = DeltaEngine(plan, granularity=gran, threads=threads, profile=True)
    profiled.warmup()
    if threadpool_limits is not None:
        blas_limit = threadpool_limits(limits=threads)
    _, pstats = profiled.run(timed)
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
    vs_dense = {name: agreement(o, dense_logits) for name, o in outputs.items()}
    result = {
        "model": str(model),
        "source": str(source),
        "crop": crop.spec() if crop is not None else None,
        "frames": {"tuning": [0, tune_frames], "timed": [tune_frames, tune_frames + n], "timed_count": n,
                   "timed_start": "from a reset: the first timed frame is the engine's keyframe (not in its times)"},
        "threads": threads,
        "input_shape": list(shape),
        "motion": motion,  # "global": the delta engine's figures are the compensated run's
        "tuning_check": delta.tuning_check,  # whole-frame ms of each tuned setting on the tuning frames, the one kept
        "fallback": {"on": fallback, "breakeven": breakeven,
                     "frames_with_fallback": int(sum(s.fallback_layers is not None and bool(np.any(s.fallback_layers)) for s in later))},
        "mac_density": mac_density,
        "executed_mac_density": executed_density,  # with the kernels chosen (pixel-wise ones count zeros)
        "theoretical_speedup": density.theoretical_speedup(mac_density),
        "ms_per_frame": ms,
        "speedup": speedups(blocks),
        "skipped": skipped,
        "runtimes": {name: c.runtime for name, c in contenders.items()},
        "max_rel_logit_error": float(err.max()),
        "top1_agreement": float(np.mean(engine_logits.argmax(1) == keras_delta.argmax(1))),
        "top1_agreement_vs_dense": vs_dense["delta_engine"]["top1"],
        "int8_top1_agreement": vs_dense["tflite_int8"]["top1"] if "tflite_int8" in vs_dense else None,
        "int8_calibration_frames": [0, tune_frames] if "tflite_int8" in contenders else None,
        "agreement_vs_per_frame": vs_dense,
        # A threshold/rounding decision that lands on the other side in float32 (the engine
        # sums deltas in another order than a dense convolution) changes that element by up
        # to theta until it fires again; these say whether and when that happened.
        "frames_over_1e-4": int(np.sum(err > 1e-4)),
        "first_frame_over_1e-4": int(np.argmax(err > 1e-4)) if np.any(err > 1e-4) else None,
        "float32_floor": floor,
        "memory": mem,
        "refresh": None if refresh_engine is None else {
            "at": refresh_at,  # the first encoder's firing fraction (None: never)
            "frames_refreshed": int(sum(s.refreshed for s in refresh_stats[1:])),
            "mac_density": float(np.mean([s.mac_density for s in refresh_stats[1:]])),
            "max_rel_logit_error_vs_keras_delta": float(rel_logit_error(outputs["delta_refresh"], keras_delta).max()),
            "top1_agreement": float(np.mean(outputs["delta_refresh"].argmax(1) == keras_delta.argmax(1))),
            "top1_agreement_vs_dense": vs_dense["delta_refresh"]["top1"],
        },
        "speedup_refresh": _refresh_speedups(blocks) if refresh_engine is not None else None,
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
    lines = [f"{'contender':<14}{'median ms':>10}{'mean ms':>10}{'p90 ms':>10}{'speedup (medians)':>19}{'paired':>8}{'RSS MB':>8}"]
    by_name = {}
    for key, s in r["speedup"].items():
        by_name[s.get("against", key.removeprefix("vs_"))] = s
    rss = r.get("memory", {}).get("rss", {})
    for name, s in r["ms_per_frame"].items():
        sp = by_name.get(name)
        ratio = s["median"] / r["ms_per_frame"]["delta_engine"]["median"]
        paired = f"{sp['paired']:>7.2f}x" if sp else f"{'':>8}"
        mb = rss.get(name, {}).get("growth_mb")
        lines.append(f"{name:<14}{s['median']:>10.3f}{s['mean']:>10.3f}{s['p90']:>10.3f}{ratio:>18.2f}x{paired}"
                     + (f"{mb:>8.1f}" if mb is not None else ""))
    for name, why in r.get("skipped", {}).items():
        lines.append(f"{name:<14}skipped: {why}")
    lines.append(
        f"mac_density {r['mac_density']:.4f} (theoretical speedup {r['theoretical_speedup']:.1f}x; executed with the "
        f"chosen kernels {r.get('executed_mac_density', float('nan')):.4f}), "
        f"max_rel_logit_error {r['max_rel_logit_error']:.2e} ({r['frames_over_1e-4']} frames over 1e-4), "
        f"top1_agreement {r['top1_agreement']:.3f} (vs the dense per-frame model {r['top1_agreement_vs_dense']:.3f})"
    )
    if r.get("refresh"):
        f, sp = r["refresh"], r["speedup_refresh"]
        lines.append(f"delta_refresh: refresh at {f['at']}, {f['frames_refreshed']} frames refreshed, mac_density {f['mac_density']:.4f}, "
                     f"top1_agreement {f['top1_agreement']:.3f} (vs dense {f['top1_agreement_vs_dense']:.3f}); paired speedups "
                     + ", ".join(f"{k} {v['paired']:.2f}x" for k, v in sp.items()))
    if r.get("int8_top1_agreement") is not None:
        lines.append(f"tflite_int8 top-1 agreement with the float per-frame model: {r['int8_top1_agreement']:.3f}")
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
    bad = [s for s in skip if s not in SKIPPABLE]
    if bad:
        return fail(parser.prog, f"--skip: unknown contender(s) {bad}; choose from {', '.join(SKIPPABLE)}")
    try:
        run(args.model, args.source, frames=args.frames, tune_frames=args.tune_frames, threads=args.threads, warmup=args.warmup,
            block=args.block, granularity=args.granularity, skip=skip, memory=args.memory, json_out=args.json, crop=args.crop,
            log=lambda m: print(m, file=sys.stderr), motion=args.motion, fallback=not args.no_fallback, save_tuning_to=args.save_tuning,
            refresh=args.refresh)
    except CliError as e:
        return fail(parser.prog, str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
