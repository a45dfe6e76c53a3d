"""``python -m streaming.report``: where a delta model spends (and saves) its MACs, frame by frame and layer by layer.

Runs the delta engine over the first ``--frames`` frames of a source (files in order) and
writes to ``--out``:

``report.json``
    Summary of the model (and of ``--compare``'s model under ``"compare"``): ``frames``,
    ``mac_density`` (executed / dense MACs over the frames after the first, through
    ``deltanet.density.mac_density``), ``theoretical_speedup`` (``1 / mac_density``),
    ``speedup_vs_dense_engine`` (median ms of ``DeltaEngine(plan, mode="dense")`` on the same
    frames over the delta engine's median, both after warm-up, interleaved in blocks:
    *measured on this machine*, see ``timing``), ``max_rel_logit_error`` and
    ``top1_agreement`` against the Keras model's per-frame logits on the whole clip, with
    ``frames_over_1e-4``/``first_frame_over_1e-4`` as in ``streaming.bench`` (``.keras`` models
    only; ``null`` for a bundle, with a note), and ``layers``: per MAC layer ``name``,
    ``type``, ``macs_dense``, ``temporal_density`` (non-zero input deltas / input elements),
    ``mac_density`` (executed / dense MACs) -- both means over the frames after the first --
    and ``ms`` (median time of the layer, its encoder included, frames after the first, from a
    second, profiled delta pass that times every step from Python: the layers' ms add up to
    more than the fast path's frame time).
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

import base64
import csv
import html
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.cli import ArgumentParser, CliError, add_crop_argument, fail, positive_int

PROG = "python -m streaming.report"
PLOTS = {"density_heatmap.png": "Per-layer MAC density (executed / dense MACs), frames x layers",
         "timeline.png": "MAC density and latency over time",
         "layer_macs.png": "Dense vs executed MACs per layer (mean per frame, frames after the first)"}
TIMING_NOTE = ("wall-clock medians measured on this machine (delta engine over the frames after the first, "
               "dense engine over all frames, same threads, after warm-up, interleaved blocks); "
               "they vary with hardware and load")


@dataclass
class ModelRun:
    """One model's pass over the frames."""

    label: str
    path: str
    kind: str
    engine: object
    logits: np.ndarray = None
    stats: list = field(default_factory=list)
    dense_ms: list = field(default_factory=list)
    layer_ms: list = field(default_factory=list)   # per frame, from a profiled pass
    reference: np.ndarray | None = None   # Keras per-frame logits
    summary: dict = field(default_factory=dict)


# --- running --------------------------------------------------------------------------------------


def _open(source: str, n: int):
    from streaming.sources import SourceError, open_source, quiet_backend_logs

    quiet_backend_logs()
    try:
        return open_source(source, live=False, max_frames=n)
    except SourceError as e:
        raise CliError(str(e)) from e
    except ValueError as e:
        raise CliError(f"--source {source!r}: {e}") from e


def _read_clips(src, source: str, engines: list, crop=None) -> dict[tuple, np.ndarray]:
    """Every frame of ``src`` (``crop`` cut out first), prepared once per distinct model input shape
    (raw frames are not kept)."""
    from streaming.preprocess import crop_image

    preparers = {}
    for e in engines:
        preparers.setdefault(tuple(e.input_shape), e.prepare)
    clips = {shape: [] for shape in preparers}
    for frame in src:
        for shape, prepare in preparers.items():
            clips[shape].append(prepare(crop_image(frame.image, crop)))
    n = len(next(iter(clips.values())))
    if n < 2:
        raise CliError(f"--source {source!r}: need at least 2 frames, got {n}")
    return {shape: np.stack(frames) for shape, frames in clips.items()}


def _load(path: str, label: str, threads: int | None, keyframe_interval: int | None) -> tuple[ModelRun, object]:
    from streaming.model_io import engine_from_keras_model, load_bundle_engine, load_keras_model, model_kind

    kw = dict(threads=threads, keyframe_interval=keyframe_interval)
    if model_kind(path) == "keras":
        keras_model = load_keras_model(path)
        return ModelRun(label, path, "keras", engine_from_keras_model(keras_model, path, **kw)), keras_model
    return ModelRun(label, path, "bundle", load_bundle_engine(path, **kw)), None


