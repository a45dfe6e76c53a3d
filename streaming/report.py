"""``python -m streaming.report``: where a delta model spends (and saves) its MACs, frame by frame and layer by layer.

Runs the delta engine over the first ``--frames`` frames of a source (files in order;
``--repeat N`` plays a short file N times) and writes to ``--out``. The source is read once,
in blocks of 25 frames that go through every pass before the next block is read, so memory
stays bounded however long the stream (an hour of video included):

``report.json``
    Summary of the model (and of ``--compare``'s model under ``"compare"``): ``frames``,
    ``mac_density`` (the MAC-weighted temporal density of the transmitted deltas over the frames
    after the first, through ``deltanet.density.mac_density``; ``executed_mac_density``: what the
    kernels multiplied / dense MACs), ``theoretical_speedup`` (``1 / mac_density``),
    ``speedup_vs_dense_engine`` (median ms of ``DeltaEngine(plan, mode="dense")`` on the same
    frames over the delta engine's median, both after warm-up, interleaved in blocks:
    *measured on this machine*, see ``timing``), ``max_rel_logit_error`` and
    ``top1_agreement`` against the Keras model's per-frame logits (``streaming.reference``:
    computed frame by frame with the delta states carried, in bounded memory), with
    ``frames_over_1e-4``/``first_frame_over_1e-4`` as in ``streaming.bench`` (``.keras`` models
    only; ``null`` for a bundle, with a note), and ``layers``: per MAC layer ``name``,
    ``type``, ``macs_dense``, ``temporal_density`` (non-zero input deltas / input elements),
    ``mac_density`` (temporal density of the deltas it received), ``executed_mac_density`` -- both means over the frames after the first --
    ``ms`` (median time of the layer, its encoder included, frames after the first, from a
    second, profiled delta pass that times every step from Python: the layers' ms add up to
    more than the fast path's frame time) and ``fallback_frames`` (delta frames in which the
    layer ran its dense kernel: ``DeltaEngine``'s dense fallback); ``frames_with_fallback``:
    delta frames in which any layer did.
``frames.csv``
    One row per (model, frame): ``model, frame, keyframe, mac_density, executed_macs,
    dense_macs, latency_ms`` (the delta engine's step time), ``dense_ms`` (the dense
    engine's time on the same frame), ``top1, score`` (this frame's own logits, softmax).
``layers.csv``
    Long format, one row per (model, frame, MAC layer): ``model, frame, keyframe,
    layer_index, layer, type, nonzero_deltas, input_elements, temporal_density,
    executed_macs, dense_macs, mac_density, ms`` (``ms`` from the profiled pass).
``density_heatmap.png``, ``timeline.png``, ``layer_macs.png``
    Per-layer MAC density over frames x layers; MAC density and latency over time (dense
    engine dashed); dense vs executed MACs per layer. ``--compare`` puts both models in each.
``report.html``
    All of the above in one self-contained page (plots as data URIs, no external assets).

The numbers in ``report.json`` are means/medians of the rows in the CSVs (frame 0, the
dense first pass every stream pays once, is in the CSVs but not in the means).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streaming.report_render import PLOTS, TIMING_NOTE, format_text_table, layer_table, make_plots, render_html, summary_table
from deltanet.cli import ArgumentParser, CliError, add_crop_argument, add_motion_argument, add_tuning_argument, fail, positive_int

PROG = "python -m streaming.report"
@dataclass
class ModelRun:
    """One model's passes over the frames; per-frame results are stacked arrays (``finish``)."""

    label: str
    path: str
    kind: str
    engine: object
    keras: object = None   # streaming.reference.KerasReference of a .keras model, else None
    tuning: str = None     # the tuning file applied (streaming.tuning.use_tuning), None: untuned defaults
    dense: object = None
    profiled: object = None
    # per frame (rows) and per frame x MAC layer, after finish()
    index: np.ndarray = None
    keyframe: np.ndarray = None
    total_ms: np.ndarray = None
    dense_ms: np.ndarray = None
    executed: np.ndarray = None
    nonzero: np.ndarray = None
    layer_ms: np.ndarray = None
    fallback: np.ndarray = None   # per frame x MAC layer: ran its dense kernel in a delta frame
    logits: np.ndarray = None
    reference: np.ndarray | None = None   # the Keras model's per-frame logits
    camera: np.ndarray | None = None   # --motion global: per frame (dx, dy, confidence, refresh, on canvas)
    _blocks: list = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.index)

    def finish(self) -> None:
        """Stack the blocks into the per-frame arrays."""
        names = ("index", "keyframe", "total_ms", "dense_ms", "executed", "nonzero", "layer_ms", "fallback", "logits", "reference", "camera")
        for i, name in enumerate(names):
            parts = [b[i] for b in self._blocks]
            setattr(self, name, None if parts[0] is None else np.concatenate(parts))
        self._blocks = []


