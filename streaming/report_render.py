"""What ``streaming.report`` shows: the summary and layer tables (text and HTML), the PNG plots and
the self-contained HTML page, from the per-frame results of ``streaming.report.ModelRun``."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

PLOTS = {"density_heatmap.png": "Per-layer MAC density (executed / dense MACs), frames x layers",
         "timeline.png": "MAC density and latency over time",
         "layer_macs.png": "Dense vs executed MACs per layer (mean per frame, frames after the first)"}
TIMING_NOTE = ("wall-clock medians measured on this machine (delta engine over the frames after the first, "
               "dense engine over all frames, same threads, after warm-up, interleaved blocks); "
               "they vary with hardware and load")


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
    rows = [["layer", "type", "dense MACs", "temporal density", "MAC density", "ms (median)", "dense fallback (frames)"]]
    for lay in summary["layers"]:
        rows.append([lay["name"], lay["type"], f"{lay['macs_dense']:,d}", f"{lay['temporal_density']:.4f}",
                     f"{lay['mac_density']:.4f}", f"{lay['ms']:.4f}", str(lay.get("fallback_frames", "n/a"))])
    return rows


def format_text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- plots ----------------------------------------------------------------------------------------


def make_plots(runs: list) -> dict[str, bytes]:
    """PNG bytes of each plot in ``PLOTS`` (``runs``: ``streaming.report.ModelRun``s); one panel or line per model."""
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
        dens = (r.executed / r.engine.dense_macs).T  # layers x frames
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
        d = r.executed.sum(axis=1) / r.engine.dense_macs.sum()
        a1.plot(range(len(d)), d, color=c, lw=1.2, label=r.label)
        a2.plot(range(len(d)), r.total_ms, color=c, lw=1.2, label=f"{r.label}: delta engine")
        a2.plot(range(len(d)), r.dense_ms, color=c, lw=1, ls="--", alpha=0.8, label=f"{r.label}: dense engine")
    a1.set_ylim(0, 1.03)
    a1.yaxis.set_major_formatter(PercentFormatter(1.0))
    a1.set_ylabel("MAC density")
    a1.legend(fontsize=8)
    moving = [(i, r) for i, r in enumerate(runs) if r.camera is not None]
    if moving:  # --motion global: the estimated camera motion on a second axis
        a3 = a1.twinx()
        for i, r in moving:
            a3.plot(range(len(r.camera)), np.hypot(r.camera[:, 0], r.camera[:, 1]), color=f"C{i}", lw=0.9, ls=":",
                    label=f"{r.label}: camera motion")  # fmt: skip
        a3.set_ylabel("camera px/frame (estimated)")
        a3.legend(fontsize=8, loc="upper right")
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
        executed = r.executed[1:].mean(axis=0)
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
