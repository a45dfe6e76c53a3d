"""``python -m training.evaluate``: a trained clip model measured as it is trained *and* as it is deployed.

* **clip** (always): the subset's centered clips, evaluated exactly as ``training.fit``
  evaluates (same pipeline, same clip length and stride, ``deltanet.measure`` densities).
* **streaming** (``--streaming``): every video of the subset fed frame by frame, at its own
  length and frame rate, through ``streaming.DeltaEngine`` from a fresh ``reset()``. The
  prediction at each frame is what ``streaming.live`` would show (``streaming.prediction``:
  the softmax of the mean logits of the last ``--window`` frames). The same frames go through
  the dense per-frame Keras network (the model without its delta layers), smoothed the same
  way, for the dense figures and the top-1 agreement. MAC density over the streams is the
  engine's count of transmitted non-zero deltas per MAC layer (frames after each video's
  first), MAC-weighted by ``deltanet.density``; ``executed_mac_density`` is what the kernels
  multiplied (pixel-wise kernels multiply an active pixel's zeros too).

Writes ``--json`` (default ``runs/evaluate/evaluate.json``) and beside it ``<stem>_videos.csv``
(one row per video), ``<stem>_layers.csv`` and ``<stem>_accuracy_vs_frames.png``; prints a table.
Choices are made on ``--subset val``; the figures a README claims come from ``--subset test``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from deltanet.cli import ArgumentParser, CliError, add_tuning_argument, fail, import_tensorflow_quietly, positive_int

PROG = "python -m training.evaluate"
DEFAULT_JSON = "runs/evaluate/evaluate.json"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Evaluate a trained clip model on whole videos: clip accuracy as in training, "
                       "and (--streaming) frame by frame through the delta engine as deployed.")
    p.add_argument("--model", required=True, help="trained clip model (.keras), e.g. runs/fit/model.keras")
    p.add_argument("--data", default="embedded", help="'embedded' (default), a UCF101 root, a <class>/<video> folder")
    p.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="UCF101 split (default 1)")
    p.add_argument("--subset", choices=("test", "val"), default="test", help="which videos (default test; make choices on val)")
    p.add_argument("--streaming", action="store_true", help="also run every video frame by frame through the delta engine")
    p.add_argument("--max-videos", type=positive_int, default=None, help="at most this many videos (default: all)")
    p.add_argument("--threads", type=positive_int, default=1, help="numba threads of the engine (default 1)")
    p.add_argument("--window", type=positive_int, default=None,
                   help="frames averaged for the streaming prediction (default: streaming.prediction.default_window, 3 training clips)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch for the clip evaluation (default 8)")
    p.add_argument("--json", default=DEFAULT_JSON, help=f"where to write the results (default {DEFAULT_JSON})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_tuning_argument(p)
    return p


# --- pieces -------------------------------------------------------------------------------------


def _subset_videos(index, subset: str, max_videos: int | None) -> list[tuple[str, int]]:
    videos = index.subset(subset)
    if not videos:
        raise CliError(f"{index.describe()}: no {subset} videos")
    if max_videos is not None and max_videos < len(videos):
        # every class stays represented: take videos round-robin over the classes
        queues: dict[int, list] = {}
        for v in videos:
            queues.setdefault(v[1], []).append(v)
        order: list = []
        while len(order) < max_videos:
            for q in queues.values():
                if q and len(order) < max_videos:
                    order.append(q.pop(0))
        videos = sorted(order)
    return videos


def clip_evaluation(model, index, subset: str, videos: list, info: dict, size: int, batch_size: int) -> dict:
    """Accuracy and densities on the subset's centered clips, as ``training.fit`` measures them."""
    from deltanet.measure import measure_model
    from training.pipeline import make_clip_dataset

    ds = make_clip_dataset(videos, frames=int(info["frames"]), stride=int(info.get("stride") or 1), size=(size, size),
                           batch_size=batch_size, training=False, class_count=index.num_classes, cache=False)
    if int(model.input.shape[-1]) == 1:  # a gray model gets gray clips, as training.fit gives them
        from training.fit import gray_clips

        ds = ds.map(gray_clips)
    correct = total = 0
    for clips, labels in ds:
        pred = np.argmax(np.asarray(model.predict_on_batch(np.asarray(clips))), axis=-1)
        correct += int(np.sum(pred == np.asarray(labels)))
        total += len(pred)
    measured = measure_model(model, ds)
    return {"accuracy": correct / total if total else float("nan"), "clips": total,
            "mac_density": measured["mac_density"], "layers": measured["layers"]}