# --- running --------------------------------------------------------------------------------------


def _open(source: str, n: int, repeat: int = 1):
    from streaming.sources import SourceError, open_source, quiet_backend_logs

    quiet_backend_logs()
    try:
        return open_source(source, live=False, max_frames=n, repeat=repeat)
    except SourceError as e:
        raise CliError(str(e)) from e
    except ValueError as e:
        raise CliError(f"--source {source!r}: {e}") from e


def _blocks(src, size: int, first: int, crop=None):
    """Raw frames of ``src`` (``crop`` cut out first) in lists of ``size`` (the first list holds
    ``first``); nothing else is kept."""
    from streaming.preprocess import crop_image

    block, want = [], first
    for frame in src:
        block.append(crop_image(frame.image, crop))
        if len(block) == want:
            yield block
            block, want = [], size
    if block:
        yield block


def _load(path: str, label: str, threads: int | None, keyframe_interval: int | None, motion: str = "none", tuning: str = "auto") -> ModelRun:
    from streaming.model_io import apply_motion, engine_from_keras_model, load_bundle_engine, load_keras_model, model_kind
    from streaming.tuning import use_tuning

    kw = dict(threads=threads, keyframe_interval=keyframe_interval)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if model_kind(path) == "keras":
        from streaming.reference import KerasReference

        keras_model = load_keras_model(path)
        engine = engine_from_keras_model(keras_model, path, **kw)
        tuned = use_tuning(engine, tuning, path, log)
        run = ModelRun(label, path, "keras", apply_motion(engine, motion, path), KerasReference(keras_model))
    else:
        engine = load_bundle_engine(path, **kw)
        tuned = use_tuning(engine, tuning, path, log)
        run = ModelRun(label, path, "bundle", apply_motion(engine, motion, path))
    run.tuning = str(tuned) if tuned else None
    return run


PASSES = 3   # delta, dense, profiled delta (and the Keras reference of a .keras model)


def _start(run: ModelRun, threads: int | None, warmup_frames: list) -> None:
    """Build the dense and profiled engines and compile everything before the first timed frame."""
    from streaming.engine import DeltaEngine

    run.dense = DeltaEngine(run.engine.plan, mode="dense", threads=threads)
    run.engine.warmup()
    for f in warmup_frames:
        run.dense.step(f)
    run.dense.reset()
    # the fast path does not time layers: a second, profiled delta engine does (unless this one is)
    run.profiled = None if getattr(run.engine, "profile", True) else run.engine.clone(profile=True)
    if run.profiled is not None:
        run.profiled.warmup()