PASSES = 3   # delta, dense, profiled delta


def _run_engines(run: ModelRun, clip: np.ndarray, threads: int | None, warmup: int, block: int, bar) -> None:
    """Delta and dense engine over ``clip``, interleaved in blocks so load drift hits both alike;
    then a profiled delta pass for the per-layer times (the fast path does not time layers)."""
    from streaming.engine import DeltaEngine

    delta = run.engine
    dense = DeltaEngine(delta.plan, mode="dense", threads=threads)
    delta.warmup()
    for f in clip[: max(1, warmup)]:
        dense.step(f)
    dense.reset()
    logits = []
    for b0 in range(0, len(clip), block):
        for f in clip[b0:b0 + block]:
            out, s = delta.step(f)
            logits.append(out)
            run.stats.append(s)
            bar.update(1)
        for f in clip[b0:b0 + block]:
            run.dense_ms.append(dense.step(f)[1].total_ms)
            bar.update(1)
    run.logits = np.stack(logits)
    if getattr(delta, "profile", True):   # already timed per layer (or an engine without the option)
        run.layer_ms = [s.layer_ms for s in run.stats]
        bar.update(len(clip))
        return
    profiled = delta.clone(profile=True)
    profiled.warmup()
    for f in clip:
        run.layer_ms.append(profiled.step(f)[1].layer_ms)
        bar.update(1)


def _keras_reference(keras_model, clip: np.ndarray) -> np.ndarray:
    import deltanet
    from training.cli import quiet_stderr_fd

    with quiet_stderr_fd():
        return deltanet.frame_logits_model(keras_model).predict(clip[None].astype(np.float32), verbose=0, batch_size=1)[0]


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
    executed = np.stack([s.executed_macs for s in run.stats]).astype(np.float64)
    nonzero = np.stack([s.nonzero_deltas for s in run.stats]).astype(np.float64)
    layer_ms = np.stack(run.layer_ms)
    later = slice(1, None)   # frames after the first (frame 0 is the dense keyframe)
    mac_density = density.mac_density(dense_macs, executed[later].mean(axis=0) / dense_macs)
    delta_ms = np.array([s.total_ms for s in run.stats[1:]])
    dense_ms = np.array(run.dense_ms)
    steps = e.plan.mac_steps()
    layers = []
    for i, name in enumerate(e.layer_names):
        layers.append({
            "name": name,
            "type": steps[i]["op"],
            "macs_dense": int(e.dense_macs[i]),
            "temporal_density": float(nonzero[later, i].mean() / e.input_elements[i]),
            "mac_density": float(executed[later, i].mean() / dense_macs[i]),
            "executed_macs": float(executed[later, i].mean()),
            "ms": float(np.median(layer_ms[later, i])),
        })
    out = {
        "model": run.path,
        "label": run.label,
        "kind": run.kind,
        "source": str(source),
        "input_shape": list(e.input_shape),
        "frames": len(run.stats),
        "keyframes": int(sum(s.keyframe for s in run.stats)),
        "mac_density": mac_density,
        "theoretical_speedup": density.theoretical_speedup(mac_density),
        "speedup_vs_dense_engine": float(np.median(dense_ms) / np.median(delta_ms)),
        "timing": {
            "measured_on": _machine(),
            "threads": threads_used,
            "delta_ms_median": float(np.median(delta_ms)),
            "delta_ms_mean": float(delta_ms.mean()),
            "dense_ms_median": float(np.median(dense_ms)),
            "dense_ms_mean": float(dense_ms.mean()),
            "note": TIMING_NOTE,
        },
        "dense_macs_per_frame": int(e.dense_macs.sum()),
        "executed_macs_per_frame": float(executed[later].sum(axis=1).mean()),
        "max_rel_logit_error": None,
        "frames_over_1e-4": None,
        "first_frame_over_1e-4": None,
        "top1_agreement": None,
        "layers": layers,
    }
    if run.reference is not None:
        ref = run.reference
        err = np.abs(run.logits - ref).max(axis=1) / np.maximum(np.abs(ref).max(axis=1), 1e-12)
        out["max_rel_logit_error"] = float(err.max())
        # float32 decision flips (see docs/STATUS.md) show up as a jump that then persists
        out["frames_over_1e-4"] = int(np.sum(err > 1e-4))
        out["first_frame_over_1e-4"] = int(np.argmax(err > 1e-4)) if np.any(err > 1e-4) else None
        out["top1_agreement"] = float(np.mean(run.logits.argmax(1) == ref.argmax(1)))
        out["reference"] = "Keras model's per-frame logits (deltanet.frame_logits_model) on the whole clip"
    else:
        out["reference"] = "none: the model is a bundle (no Keras model to compare with)"
    return out