def stream_video(engine, dense_model, frames: np.ndarray, label: int) -> dict:
    """One video through the engine (from a reset) and the dense per-frame Keras network: per-frame logits."""
    engine.reset()
    logits, nnz, executed = [], [], []
    prepared = []
    for frame in frames:
        x = engine.prepare(frame)
        prepared.append(x)
        out, stats = engine.step(x)
        logits.append(out)
        nnz.append(stats.nonzero_deltas.copy())
        executed.append(stats.executed_macs.copy())
    dense_logits = np.concatenate([np.asarray(dense_model.predict_on_batch(np.stack(prepared[i:i + 64])))
                                   for i in range(0, len(prepared), 64)])
    return {"label": int(label), "logits": np.stack(logits), "dense_logits": dense_logits,
            "nnz": np.stack(nnz), "executed": np.stack(executed)}


def predict(results: list[dict], window: int) -> list[dict]:
    """Add each frame's shown prediction (``pred``, ``dense_pred``): the live smoothing over ``window`` frames."""
    from streaming.prediction import SmoothedPrediction

    smooth = SmoothedPrediction(window)
    for r in results:
        r["pred"] = np.argmax(smooth.run(r["logits"]), axis=1)
        r["dense_pred"] = np.argmax(smooth.run(r["dense_logits"]), axis=1)
    return results


def summarize_streams(results: list[dict], engine, clip_layers: list[dict]) -> tuple[dict, dict, list[dict], np.ndarray]:
    """Streaming and dense figures, per-layer table, and accuracy as a function of frames seen."""
    from deltanet import density

    elements = engine.input_elements  # what FrameStats.nonzero_deltas counts among, per MAC layer
    dense_macs = engine.dense_macs.astype(np.float64)
    later = [r for r in results if len(r["pred"]) > 1]
    nnz = sum(r["nnz"][1:].sum(axis=0) for r in later) if later else np.zeros(len(elements))
    executed = sum(r["executed"][1:].sum(axis=0) for r in later) if later else np.zeros(len(elements))
    n_later = sum(len(r["pred"]) - 1 for r in later)
    per_layer = nnz / np.maximum(elements * max(n_later, 1), 1)
    per_layer_exec = executed / np.maximum(dense_macs * max(n_later, 1), 1)

    def acc(key):
        last = float(np.mean([r[key][-1] == r["label"] for r in results]))
        mean = float(np.mean([np.mean(r[key] == r["label"]) for r in results]))
        return last, mean

    last, mean = acc("pred")
    dlast, dmean = acc("dense_pred")
    agreement = float(np.mean(np.concatenate([r["pred"] == r["dense_pred"] for r in results])))
    streaming = {
        "accuracy_last_frame": last,
        "accuracy_mean": mean,
        "mac_density": density.mac_density(dense_macs, per_layer),
        "executed_mac_density": density.mac_density(dense_macs, per_layer_exec),
        "top1_agreement_with_dense": agreement,
        "frames": int(sum(len(r["pred"]) for r in results)),
    }
    dense = {"accuracy_last_frame": dlast, "accuracy_mean": dmean}
    clip_by_name = {rec["name"]: rec for rec in clip_layers}
    layers = []
    for i, name in enumerate(engine.layer_names):
        clip = clip_by_name.get(name, {})
        layers.append({"name": name, "macs": int(engine.dense_macs[i]),
                       "temporal_density_clip": clip.get("temporal_density"),
                       "spatial_density_clip": clip.get("spatial_density"),
                       "temporal_density_streaming": float(per_layer[i]),
                       "executed_density_streaming": float(per_layer_exec[i])})
    longest = max(len(r["pred"]) for r in results)
    curve = np.full((2, longest), np.nan)
    for t in range(longest):
        seen = [r for r in results if len(r["pred"]) > t]
        curve[0, t] = np.mean([r["pred"][t] == r["label"] for r in seen])
        curve[1, t] = np.mean([r["dense_pred"][t] == r["label"] for r in seen])
    return streaming, dense, layers, curve


