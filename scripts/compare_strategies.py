"""Compare sparsification strategies at matched measured MAC density; write ``docs/strategies.md``.

Training-free (from one dense baseline, ``deltanet.calibrate``): ``uniform``, ``chess``,
``wina``, ``teal``, each calibrated on clips of the training split for ``--target-density``.
Delta-trained models (``--delta NAME=PATH``, e.g. constant vs sine schedule, L1 vs Hoyer;
trained beforehand with ``python -m training.fit``) are measured as trained and, with
``--match`` (threshold-mode models), after scaling their thresholds by one factor so that
their MAC density on the same calibration clips is the target (``deltanet.calibrate.match_density``).

Every model is measured on the validation split of ``--data`` and, with ``--video``, on
clips of a held-out real video (no labels: no accuracy). Columns:

* accuracy: clip top-1 on the validation split;
* MAC density: ``deltanet.measure.measure_model`` (MAC-weighted non-zero deltas, frames t >= 1);
* output MSE: per-frame logits against the model's own dense network (the same weights with
  exact deltas; for the training-free rows, the baseline);
* frame agreement: per-frame top-1 equal to the dense network's; clip agreement: the same for
  the clip prediction (mean of the per-frame logits).

Nothing is trained here. Example (tiny models; see docs/strategies.md for the full commands)::

    python scripts/compare_strategies.py --baseline runs/base/model.keras \\
        --delta sine_l1=runs/sine_l1/model.keras --match --video ../shared/data/box.mp4
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.cli import ArgumentParser, CliError, fail, import_tensorflow_quietly, positive_int  # noqa: E402

METHODS = ("uniform", "chess", "wina", "teal")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="scripts/compare_strategies.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="dense baseline clip model (.keras) for the training-free methods")
    p.add_argument("--delta", action="append", default=[], metavar="NAME=PATH", help="a delta-trained model to compare (repeatable)")
    p.add_argument("--methods", default=",".join(METHODS), help="training-free methods, comma-separated")
    p.add_argument("--target-density", default="0.25", help="MAC density target(s), comma-separated (e.g. 0.25,0.1)")
    p.add_argument("--match", action="store_true", help="also scale each delta-trained model's thresholds to the target density")
    p.add_argument("--data", default="embedded")
    p.add_argument("--split", type=int, choices=(1, 2, 3), default=1)
    p.add_argument("--clips", type=positive_int, default=256, help="calibration clips from the training split")
    p.add_argument("--sweep-clips", type=positive_int, default=64, help="clips for the chess/teal error sweeps")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--video", default=None, help="a held-out real video (e.g. ../shared/data/box.mp4)")
    p.add_argument("--video-frames", type=positive_int, default=300, help="decode at most this many frames of --video")
    p.add_argument("--out", default=str(ROOT / "docs" / "strategies.md"), help="markdown report ('-' for none)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--title", default="Sparsification strategies at matched MAC density")
    p.add_argument("--seed", type=int, default=0, help="seed of the clip sampling (as training.calibrate)")
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    p.add_argument("--command", action="append", default=[], help="a command that made the models, listed in the report (repeatable)")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def video_clips(path: str, size: int, frames: int, stride: int, max_frames: int, batch_size: int):
    """Consecutive non-overlapping clips of ``frames`` frames (every ``stride``-th) of a video, batched."""
    import numpy as np

    from training.video import read_video

    video = read_video(path, size=(size, size), max_frames=max_frames)
    span = (frames - 1) * stride + 1
    starts = range(0, len(video) - span + 1, span)
    clips = np.stack([video[s : s + span : stride] for s in starts]) if len(starts) else np.zeros((0,))
    if clips.ndim != 5 or not len(clips):
        raise CliError(f"--video {path}: {len(video)} frames are too few for one clip of {frames} frames at stride {stride}")
    return [clips[i : i + batch_size] for i in range(0, len(clips), batch_size)]


def per_frame_logits(model, batches):
    import numpy as np

    from deltanet.models import frame_logits_model

    fm = frame_logits_model(model)
    return np.concatenate([np.asarray(fm.predict_on_batch(x.astype(np.float32)), np.float32) for x in batches])


def evaluate(model, batches, dense_logits, labels=None) -> dict:
    import numpy as np

    from deltanet.calibrate import output_agreement
    from deltanet.measure import measure_model

    logits = per_frame_logits(model, batches)
    row = {"mac_density": measure_model(model, batches)["mac_density"], **output_agreement(logits, dense_logits)}
    row["accuracy"] = float(np.mean(logits.mean(1).argmax(-1) == labels)) if labels is not None else float("nan")
    return row


def dense_twin_logits(model, sets):
    """Per-frame logits of ``model``'s own dense network (same weights, exact deltas) on each batch set."""
    from deltanet.calibrate import prepare_model

    twin = prepare_model(model)  # thresholds 0: the output equals the dense network's
    return [per_frame_logits(twin, b) for b in sets]


