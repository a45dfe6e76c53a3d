"""``python -m training.distill``: label-free delta distillation of a pretrained model on unlabeled footage.

The dense pretrained network is its own teacher. A student copy is deltafied (threshold-mode,
per-channel delta layers), its thresholds are initialised by training-free calibration for
the target MAC density (TEAL and CHESS are both tried, the better on the validation videos
is kept), and its weights are fine-tuned on clips sampled from the footage with

    loss = T^2 * KL(softmax(teacher / T) || softmax(student / T))  per frame
           + the delta layers' MAC-weighted penalty (``--delta-weight``)

(the paper's refinement phase, with the teacher's outputs in place of labels; BatchNorm
statistics stay frozen). After every epoch the thresholds are scaled by one factor back to
the target density (``deltanet.calibrate.match_density``, on the distillation clips) and the
student is scored on the validation videos; the epoch with the best per-frame top-1
agreement is kept. Videos are split by file into distillation and validation sets.

Writes ``OUT.keras`` (a clip model: per-frame logits averaged by the clip head, class names
in its ``info``), ``OUT.json`` (also printed on stdout) and, while running, checkpoints in
``OUT.distill/`` for ``--resume``.

Example (``fer``'s facial-expression model on a webcam's face box)::

    python -m training.distill --model fer_clip.keras --videos ../shared/data/real/asl_*.mkv \\
        --crop 262,45,115,115 --target-density 0.15 --out runs/fer_distilled.keras
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deltanet.cli import (
    ArgumentParser,
    CliError,
    add_crop_argument,
    add_rescale_argument,
    fail,
    fraction_arg,
    import_tensorflow_quietly,
    nonneg_float,
    positive_float,
    positive_int,
)

PROG = "python -m training.distill"
METHODS = ("teal", "chess")


@dataclass
class DistillConfig:
    """Everything that defines a distillation run (saved in the checkpoint and ``OUT.json``)."""

    model: str
    videos: list
    out: str
    crop: str | None = None  # streaming.preprocess.Crop spec
    rescale: list | None = None  # [scale, offset]
    target_density: float = 0.15
    epochs: int = 10
    frames: int = 16
    clips_per_epoch: int = 96
    batch_size: int = 8
    learning_rate: float = 3e-4
    delta_weight: float = 0.5
    temperature: float = 1.0
    val_fraction: float = 0.3
    methods: list = field(default_factory=lambda: list(METHODS))
    calibration_clips: int = 32
    sweep_clips: int = 8
    class_names: list | None = None
    seed: int = 0


def _methods(text: str) -> list[str]:
    import argparse

    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(METHODS)}, got {text!r}")
    return names


def build_parser() -> ArgumentParser:
    d = DistillConfig(model="", videos=[], out="")
    p = ArgumentParser(prog=PROG, description="Distil a pretrained per-frame model into a sparse delta model on unlabeled video, "
                       "the dense model being its own teacher.")
    p.add_argument("--model", required=True, help="pretrained model: a per-frame .keras or legacy .h5/.hdf5 file, or a deltanet clip model")
    p.add_argument("--videos", required=True, nargs="+", help="unlabeled video files (split by file into distillation and validation)")
    p.add_argument("--out", required=True, help="the distilled clip model to write (.keras); OUT.json and OUT.distill/ go next to it")
    add_crop_argument(p)
    add_rescale_argument(p)
    p.add_argument("--target-density", type=fraction_arg, default=d.target_density, help=f"MAC density to reach, in (0, 1) (default {d.target_density})")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"fine-tuning epochs (default {d.epochs})")
    p.add_argument("--frames", type=positive_int, default=d.frames, help=f"frames per clip, >= 2 (default {d.frames})")
    p.add_argument("--clips-per-epoch", type=positive_int, default=d.clips_per_epoch, help=f"clips sampled per epoch (default {d.clips_per_epoch})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"clips per batch (default {d.batch_size})")
    p.add_argument("--learning-rate", type=positive_float, default=d.learning_rate, help=f"Adam, cosine decay (default {d.learning_rate})")
    p.add_argument("--delta-weight", type=nonneg_float, default=d.delta_weight, help=f"weight of the MAC-weighted delta penalty (default {d.delta_weight})")
    p.add_argument("--temperature", type=positive_float, default=d.temperature, help=f"softmax temperature of the KL loss (default {d.temperature})")
    p.add_argument("--val-fraction", type=positive_float, default=d.val_fraction, help=f"fraction of the video files kept for validation (default {d.val_fraction})")
    p.add_argument("--methods", type=_methods, default=d.methods, help=f"threshold initialisations tried, best on validation kept (default {','.join(d.methods)})")
    p.add_argument("--calibration-clips", type=positive_int, default=d.calibration_clips, help=f"distillation clips used by the calibration (default {d.calibration_clips})")
    p.add_argument("--sweep-clips", type=positive_int, default=d.sweep_clips, help=f"of those, clips for the error sweeps of teal and chess (default {d.sweep_clips})")
    p.add_argument("--class-names", default=None, help="comma-separated class names (default: the model's, else class_0, class_1, ...)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"file split and clip sampling (default {d.seed})")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run of --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def paths_for(out: str | os.PathLike) -> dict[str, Path]:
    """Where a run writes: the model, its report, and the checkpoint folder."""
    out = Path(out)
    work = out.with_name(out.stem + ".distill")
    return {"model": out, "report": out.with_suffix(".json"), "work": work, "state": work / "state.json",
            "checkpoint": work / "student.keras", "best": work / "best.keras"}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check(cfg: DistillConfig, resume: bool) -> dict[str, Path]:
    paths = paths_for(cfg.out)
    if paths["model"].suffix != ".keras":
        raise CliError(f"--out must be a .keras file path, got {cfg.out!r}")
    if not paths["model"].parent.is_dir():
        raise CliError(f"--out: folder {paths['model'].parent} does not exist")
    if not Path(cfg.model).is_file():
        raise CliError(f"--model: no such model file: {cfg.model}")
    if paths["model"].resolve() == Path(cfg.model).resolve():
        raise CliError("--out must differ from --model")
    missing = [v for v in cfg.videos if not Path(v).is_file()]
    if missing:
        raise CliError(f"--videos: no such file: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if len(set(cfg.videos)) < 2:
        raise CliError(f"--videos: need at least 2 different video files (split by file into distillation and validation), got {len(set(cfg.videos))}")
    if cfg.frames < 2:
        raise CliError(f"--frames must be >= 2 (deltas need consecutive frames), got {cfg.frames}")
    if not 0 < cfg.val_fraction < 1:
        raise CliError(f"--val-fraction must be in (0, 1), got {cfg.val_fraction}")
    if resume and not paths["state"].exists():
        raise CliError(f"--resume: no checkpoint in {paths['work']} (nothing to resume; drop --resume to start)")
    if not resume and paths["state"].exists():
        raise CliError(f"{paths['work']} holds an interrupted run; pass --resume to continue it or choose another --out")
    return paths


def run(cfg: DistillConfig, *, resume: bool = False, log=_log) -> dict:
    """Distil according to ``cfg``; returns the report (also written to ``OUT.json``). Raises ``CliError``."""
    paths = _check(cfg, resume)
    state = None
    if resume:
        state = json.loads(paths["state"].read_text())
        saved = DistillConfig(**state["config"])
        saved.out = cfg.out
        cfg = saved
    started = time.time()
    import_tensorflow_quietly()
    import keras

    from deltanet.pretrained import load_frame_model, prepare_frame_model
    from deltanet.tf_workarounds import check_training
    from streaming.preprocess import Crop
    from training import distill_steps as steps
    from training.footage import load_footage, split_by_file
    from training.video import VideoError

    keras.utils.set_random_seed(cfg.seed)
    try:
        frame_model, info = load_frame_model(cfg.model)
        teacher = prepare_frame_model(frame_model, rescale=tuple(cfg.rescale) if cfg.rescale else None)
    except ValueError as e:
        raise CliError(f"--model: {e}") from e
    try:
        check_training(teacher)
    except RuntimeError as e:
        raise CliError(f"--model: {e}") from e
    shape = tuple(int(s) for s in teacher.input.shape[1:])
    if len(shape) != 3 or None in shape:
        raise CliError(f"--model: expected a per-frame image model with input (H, W, C), got {teacher.input.shape}")
    classes = int(teacher.output.shape[-1])
    names = cfg.class_names or info.get("class_names") or [f"class_{i}" for i in range(classes)]
    if len(names) != classes:
        raise CliError(f"{len(names)} class names for a model with {classes} outputs")
    crop = Crop.parse(cfg.crop) if cfg.crop else None
    distil_paths, val_paths = split_by_file(sorted(set(cfg.videos)), cfg.val_fraction, cfg.seed)
    try:
        distil = load_footage(distil_paths, shape, crop=crop)
        val = load_footage(val_paths, shape, crop=crop)
    except VideoError as e:
        raise CliError(str(e)) from e
    log(f"{sum(len(f.frames) for f in distil)} frames from {len(distil)} video(s) to distil on, "
        f"{sum(len(f.frames) for f in val)} from {len(val)} to validate on; model input {shape}, {classes} classes")

    info = {**info, "class_names": list(names), "frames": cfg.frames, "stride": 1, "input_shape": list(shape),
            "crop": cfg.crop, "rescale": cfg.rescale}
    job = steps.Job(cfg, teacher, distil, val, info, paths, log)
    try:
        report = job.run(state)
    except ValueError as e:
        raise CliError(str(e)) from e
    except KeyboardInterrupt:
        log(f"interrupted: the last completed epoch is saved in {paths['work']}; continue with --resume --out {cfg.out}")
        raise
    report.update(seconds=round(time.time() - started, 1), config=asdict(cfg),
                  distil_videos=distil_paths, val_videos=val_paths)
    _atomic_text(paths["report"], json.dumps(report, indent=2))
    shutil.rmtree(paths["work"], ignore_errors=True)  # done: nothing left to resume
    return report


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    cfg = DistillConfig(
        model=args.model, videos=list(args.videos), out=args.out, crop=args.crop.spec() if args.crop else None,
        rescale=list(args.rescale) if args.rescale else None, target_density=args.target_density, epochs=args.epochs,
        frames=args.frames, clips_per_epoch=args.clips_per_epoch, batch_size=args.batch_size, learning_rate=args.learning_rate,
        delta_weight=args.delta_weight, temperature=args.temperature, val_fraction=args.val_fraction, methods=list(args.methods),
        calibration_clips=args.calibration_clips, sweep_clips=args.sweep_clips, class_names=names, seed=args.seed,
    )
    try:
        report = run(cfg, resume=args.resume, log=(lambda m: None) if args.quiet else _log)
    except CliError as e:
        return fail(PROG, str(e))
    except KeyboardInterrupt:
        return 130
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