# --- tables ---------------------------------------------------------------------------------------


def frame_rows(run: ModelRun) -> list[dict]:
    from deltanet.density import mac_density

    e = run.engine
    labels = _labels(e)
    probs = _softmax_rows(run.logits.astype(np.float64))
    rows = []
    for s, p, dms in zip(run.stats, probs, run.dense_ms):
        k = int(p.argmax())
        rows.append({
            "model": run.label, "frame": s.index, "keyframe": int(s.keyframe),
            "mac_density": mac_density(e.dense_macs, s.executed_macs / e.dense_macs),
            "executed_macs": int(s.executed_macs.sum()), "dense_macs": int(e.dense_macs.sum()),
            "latency_ms": float(s.total_ms), "dense_ms": float(dms), "top1": labels[k], "score": float(p[k]),
        })
    return rows


def layer_rows(run: ModelRun) -> list[dict]:
    e = run.engine
    types = [s["op"] for s in e.plan.mac_steps()]
    rows = []
    for s, ms in zip(run.stats, run.layer_ms):
        for i, name in enumerate(e.layer_names):
            rows.append({
                "model": run.label, "frame": s.index, "keyframe": int(s.keyframe), "layer_index": i, "layer": name,
                "type": types[i], "nonzero_deltas": int(s.nonzero_deltas[i]), "input_elements": int(e.input_elements[i]),
                "temporal_density": float(s.nonzero_deltas[i] / e.input_elements[i]),
                "executed_macs": int(s.executed_macs[i]), "dense_macs": int(e.dense_macs[i]),
                "mac_density": float(s.executed_macs[i] / e.dense_macs[i]), "ms": float(ms[i]),
            })
    return rows


def _labels(engine) -> list[str]:
    from streaming.live import class_labels

    return class_labels(engine)


SUMMARY_ROWS = (
    ("frames", "frames", "{:d}"),
    ("MAC density (frames after the first)", "mac_density", "{:.4f}"),
    ("theoretical speedup (1 / MAC density)", "theoretical_speedup", "{:.1f}x"),
    ("measured speedup vs dense engine (this machine)", "speedup_vs_dense_engine", "{:.2f}x"),
    ("delta engine median ms", ("timing", "delta_ms_median"), "{:.3f}"),
    ("dense engine median ms", ("timing", "dense_ms_median"), "{:.3f}"),
    ("max relative logit error vs Keras", "max_rel_logit_error", "{:.2e}"),
    ("frames with relative error > 1e-4", "frames_over_1e-4", "{:d}"),
    ("top-1 agreement with Keras", "top1_agreement", "{:.3f}"),
    ("dense MACs per frame", "dense_macs_per_frame", "{:,d}"),
    ("MAC layers", "layers", None),
)


def _cell(summary: dict, key, fmt) -> str:
    v = summary[key[0]][key[1]] if isinstance(key, tuple) else summary[key]
    if fmt is None:
        return str(len(v))
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    return "inf" if isinstance(v, float) and np.isinf(v) else fmt.format(v)


def summary_table(summaries: list[dict]) -> list[list[str]]:
    head = ["", *[s["label"] for s in summaries]]
    return [head] + [[name, *[_cell(s, key, fmt) for s in summaries]] for name, key, fmt in SUMMARY_ROWS]