def fmt(v, digits=3):
    import math

    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


BEGIN, END = "<!-- compare_strategies:begin -->", "<!-- compare_strategies:end -->"


def write_report(path: Path, rows: list[dict], args, meta: dict) -> None:
    """Write the tables. If ``path`` exists and holds the BEGIN/END markers, only the text
    between them is replaced (hand-written sections around them are kept)."""
    lines = [f"## {args.title}", ""]
    lines += [
        f"Target MAC density **{args.target_density}** (training-free methods calibrated on {meta['calibration_clips']} "
        f"clips of the training split of `{args.data}`; delta-trained models as trained and, where marked *matched*, "
        "with their thresholds scaled by one factor to the target on the same clips).",
        "",
        f"Evaluation sets: {', '.join(meta['sets'])}. Model input {meta['size']}x{meta['size']}, {meta['frames']} frames "
        f"per clip, stride {meta['stride']}. Baseline `{args.baseline}`.",
        "",
        "MAC density: `deltanet.measure.measure_model` (MAC-weighted fraction of non-zero deltas, frames t >= 1). "
        "MSE / agreement: per-frame logits against the model's own dense network (same weights, exact deltas); "
        "clip agreement compares the clip predictions (mean of the per-frame logits). Accuracy: clip top-1 (labelled sets only).",
        "",
    ]
    for set_name in dict.fromkeys(r["set"] for r in rows):
        lines += [
            f"### {set_name}",
            "",
            "| strategy | accuracy | MAC density | output MSE | frame top-1 agreement | clip top-1 agreement |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in (r for r in rows if r["set"] == set_name):
            lines.append(
                f"| {r['strategy']} | {fmt(r['accuracy'])} | {fmt(r['mac_density'], 4)} | {fmt(r['mse'], 4)} | "
                f"{fmt(r['top1_agreement'])} | {fmt(r['clip_agreement'])} |"
            )
        lines.append("")
    lines += ["Command:", "", "```sh"] + meta["commands"] + ["```", ""]
    if args.note:
        lines += ["Notes:", ""] + [f"- {n}" for n in args.note] + [""]
    lines += [f"_Generated by `scripts/compare_strategies.py` in {meta['seconds']:.0f} s._"]
    block = "\n".join([BEGIN, *lines, END])
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
        text = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) :]
    else:
        text = block + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        return fail(parser.prog, f"--methods: unknown {bad}; choose from {METHODS}")
    deltas = []
    for spec in args.delta:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            return fail(parser.prog, f"--delta expects NAME=PATH to an existing model file, got {spec!r}")
        deltas.append((name, path))
    if not Path(args.baseline).is_file():
        return fail(parser.prog, f"--baseline: no such model file: {args.baseline}")
    if args.video and not Path(args.video).is_file():
        return fail(parser.prog, f"--video: no such file: {args.video}")
    try:
        args.targets = [float(t) for t in args.target_density.split(",") if t]
    except ValueError:
        args.targets = []
    if not args.targets or not all(0 < t < 1 for t in args.targets):
        return fail(parser.prog, f"--target-density must be numbers in (0, 1), got {args.target_density!r}")
    try:
        return run(args, methods, deltas)
    except CliError as e:
        return fail(parser.prog, str(e))