def _plot(curve: np.ndarray, clip_acc: float, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    t = np.arange(1, curve.shape[1] + 1)
    ax.plot(t, curve[0], label="delta engine (streaming)")
    ax.plot(t, curve[1], "--", label="dense Keras, per frame (streaming)")
    ax.axhline(clip_acc, color="grey", lw=0.8, label=f"clip accuracy ({clip_acc:.3f})")
    ax.set_xlabel("frames seen")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def format_table(result: dict) -> str:
    c, s, d = result["clip"], result.get("streaming"), result.get("dense_streaming")
    lines = [f"{result['subset']}: {result['videos']} videos ({result['model']})",
             f"  clip accuracy {c['accuracy']:.4f}   clip MAC density {c['mac_density']:.4f}"]
    if s:
        lines += [f"  streaming accuracy: last frame {s['accuracy_last_frame']:.4f}, mean over frames {s['accuracy_mean']:.4f}"
                  f"   (dense Keras: {d['accuracy_last_frame']:.4f} / {d['accuracy_mean']:.4f})",
                  f"  streaming MAC density {s['mac_density']:.4f} (executed {s['executed_mac_density']:.4f})   "
                  f"top-1 agreement with dense {s['top1_agreement_with_dense']:.4f}   {s['frames']} frames"]
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------------


def run(model_path: str, *, data: str = "embedded", split: int = 1, subset: str = "test", streaming: bool = False,
        max_videos: int | None = None, threads: int = 1, window: int | None = None, batch_size: int = 8,
        json_path: str = DEFAULT_JSON, progress: bool = True, tuning: str = "auto") -> dict:
    """Evaluate ``model_path`` on ``subset``; returns (and writes) the result dict. Raises ``CliError``."""
    if not Path(model_path).is_file():
        raise CliError(f"--model: no such model file: {model_path}")
    if data != "embedded" and not data.startswith("tfds:") and not Path(data).expanduser().exists():
        raise CliError(f"--data: {data!r} does not exist")
    if data.startswith("tfds:"):
        raise CliError("--data tfds:NAME is not supported here (evaluation needs the video files); use a UCF101 root")
    out = Path(json_path)
    if out.exists() and out.is_dir():
        raise CliError(f"--json: {json_path} is a directory")
    import_tensorflow_quietly()
    import deltanet
    from streaming.engine import DeltaEngine
    from streaming.prediction import default_window
    from streaming.tuning import use_tuning
    from training.ucf101 import DataError, load_dataset_index
    from training.video import VideoError, read_video

    started = time.time()
    try:
        model = deltanet.load_model(model_path)
    except Exception as e:  # a file Keras cannot read: one line, not a traceback
        raise CliError(f"--model: cannot load {model_path}: {e}") from e
    info = deltanet.model_info(model)
    if not info.get("frames"):
        raise CliError(f"--model: {model_path} is not a clip model trained by training.fit (no 'frames' in its info)")
    try:
        index = load_dataset_index(data if data != "embedded" else str(_embedded()), split=split)
    except DataError as e:
        raise CliError(str(e)) from e
    if list(info.get("class_names") or index.class_names) != index.class_names:
        raise CliError(f"the model's classes {info.get('class_names')} are not the data's {index.class_names}")
    videos = _subset_videos(index, subset, max_videos)
    size = int(model.input.shape[2])
    _log(f"{index.describe()}; evaluating {len(videos)} {subset} videos")
    clip = clip_evaluation(model, index, subset, videos, info, size, batch_size)
    result = {"model": str(model_path), "data": data, "split": split, "subset": subset, "videos": len(videos),
              "clip": {"accuracy": clip["accuracy"], "mac_density": clip["mac_density"], "clips": clip["clips"]}}
    skipped = []
    if streaming:
        engine = DeltaEngine.from_keras(model, threads=threads)
        tuned = use_tuning(engine, tuning, model_path, log=_log)
        result["tuning"] = str(tuned) if tuned else None
        dense_model = deltanet.per_frame_model(model)
        window = window or default_window(engine.info)
        results = []
        bar = _bar(len(videos), progress)
        for path, label in videos:
            try:
                frames = read_video(path)
            except VideoError as e:
                skipped.append(f"{path}: {e}")
            else:
                results.append(stream_video(engine, dense_model, frames, label) | {"path": path})
            bar.update(1)
        bar.close()
        if not results:
            raise CliError(f"no {subset} video could be decoded ({len(skipped)} skipped)")
        s, d, layers, curve = summarize_streams(predict(results, window), engine, clip["layers"])
        result.update(streaming=s, dense_streaming=d, window=window, threads=threads, layers=layers,
                      skipped_videos=len(skipped), accuracy_vs_frames={"delta": _round(curve[0]), "dense": _round(curve[1])})
    else:
        result["layers"] = [{"name": r["name"], "macs": r["macs"], "temporal_density_clip": r["temporal_density"],
                             "spatial_density_clip": r["spatial_density"]} for r in clip["layers"]]
    result["seconds"] = round(time.time() - started, 1)
    _write_outputs(out, result, results if streaming else None)
    return result


def _round(x: np.ndarray) -> list:
    return [round(float(v), 4) for v in x]


def _embedded():
    from training.synthetic import make_embedded_dataset

    return make_embedded_dataset(seed=0)


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="streaming", unit="video", disable=not progress, file=sys.stderr)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_outputs(out: Path, result: dict, results: list | None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    _write_atomic(Path(f"{stem}_layers.csv"), _csv(result["layers"]))
    if results is not None:
        rows = [{"video": Path(r["path"]).name, "label": r["label"], "frames": len(r["pred"]),
                 "pred_last_frame": int(r["pred"][-1]), "correct_last_frame": int(r["pred"][-1] == r["label"]),
                 "accuracy_mean": round(float(np.mean(r["pred"] == r["label"])), 6),
                 "dense_pred_last_frame": int(r["dense_pred"][-1]),
                 "top1_agreement_with_dense": round(float(np.mean(r["pred"] == r["dense_pred"])), 6)} for r in results]
        _write_atomic(Path(f"{stem}_videos.csv"), _csv(rows))
        curve = np.array([result["accuracy_vs_frames"]["delta"], result["accuracy_vs_frames"]["dense"]], float)
        _write_atomic(Path(f"{stem}_accuracy_vs_frames.png"),
                      _plot(curve, result["clip"]["accuracy"], f"{Path(result['model']).name} on {result['subset']}"))
    _write_atomic(out, json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args.model, data=args.data, split=args.split, subset=args.subset, streaming=args.streaming,
                     max_videos=args.max_videos, threads=args.threads, window=args.window, batch_size=args.batch_size,
                     json_path=args.json, progress=not args.quiet and sys.stderr.isatty(), tuning=args.tuning)
    except CliError as e:
        return fail(PROG, str(e))
    except KeyboardInterrupt:
        return 130
    print(format_table(result))
    _log(f"-> {args.json} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