def layer_table(summary: dict) -> list[list[str]]:
    rows = [["layer", "type", "dense MACs", "temporal density", "MAC density", "ms (median)"]]
    for lay in summary["layers"]:
        rows.append([lay["name"], lay["type"], f"{lay['macs_dense']:,d}", f"{lay['temporal_density']:.4f}",
                     f"{lay['mac_density']:.4f}", f"{lay['ms']:.4f}"])
    return rows


def format_text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- plots ----------------------------------------------------------------------------------------


def make_plots(runs: list[ModelRun]) -> dict[str, bytes]:
    """PNG bytes of each plot in ``PLOTS``; each model gets its own panel or line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm
    from matplotlib.ticker import PercentFormatter

    pngs = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        pngs[name] = buf.getvalue()

    # frames x layers heatmap, one panel per model
    n = len(runs)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n + 1.2, 4.2), squeeze=False, constrained_layout=True)
    im = None
    for ax, r in zip(axes[0], runs):
        dens = np.stack([s.executed_macs / r.engine.dense_macs for s in r.stats]).T  # layers x frames
        # square-root colour scale: 1% and 5% stay apart, and so do 40% and 85%
        im = ax.imshow(dens, aspect="auto", interpolation="nearest", cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1))
        names = r.engine.layer_names
        step = max(1, len(names) // 24)
        ax.set_yticks(range(0, len(names), step), [names[i] for i in range(0, len(names), step)], fontsize=7)
        ax.set_xlabel("frame")
        ax.set_title(r.label, fontsize=10)
    cb = fig.colorbar(im, ax=axes[0].tolist(), label="MAC density (square-root scale)")
    cb.set_ticks([0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
    cb.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    save(fig, "density_heatmap.png")

    # density and latency over time
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True, constrained_layout=True)
    for i, r in enumerate(runs):
        c = f"C{i}"
        d = [float(s.executed_macs.sum() / r.engine.dense_macs.sum()) for s in r.stats]
        a1.plot(range(len(d)), d, color=c, lw=1.2, label=r.label)
        a2.plot(range(len(d)), [s.total_ms for s in r.stats], color=c, lw=1.2, label=f"{r.label}: delta engine")
        a2.plot(range(len(d)), r.dense_ms, color=c, lw=1, ls="--", alpha=0.8, label=f"{r.label}: dense engine")
    a1.set_ylim(0, 1.03)
    a1.yaxis.set_major_formatter(PercentFormatter(1.0))
    a1.set_ylabel("MAC density")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.set_ylabel("ms per frame (this machine)")
    a2.set_xlabel("frame")
    a2.set_yscale("log")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    save(fig, "timeline.png")

    # dense vs executed MACs per layer
    fig, axes = plt.subplots(n, 1, figsize=(9, 3.6 * n), squeeze=False, constrained_layout=True)
    for ax, r in zip(axes[:, 0], runs):
        e = r.engine
        executed = np.stack([s.executed_macs for s in r.stats[1:]]).mean(axis=0)
        x = np.arange(len(e.layer_names))
        ax.bar(x - 0.2, e.dense_macs, 0.4, label="dense", color="0.6")
        ax.bar(x + 0.2, np.where(executed > 0, executed, np.nan), 0.4, label="executed (mean)", color="C2")
        ax.set_yscale("log")
        for xi in x[executed == 0]:   # nothing to draw on a log axis: say it
            ax.annotate("0", (xi + 0.2, 0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                        ha="center", fontsize=8, color="C2")
        ax.set_xticks(x, e.layer_names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("MACs per frame")
        ax.set_title(r.label, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    save(fig, "layer_macs.png")
    return pngs


# --- HTML -----------------------------------------------------------------------------------------


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, summaries: list[dict], pngs: dict[str, bytes]) -> str:
    css = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px}"
           "td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f2f2}"
           "img{max-width:100%;border:1px solid #ddd}.note{color:#666;font-size:13px}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>deltanet sparsity report</title><style>{css}</style></head><body>",
             "<h1>deltanet sparsity report</h1>",
             f"<p>Source <code>{html.escape(report['source'])}</code>, {report['frames']} frames. "
             + " ".join(f"{html.escape(s['label'])}: <code>{html.escape(s['model'])}</code>." for s in summaries) + "</p>",
             "<h2>Summary</h2>", _html_table(summary_table(summaries)),
             f"<p class='note'>Timing: {html.escape(TIMING_NOTE)}. Machine: {html.escape(summaries[0]['timing']['measured_on'])}, "
             f"{summaries[0]['timing']['threads']} engine thread(s). Densities exclude frame 0 (the dense first pass).</p>"]
    for s in summaries:
        if s["max_rel_logit_error"] is None:
            parts.append(f"<p class='note'>{html.escape(s['label'])}: logit error not measured ({html.escape(s['reference'])}).</p>")
    for name, title in PLOTS.items():
        data = base64.b64encode(pngs[name]).decode("ascii")
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
    for s in summaries:
        parts.append(f"<h2>Layers: {html.escape(s['label'])}</h2>")
        parts.append(_html_table(layer_table(s)))
    parts.append("<p class='note'>Per-frame and per-layer numbers: frames.csv, layers.csv and report.json next to this page.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


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


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _labels_for(paths: list[str]) -> list[str]:
    labels = [Path(p).stem or Path(p).name for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{lab}#{i + 1}" for i, lab in enumerate(labels)]
    return labels


def run(model: str, source: str, out_dir: str, *, frames: int = 300, compare: str | None = None, threads: int | None = 1,
        warmup: int = 10, block: int = 25, keyframe_interval: int | None = None, progress: bool = True,
        crop=None, out=None) -> dict:
    """Write the report into ``out_dir``; returns the report.json dict. Prints the summary table on ``out``.

    ``crop`` (a ``streaming.preprocess.Crop``) is cut from every frame before resizing.
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
    src = _open(source, frames)   # a bad source fails before the (slow) model loading
    try:
        if crop is not None:
            try:
                crop.box(*src.size)
            except ValueError as e:
                raise CliError(f"--crop: {e}") from e
        runs, keras_models = [], []
        for p, label in zip(paths, _labels_for(paths)):
            r, km = _load(p, label, threads, keyframe_interval)
            runs.append(r)
            keras_models.append(km)
        clips = _read_clips(src, source, [r.engine for r in runs], crop)
    finally:
        src.close()
    n_frames = len(next(iter(clips.values())))
    import numba

    threads_used = int(numba.get_num_threads())
    with tqdm(total=PASSES * n_frames * len(runs), desc="report", unit="frame", file=sys.stderr, disable=not progress,
              mininterval=0.5) as bar:
        for r, km in zip(runs, keras_models):
            clip = clips[tuple(r.engine.input_shape)]
            bar.set_postfix_str(r.label)
            _run_engines(r, clip, threads, warmup, block, bar)
            if km is not None:
                r.reference = _keras_reference(km, clip)
    summaries = [summarize(r, source, threads_used) for r in runs]
    report = dict(summaries[0])
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["files"] = {"frames.csv": "one row per (model, frame)", "layers.csv": "one row per (model, frame, MAC layer)",
                       **{k: v for k, v in PLOTS.items()}, "report.html": "self-contained page with all of the above"}
    report["densities_note"] = "means over the frames after the first (frame 0 is the dense first pass); per-frame values in the CSVs"
    if compare:
        report["compare"] = summaries[1]

    out_path.mkdir(parents=True, exist_ok=True)
    fr = [row for r in runs for row in frame_rows(r)]
    lr = [row for r in runs for row in layer_rows(r)]
    pngs = make_plots(runs)
    _write_atomic(out_path / "frames.csv", _csv_text(fr))
    _write_atomic(out_path / "layers.csv", _csv_text(lr))
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_crop_argument(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args.model, args.source, args.out, frames=args.frames, compare=args.compare, threads=args.threads,
            warmup=args.warmup, keyframe_interval=args.keyframe_interval, progress=not args.quiet, crop=args.crop)
    except CliError as e:
        return fail(PROG, str(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