def run(args, methods, deltas) -> int:
    import_tensorflow_quietly()
    import numpy as np

    import deltanet
    from deltanet import calibrate as cal
    from training.fit import FitConfig, load_data

    import keras

    started = time.time()
    keras.utils.set_random_seed(args.seed)
    base = deltanet.load_model(args.baseline)
    info = deltanet.model_info(base)
    size = int(base.input.shape[2])
    frames, stride = int(info.get("frames", 8)), int(info.get("stride", 2))
    cfg = FitConfig(data=args.data, split=args.split, size=size, frames=frames, stride=stride, batch_size=args.batch_size, seed=args.seed)
    index, train_ds, val_ds, _ = load_data(cfg)
    names = info.get("class_names")
    if names and list(names) != list(index.class_names):
        raise CliError(f"--data has classes {index.class_names} but the baseline was trained on {names}")
    calib, n = [], 0
    for x, _ in train_ds:
        x = x.numpy()[: args.clips - n]
        calib.append(x)
        n += len(x)
        if n >= args.clips:
            break
    val = [(x.numpy(), y.numpy()) for x, y in val_ds]
    sets = {"val": ([x for x, _ in val], np.concatenate([y for _, y in val]))}
    if args.video:
        sets[Path(args.video).name] = (video_clips(args.video, size, frames, stride, args.video_frames, args.batch_size), None)
    _log(f"calibration: {n} training clips; sets: " + ", ".join(f"{k} ({sum(len(b) for b in v[0])} clips)" for k, v in sets.items()))

    rows = []

    def add(strategy, model, dense, target=None):
        for (set_name, (batches, labels)), ref in zip(sets.items(), dense):
            r = evaluate(model, batches, ref, labels)
            rows.append({"strategy": strategy, "set": set_name, "target": target, **r})
            _log(f"{strategy:28s} {set_name:10s} acc {fmt(r['accuracy'])}  MAC density {r['mac_density']:.4f}  mse {r['mse']:.4g}  "
                 f"frame agree {r['top1_agreement']:.3f}  clip agree {r['clip_agreement']:.3f}")  # fmt: skip

    base_dense = dense_twin_logits(base, [b for b, _ in sets.values()])
    exact = cal.prepare_model(base)
    add("dense baseline (exact deltas)", exact, base_dense)
    for target in args.targets:
        for method in methods:
            t = time.time()
            model = cal.prepare_model(base)
            res = cal.calibrate(model, calib, target, method, sweep_clips=args.sweep_clips)
            _log(f"{method} @ {target}: calibrated in {time.time() - t:.0f} s ({res.model_runs} model runs), dense layers {res.dense_layers}")
            add(f"{method} @ {target} (training-free)", model, base_dense, target)
    for name, path in deltas:
        model = deltanet.load_model(path)
        dense = dense_twin_logits(model, [b for b, _ in sets.values()])
        add(f"{name} (as trained)", model, dense)
        if not args.match:
            continue
        for target in args.targets:
            model = deltanet.load_model(path)  # the trained thresholds again
            try:
                a = cal.match_density(model, calib, target)
            except ValueError as e:
                _log(f"{name}: not matched ({e})")
                break
            add(f"{name} @ {target} (matched, thresholds x{a:.3g})", model, dense, target)

    commands = list(args.command) + ["python scripts/compare_strategies.py " + " ".join(sys.argv[1:])]
    meta = {"calibration_clips": n, "sets": [f"{k} ({sum(len(b) for b in v[0])} clips)" for k, v in sets.items()],
            "size": size, "frames": frames, "stride": stride, "seconds": time.time() - started, "commands": commands}  # fmt: skip
    if args.out != "-":
        write_report(Path(args.out), rows, args, meta)
        _log(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "meta": meta, "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