def _run_block(run: ModelRun, raw: list, bar) -> None:
    """One block of frames through every pass, in turn, so that load drift hits the delta and the
    dense engine alike; the results are kept as one block of rows."""
    frames = [run.engine.prepare(f) for f in raw]
    stats, logits = [], []
    for f in frames:
        out, st = run.engine.step(f)
        logits.append(out)
        stats.append(st)
    bar.update(len(frames))
    dense_ms = [run.dense.step(f)[1].total_ms for f in frames]
    bar.update(len(frames))
    layer_ms = [run.profiled.step(f)[1].layer_ms for f in frames] if run.profiled is not None else [s.layer_ms for s in stats]
    bar.update(len(frames))
    reference = None
    if run.keras is not None:
        reference = np.stack([run.keras.step(f) for f in frames]).astype(np.float32)
        bar.update(len(frames))
    run._blocks.append((
        np.array([s.index for s in stats], np.int64), np.array([s.keyframe for s in stats], bool),
        np.array([s.total_ms for s in stats]), np.array(dense_ms),
        np.stack([s.executed_macs for s in stats]).astype(np.int64), np.stack([s.nonzero_deltas for s in stats]).astype(np.int64),
        np.stack(layer_ms).astype(np.float32), np.stack([s.fallback_layers for s in stats]), np.stack(logits).astype(np.float32),
        reference,
        np.array([(s.dx, s.dy, s.confidence, s.refresh, s.on_canvas) for s in stats], np.float64) if hasattr(stats[0], "dx") else None,
    ))


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def summarize(run: ModelRun, source: str, threads_used: int) -> dict:
    """The report.json entry of one model (see the module docstring)."""
    from deltanet import density

    e = run.engine
    dense_macs = e.dense_macs.astype(np.float64)
    later = slice(1, None)   # frames after the first (frame 0 is the dense keyframe)
    executed = run.executed[later].astype(np.float64)
    # one density (deltanet.density): transmitted non-zero deltas per MAC layer; what the
    # kernels multiplied (pixel-wise kernels count an active pixel's zeros) is reported apart
    # (a keyframe after the first is a dense pass: 1.0, as in FrameStats and frames.csv)
    per_frame = run.nonzero[later] / e.input_elements
    layer_density = np.where(run.keyframe[later][:, None], 1.0, per_frame).mean(axis=0)
    mac_density = density.mac_density(dense_macs, layer_density)
    executed_density = density.mac_density(dense_macs, executed.mean(axis=0) / dense_macs)
    delta_ms = run.total_ms[later]
    steps = e.plan.mac_steps()
    layers = []
    for i, name in enumerate(e.layer_names):
        layers.append({
            "name": name,
            "type": steps[i]["op"],
            "macs_dense": int(e.dense_macs[i]),
            "temporal_density": float(layer_density[i]),
            "mac_density": float(layer_density[i]),
            "executed_mac_density": float(executed[:, i].mean() / dense_macs[i]),
            "executed_macs": float(executed[:, i].mean()),
            "ms": float(np.median(run.layer_ms[later, i])),
            "fallback_frames": int(run.fallback[later, i].sum()),
        })
    out = {
        "model": run.path,
        "label": run.label,
        "kind": run.kind,
        "source": str(source),
        "input_shape": list(e.input_shape),
        "frames": run.frames,
        "keyframes": int(run.keyframe.sum()),
        "frames_with_fallback": int(run.fallback[later].any(axis=1).sum()),
        "mac_density": mac_density,
        "executed_mac_density": executed_density,
        "theoretical_speedup": density.theoretical_speedup(mac_density),
        "speedup_vs_dense_engine": float(np.median(run.dense_ms) / np.median(delta_ms)),
        "timing": {
            "measured_on": _machine(),
            "threads": threads_used,
            "delta_ms_median": float(np.median(delta_ms)),
            "delta_ms_mean": float(delta_ms.mean()),
            "dense_ms_median": float(np.median(run.dense_ms)),
            "dense_ms_mean": float(run.dense_ms.mean()),
            "note": TIMING_NOTE,
        },
        "dense_macs_per_frame": int(e.dense_macs.sum()),
        "executed_macs_per_frame": float(executed.sum(axis=1).mean()),
        "max_rel_logit_error": None,
        "frames_over_1e-4": None,
        "first_frame_over_1e-4": None,
        "top1_agreement": None,
        "layers": layers,
    }
    if run.reference is not None:
        ref = run.reference.astype(np.float64)
        err = np.abs(run.logits - ref).max(axis=1) / np.maximum(np.abs(ref).max(axis=1), 1e-12)
        out["max_rel_logit_error"] = float(err.max())
        # float32 decision flips (see docs/STATUS.md) show up as a jump that then persists
        out["frames_over_1e-4"] = int(np.sum(err > 1e-4))
        out["first_frame_over_1e-4"] = int(np.argmax(err > 1e-4)) if np.any(err > 1e-4) else None
        out["top1_agreement"] = float(np.mean(run.logits.argmax(1) == ref.argmax(1)))
        out["reference"] = ("the Keras model's per-frame logits, frame by frame with its delta states carried "
                            "(deltanet.stream_model.stateful_frame_model)")
    else:
        out["reference"] = "none: the model is a bundle (no Keras model to compare with)"
    out["tuning"] = run.tuning
    out["motion"] = "none"
    if run.camera is not None:
        cam = run.camera[later]
        out["motion"] = {
            "mode": "global",
            "note": ("mac_density and top1_agreement describe the compensated run (streaming.canvas.MotionEngine), "
                     "as fractions of the per-frame model's dense MACs; a canvas keyframe counts its canvas/frame area ratio"),
            "camera_px_per_frame_mean": float(np.hypot(cam[:, 0], cam[:, 1]).mean()),
            "frames_on_canvas": float(cam[:, 4].mean()),
            "canvas_refreshes": int(cam[:, 3].sum()),  # canvas keyframes and detected scene cuts
        }
    return out


