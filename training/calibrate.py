"""``python -m training.calibrate``: training-free threshold calibration for a target MAC density.

Takes a trained clip model (a dense baseline, or a deltafied model that was never
delta-trained), re-deltafies its per-frame network with threshold-mode, per-channel delta
layers (``deltanet.calibrate.prepare_model``), sets their thresholds with one of the
methods of ``deltanet.calibrate`` on clips of the training split, measures the result on
the validation split (``deltanet.measure.measure_model``) and writes a new ``.keras`` model
(thresholds are the delta layers' ``threshold`` weights; the calibration summary is added to
the model's ``info`` under ``"calibration"``). A JSON report goes to stdout.

Example::

    python -m training.calibrate --model runs/base/model.keras --data embedded \\
        --target-density 0.25 --method teal --out runs/teal25.keras
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from deltanet.cli import ArgumentParser, CliError, fail, fraction_arg, import_tensorflow_quietly, positive_int

METHODS = ("uniform", "chess", "wina", "teal")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m training.calibrate",
        description="Set a delta model's thresholds for a target MAC density without training.",
    )
    p.add_argument("--model", required=True, help="trained clip model (.keras): a baseline or a deltafied model")
    p.add_argument("--data", default="embedded", help="'embedded' (the generated dataset), a UCF101 root, a <class>/<video> folder, or tfds:NAME")
    p.add_argument("--target-density", type=fraction_arg, required=True, help="MAC density to reach, in (0, 1)")
    p.add_argument("--method", choices=METHODS, default="teal")
    p.add_argument("--out", required=True, help="the calibrated model file to write (.keras)")
    p.add_argument("--clips", type=positive_int, default=256, help="calibration clips taken from the training split (default 256; the density needs many)")
    p.add_argument("--sweep-clips", type=positive_int, default=64, help="clips for the error sweeps of chess and teal (default 64)")
    p.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="UCF101 train/test split")
    p.add_argument("--frames", type=positive_int, default=None, help="frames per clip (default: the model's)")
    p.add_argument("--stride", type=positive_int, default=None, help="frame stride inside a clip (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips per batch")
    p.add_argument("--eval-batches", type=positive_int, default=None, help="measure on at most this many validation batches")
    p.add_argument("--max-dense", type=int, default=3, help="chess: the most layers kept exact that are tried (default 3)")
    p.add_argument("--tol", type=float, default=0.002, help="accepted |density - target| on the calibration clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--verbose", action="store_true", help="progress lines on stderr even when it is not a terminal")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args) -> dict:
    """Calibrate according to parsed ``args``; returns the report. Raises ``CliError``."""
    model_path = Path(args.model)
    if not model_path.is_file():
        raise CliError(f"--model: no such model file: {args.model}")
    out = Path(args.out)
    if out.suffix != ".keras":
        raise CliError(f"--out must be a .keras file path, got {args.out!r}")
    if out.resolve() == model_path.resolve():
        raise CliError("--out must differ from --model")
    if out.parent and not out.parent.exists():
        raise CliError(f"--out: folder {out.parent} does not exist")
    if args.max_dense < 0:
        raise CliError(f"--max-dense must be >= 0, got {args.max_dense}")
    if not 0.0 < args.tol < 0.1:
        raise CliError(f"--tol must be in (0, 0.1), got {args.tol}")

    import_tensorflow_quietly()
    import keras
    import numpy as np

    import deltanet
    from deltanet import calibrate as cal
    from deltanet.measure import measure_model
    from deltanet.models import CLIP_HEAD
    from training.fit import FitConfig, load_data
    from training.ucf101 import DataError

    started = time.time()
    keras.utils.set_random_seed(args.seed)
    try:
        source = deltanet.load_model(model_path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
        raise CliError(f"--model: cannot load {args.model}: {e}") from e
    info = deltanet.model_info(source)
    shape = tuple(source.input.shape)
    if len(shape) != 5 or shape[2] is None or shape[2] != shape[3]:
        raise CliError(f"--model: expected a clip model with input (batch, time, size, size, channels), got input shape {shape}")
    try:
        model = cal.prepare_model(source)
    except (ValueError, TypeError) as e:
        raise CliError(f"--model: cannot deltafy {args.model}: {e}") from e
    frames = args.frames or int(info.get("frames", 8))
    stride = args.stride or int(info.get("stride", 2))
    cfg = FitConfig(data=args.data, split=args.split, size=int(shape[2]), frames=frames, stride=stride,
                    batch_size=args.batch_size, seed=args.seed)  # fmt: skip
    try:
        index, train_ds, val_ds, skipped = load_data(cfg, channels=int(shape[4]))  # a gray model gets gray clips
    except (DataError, FileNotFoundError, NotADirectoryError, ValueError) as e:
        raise CliError(str(e)) from e
    names = info.get("class_names")
    if names and list(names) != list(index.class_names):
        raise CliError(f"--data has classes {index.class_names[:5]}... but the model was trained on {names[:5]}...")
    # progress only where someone watches: a user error stays one line on stderr in scripts and CI
    progress = not args.quiet and (args.verbose or sys.stderr.isatty())
    say = _log if progress else (lambda m: None)
    say(f"data: {index.describe()}")

    batches, n = [], 0
    for x, _ in train_ds:
        x = x.numpy()[: args.clips - n]
        batches.append(x)
        n += x.shape[0]
        if n >= args.clips:
            break
    if not batches:
        raise CliError("no calibration clips could be read from the training split")
    say(f"calibrating with {args.method} on {n} training clips ({frames} frames, stride {stride}) for MAC density {args.target_density}")
    try:
        result = cal.calibrate(model, batches, args.target_density, args.method, tol=args.tol, max_dense=args.max_dense,
                               sweep_clips=args.sweep_clips, log=say)  # fmt: skip
    except ValueError as e:
        raise CliError(str(e)) from e

    say("measuring on the validation clips ...")
    val = [(x.numpy(), y.numpy()) for i, (x, y) in enumerate(val_ds) if args.eval_batches is None or i < args.eval_batches]
    measured = measure_model(model, [x for x, _ in val])
    correct = sum(int(np.sum(np.argmax(model.predict_on_batch(x.astype(np.float32)), -1) == y)) for x, y in val)
    total = sum(len(y) for _, y in val)
    report = {
        **result.summary(),
        "val_mac_density": measured["mac_density"],
        "val_accuracy": correct / total if total else float("nan"),
        "val_clips": total,
        "calibration_clips": n,
        "frames": frames,
        "stride": stride,
        "source_model": str(model_path),
        "seconds": round(time.time() - started, 1),
    }
    head = model.get_layer(CLIP_HEAD)
    head.info = dict(head.info, calibration={k: v for k, v in report.items() if k != "layers"})
    tmp = out.with_name(out.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, out)
    if skipped.count:
        say(f"skipped {skipped.count} unreadable video(s): {skipped.summary()}")
    say(
        f"{args.method}: MAC density {result.mac_density:.4f} (calibration), {measured['mac_density']:.4f} (validation; "
        f"target {args.target_density}), val_accuracy {report['val_accuracy']:.3f} -> {out}"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except CliError as e:
        return fail(parser.prog, str(e))
    except KeyboardInterrupt:
        return 130
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