# --- tables ---------------------------------------------------------------------------------------


def frame_rows(run: ModelRun):
    """The frames.csv rows of one model (a generator: an hour of video is not held as dicts)."""
    from deltanet.density import mac_density

    e = run.engine
    labels = _labels(e)
    dense_total = int(e.dense_macs.sum())
    for t in range(run.frames):
        p = _softmax_rows(run.logits[t:t + 1].astype(np.float64))[0]
        k = int(p.argmax())
        yield {
            "model": run.label, "frame": int(run.index[t]), "keyframe": int(run.keyframe[t]),
            # a keyframe is a dense pass: 1.0 (FrameStats.layer_mac_density says the same)
            "mac_density": 1.0 if run.keyframe[t] else mac_density(e.dense_macs, run.nonzero[t] / e.input_elements),
            "executed_mac_density": mac_density(e.dense_macs, run.executed[t] / e.dense_macs),
            "executed_macs": int(run.executed[t].sum()), "dense_macs": dense_total,
            "latency_ms": float(run.total_ms[t]), "dense_ms": float(run.dense_ms[t]), "top1": labels[k], "score": float(p[k]),
            **({} if run.camera is None else {"camera_dx": float(run.camera[t, 0]), "camera_dy": float(run.camera[t, 1]),
                                              "camera_refresh": int(run.camera[t, 3])}),
        }  # fmt: skip


def layer_rows(run: ModelRun):
    """The layers.csv rows of one model (a generator)."""
    e = run.engine
    types = [s["op"] for s in e.plan.mac_steps()]
    for t in range(run.frames):
        for i, name in enumerate(e.layer_names):
            yield {
                "model": run.label, "frame": int(run.index[t]), "keyframe": int(run.keyframe[t]), "layer_index": i,
                "layer": name, "type": types[i], "nonzero_deltas": int(run.nonzero[t, i]),
                "input_elements": int(e.input_elements[i]),
                "temporal_density": float(run.nonzero[t, i] / e.input_elements[i]),
                "executed_macs": int(run.executed[t, i]), "dense_macs": int(e.dense_macs[i]),
                "mac_density": 1.0 if run.keyframe[t] else float(run.nonzero[t, i] / e.input_elements[i]),
                "executed_mac_density": float(run.executed[t, i] / e.dense_macs[i]), "ms": float(run.layer_ms[t, i]),
            }


def _labels(engine) -> list[str]:
    from streaming.live import class_labels

    return class_labels(engine)


# --- writing --------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_safe(x):
    """NaN/Inf (e.g. the theoretical speedup of a video where nothing changed) as null: strict JSON."""
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _write_csv(path: Path, rows) -> None:
    """Rows (dicts, any iterable) to ``path``, streamed, through a temporary name (atomic)."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = None
            for row in rows:
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row), lineterminator="\n")
                    writer.writeheader()
                writer.writerow(row)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _labels_for(paths: list[str]) -> list[str]:
    labels = [Path(p).stem or Path(p).name for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{lab}#{i + 1}" for i, lab in enumerate(labels)]
    return labels


def run(model: str, source: str, out_dir: str, *, frames: int = 300, compare: str | None = None, threads: int | None = 1,
        warmup: int = 10, block: int = 25, keyframe_interval: int | None = None, repeat: int = 1, progress: bool = True,
        crop=None, motion: str = "none", tuning: str = "auto", out=None) -> dict:
    """Write the report into ``out_dir``; returns the report.json dict. Prints the summary table on ``out``.

    The source is read once, ``block`` frames at a time, each block going through every pass
    of every model (delta, dense, profiled delta, the Keras reference): memory does not grow
    with the frames beyond the per-frame results (a few hundred bytes per frame and layer).
    ``crop`` (a ``streaming.preprocess.Crop``) is cut from every frame before resizing.
    ``motion="global"`` runs the delta engine motion-compensated (``streaming.canvas``), every model.
    """
    from tqdm import tqdm

    from streaming.model_io import model_kind

    out = sys.stdout if out is None else out
    paths = [model] + ([compare] if compare else [])
    for p in paths:
        model_kind(p)   # a missing model fails before anything slow
    out_path = Path(out_dir)
    if out_path.exists() and not out_path.is_dir():
        raise CliError(f"--out: {out_dir!r} exists and is not a folder")
    src = _open(source, frames, repeat)   # a bad source fails before the (slow) model loading
    try:
        if crop is not None:
            try:
                crop.box(*src.size)
            except ValueError as e:
                raise CliError(f"--crop: {e}") from e
        runs = [_load(p, label, threads, keyframe_interval, motion, tuning) for p, label in zip(paths, _labels_for(paths))]
        import numba

        threads_used = int(numba.get_num_threads())
        passes = sum(PASSES + (r.keras is not None) for r in runs)
        with tqdm(total=passes * frames, desc="report", unit="frame", file=sys.stderr, disable=not progress,
                  mininterval=0.5) as bar:
            for i, raw in enumerate(_blocks(src, block, max(block, warmup), crop)):
                for r in runs:
                    if i == 0:
                        _start(r, threads, [r.engine.prepare(f) for f in raw[:warmup]])
                    _run_block(r, raw, bar)
    finally:
        src.close()
    if not runs[0]._blocks or sum(len(b[0]) for b in runs[0]._blocks) < 2:
        raise CliError(f"--source {source!r}: need at least 2 frames, got {sum(len(b[0]) for b in runs[0]._blocks)}")
    for r in runs:
        r.finish()
    summaries = [summarize(r, source, threads_used) for r in runs]
    report = dict(summaries[0])
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["files"] = {"frames.csv": "one row per (model, frame)", "layers.csv": "one row per (model, frame, MAC layer)",
                       **{k: v for k, v in PLOTS.items()}, "report.html": "self-contained page with all of the above"}
    report["densities_note"] = "means over the frames after the first (frame 0 is the dense first pass); per-frame values in the CSVs"
    if compare:
        report["compare"] = summaries[1]

    out_path.mkdir(parents=True, exist_ok=True)
    pngs = make_plots(runs)
    _write_csv(out_path / "frames.csv", (row for r in runs for row in frame_rows(r)))
    _write_csv(out_path / "layers.csv", (row for r in runs for row in layer_rows(r)))
    for name, data in pngs.items():
        _write_atomic(out_path / name, data)
    _write_atomic(out_path / "report.html", render_html(report, summaries, pngs))
    _write_atomic(out_path / "report.json", json.dumps(_json_safe(report), indent=2, allow_nan=False))

    print(format_text_table(summary_table(summaries)), file=out)
    for s in summaries:
        print(f"\nlayers of {s['label']}:", file=out)
        print(format_text_table(layer_table(s)), file=out)
    print(f"\nreport written to {out_path}/ (report.html, report.json, frames.csv, layers.csv, {', '.join(PLOTS)})", file=out)
    return report


def build_parser() -> ArgumentParser:
    from streaming.live import repeat_arg

    p = ArgumentParser(prog=PROG, description="Sparsity report of a delta model on a video: JSON, CSV, PNG plots and one HTML page.")
    p.add_argument("--model", required=True, help="a trained clip model (.keras) or a bundle (directory or file)")
    p.add_argument("--source", required=True, help="a video file (read in order) or any streaming.sources spec, e.g. synthetic:")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--frames", type=positive_int, default=300, help="frames to run (default 300)")
    p.add_argument("--compare", default=None, metavar="OTHER_MODEL", help="a second model, shown side by side")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="numba threads for both engines (default 1: the parallel kernels only pay off on large layers)")
    p.add_argument("--warmup", type=positive_int, default=10, help="dense-engine warm-up frames (default 10)")
    p.add_argument("--keyframe-interval", type=positive_int, default=None, help="dense refresh every N frames (default: first frame only)")
    p.add_argument("--repeat", type=repeat_arg, default=1, help="play the source N times, 0: endlessly (--frames still ends it; default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_crop_argument(p)
    add_motion_argument(p)
    add_tuning_argument(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args.model, args.source, args.out, frames=args.frames, compare=args.compare, threads=args.threads,
            warmup=args.warmup, keyframe_interval=args.keyframe_interval, repeat=args.repeat, progress=not args.quiet, crop=args.crop,
            motion=args.motion, tuning=args.tuning)
    except CliError as e:
        return fail(PROG, str(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
