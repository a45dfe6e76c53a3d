"""``python -m training.fit``: train a delta (or baseline) clip classifier, evaluate, export.

With no arguments it generates (once, cached) the embedded synthetic dataset, trains the
default delta model on it, measures accuracy and sparsity on the validation clips and
writes ``runs/fit/{model.keras, history.csv, metrics.json}``.

Checkpoints are written every epoch (``OUT/checkpoint/``, atomically); ``--resume``
continues an interrupted run from its last completed epoch with the same configuration.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deltanet.cli import (
    ArgumentParser,
    CliError,
    add_rescale_argument,
    fail,
    import_tensorflow_quietly,
    nonneg_float,
    positive_float,
    positive_int,
)

DEFAULT_OUT = "runs/fit"
FRAME_CACHE_MODES = ("auto", "on", "off")


@dataclass
class FitConfig:
    """Everything that defines a training run (saved in ``metrics.json`` and the checkpoint)."""

    data: str = "embedded"
    split: int = 1
    arch: str = "mobilenet_v2_lite"
    size: int = 112
    width: float = 0.35
    frames: int = 4
    stride: int = 2
    epochs: int = 20
    batch_size: int = 8
    learning_rate: float = 2e-3
    lr_warmup: float = 0.0  # fraction of steps over which the learning rate rises linearly to learning_rate
    delta_mode: str = "threshold"
    threshold: float = 0.1
    step: float = 0.05
    delta_weight: float = 2.0
    penalty: str = "l1"
    baseline: bool = False
    init: str | None = None
    out: str = DEFAULT_OUT
    seed: int = 0
    eval_batches: int | None = None
    schedule: str = "constant"  # penalty schedule (deltanet.schedules)
    warmup: float = 0.1
    depth_progressive: float = 0.0
    threshold_shift: float = 0.0
    shift_fraction: float = 0.1
    distribute: str = "none"  # [distribute] training.distribute.MODES
    rescale: list | None = None  # --arch PATH: [scale, offset] of a Rescaling put in front
    weights: str | None = None  # --arch keras.applications.NAME: None (random init) or "imagenet" (downloads)
    frame_cache: str = "auto"  # training.frame_cache: auto (embedded data only) | on | off
    extra: dict = field(default_factory=dict)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m training.fit",
        description="Train an action-recognition clip model for temporal sparsity (or a dense baseline).",
    )
    d = FitConfig()
    p.add_argument("--data", default=d.data, help="'embedded' (default: the generated dataset), a UCF101 root, a <class>/<video> folder, or tfds:NAME")
    p.add_argument("--split", type=int, choices=(1, 2, 3), default=d.split, help="UCF101 train/test split")
    p.add_argument("--arch", default=d.arch, help="mobilenet_v2 | mobilenet_v2_lite | tiny | resnet18 (set --width 1.0 for the standard ResNet-18), a Keras Applications backbone (keras.applications.ResNet50, ...: "
                   "its ImageNet top replaced by a Dense head), or a pretrained per-frame model to deltafy "
                   "(.keras, or legacy .h5/.hdf5; nested models are flattened, a final softmax removed, gray inputs get gray frames)")
    add_rescale_argument(p)
    p.add_argument("--weights", choices=("imagenet",), default=None,
                   help="--arch keras.applications.NAME: start from Keras' ImageNet weights (downloads once; default: random init)")
    p.add_argument("--size", type=positive_int, default=d.size, help="input height and width in pixels")
    p.add_argument("--width", type=positive_float, default=d.width, help="width multiplier (alpha)")
    p.add_argument("--frames", type=positive_int, default=d.frames, help="frames per training clip (T)")
    p.add_argument("--stride", type=positive_int, default=d.stride, help="frame stride inside a clip")
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="clips per batch")
    p.add_argument("--learning-rate", type=positive_float, default=d.learning_rate)
    p.add_argument("--lr-warmup", type=nonneg_float, default=d.lr_warmup, help="fraction of the steps (< 1) over which the learning rate rises linearly from a tenth to --learning-rate before the cosine decay")
    p.add_argument("--delta-mode", choices=("threshold", "quantize"), default=d.delta_mode)
    p.add_argument("--threshold", type=nonneg_float, default=d.threshold, help="threshold mode: initial per-channel threshold")
    p.add_argument("--step", type=positive_float, default=d.step, help="quantize mode: initial quantization step")
    p.add_argument("--delta-weight", type=nonneg_float, default=d.delta_weight, help="weight of the sparsity penalty (on the MAC-weighted mean |delta|)")
    p.add_argument("--penalty", choices=("l1", "hoyer"), default=d.penalty)
    p.add_argument("--baseline", action="store_true", help="train the same network without delta layers")
    p.add_argument("--init", default=None, help="start from the weights of this trained clip model (.keras), e.g. a baseline: the paper's refinement phase")
    p.add_argument("--out", default=d.out, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--frame-cache", choices=FRAME_CACHE_MODES, default=d.frame_cache,
                   help="decode every training video once into a memory-mapped uint8 file at --size and sample clips "
                        "from it (training.frame_cache; auto: for the embedded dataset only, whose cache is 674 MB)")
    p.add_argument("--eval-batches", type=positive_int, default=None, help="measure sparsity on at most this many validation batches")
    p.add_argument("--quiet", action="store_true", help="per-epoch lines instead of progress bars")
    p.add_argument("--schedule", choices=("constant", "sine"), default=d.schedule, help="delta-penalty schedule: constant, or ProSparse warm-up + quarter-sine ramps")
    p.add_argument("--warmup", type=nonneg_float, default=d.warmup, help="sine schedule: fraction of steps before the penalty starts (< 0.9)")
    p.add_argument("--depth-progressive", type=nonneg_float, default=d.depth_progressive, help="delay (fraction of training, < 1) before the shallowest layers' penalty starts")
    p.add_argument("--threshold-shift", type=nonneg_float, default=d.threshold_shift, help="raise thresholds by this fraction in a final stage")
    p.add_argument("--shift-fraction", type=positive_float, default=d.shift_fraction, help="fraction of training (< 1) that the threshold-shift stage lasts")
    from training.distribute import MODES  # [distribute]

    p.add_argument(
        "--distribute",
        choices=MODES,
        default=d.distribute,
        help="train on several devices (see docs/distributed.md); --batch-size stays the global batch",
    )
    return p


# --- pieces -------------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save_model(model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def arch_is_path(cfg: FitConfig) -> bool:
    return cfg.arch.lower().endswith(MODEL_SUFFIXES)


def arch_is_application(cfg: FitConfig) -> bool:
    return cfg.arch.startswith("keras.applications.")  # deltanet.pretrained.APPLICATIONS_PREFIX (imports Keras)


def arch_frame_model(cfg: FitConfig):
    """``--arch PATH``: the pretrained per-frame model, ready for deltafy (``deltanet.pretrained``)."""
    from deltanet.pretrained import load_frame_model, prepare_frame_model
    from deltanet.tf_workarounds import check_training

    frame_model, _ = load_frame_model(cfg.arch)
    frame_model = prepare_frame_model(frame_model, rescale=tuple(cfg.rescale) if cfg.rescale else None)
    try:
        check_training(frame_model)
    except RuntimeError as e:
        raise CliError(f"--arch: {e}") from e
    return frame_model


def gray_clips(x, y):
    """RGB uint8 clips -> one channel, bit-identical to ``streaming.preprocess.rgb_to_gray``."""
    import tensorflow as tf

    from streaming.preprocess import GRAY_WEIGHTS_Q15

    luma = tf.reduce_sum(tf.cast(x, tf.int32) * tf.constant(GRAY_WEIGHTS_Q15, tf.int32), axis=-1, keepdims=True)
    return tf.cast(tf.bitwise.right_shift(luma + (1 << 14), 15), tf.uint8), y


def load_data(cfg: FitConfig, channels: int = 3):
    """Dataset index + (train, val) tf.data datasets + the counter of skipped videos.

    ``channels=1`` (a gray model) converts the RGB clips to one channel.
    """
    from training.pipeline import SkipCounter, make_train_val_datasets
    from training.ucf101 import load_dataset_index

    data = cfg.data
    if data == "embedded":
        from training.synthetic import make_embedded_dataset

        data = str(make_embedded_dataset(seed=0))
    index = load_dataset_index(data, split=cfg.split)  # the split never depends on the training seed
    skipped = SkipCounter()
    frame_cache = cfg.frame_cache == "on" or (cfg.frame_cache == "auto" and cfg.data == "embedded")
    train, val = make_train_val_datasets(
        index,
        frames=cfg.frames,
        stride=cfg.stride,
        size=(cfg.size, cfg.size),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        skipped=skipped,
        frame_cache=frame_cache,
    )
    if channels == 1:
        train, val = train.map(gray_clips), val.map(gray_clips)
    return index, train, val, skipped


def build(cfg: FitConfig, class_names: list[str]):
    """The clip model for ``cfg`` (built fresh, or deltafied from ``cfg.init``)."""
    import keras

    import deltanet
    from deltanet.pretrained import application_frame_model

    info = {
        "class_names": list(class_names),
        "frames": cfg.frames,
        "stride": cfg.stride,
        "data": cfg.data,
        "input": "RGB uint8 frames resized to size x size (cv2.INTER_AREA); the model rescales to [-1, 1]",
    }
    delta = dict(mode=cfg.delta_mode, threshold=cfg.threshold, step=cfg.step, penalty_weight=cfg.delta_weight, penalty=cfg.penalty)
    if cfg.init:
        source = deltanet.load_model(cfg.init)
        frame_model = deltanet.per_frame_model(source)
        info.update(deltanet.model_info(source), class_names=list(class_names))
        return deltanet.clip_classifier(frame_model, baseline=cfg.baseline, info=info, **delta)
    if arch_is_application(cfg):
        frame_model = application_frame_model(cfg.arch, len(class_names), cfg.size, weights=cfg.weights)
        info.update(arch=cfg.arch, size=cfg.size, weights=cfg.weights)
        return deltanet.clip_classifier(frame_model, baseline=cfg.baseline, info=info, **delta)
    if arch_is_path(cfg):
        frame_model = arch_frame_model(cfg)
        info.update(arch=Path(cfg.arch).name, size=cfg.size, rescale=cfg.rescale)
        return deltanet.clip_classifier(frame_model, baseline=cfg.baseline, info=info, **delta)
    return deltanet.build_model(
        len(class_names), arch=cfg.arch, size=cfg.size, width=cfg.width, baseline=cfg.baseline, info=info, **delta
    )


def compile_model(model, cfg: FitConfig, steps_per_epoch: int) -> None:
    import keras

    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(cfg.lr_warmup * total)))
    if warmup > 0:  # linear warm-up from a tenth of the rate, then the same cosine decay
        schedule = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate / 10, decay_steps=total - warmup, alpha=0.05,
            warmup_target=cfg.learning_rate, warmup_steps=warmup,
        )
    else:
        schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _checkpoint_callback(ckpt_dir: Path, cfg: FitConfig):
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        """Save model + optimizer state after every epoch, atomically, then the epoch number."""

        def on_epoch_end(self, epoch, logs=None):
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            _atomic_save_model(self.model, ckpt_dir / "model.keras")
            state = {"epoch": epoch + 1, "config": asdict(cfg)}
            _atomic_write_text(ckpt_dir / "state.json", json.dumps(state, indent=2))

    return EpochCheckpoint()


def _density_callback():
    import keras

    from deltanet.measure import delta_layers

    class DensityLogger(keras.callbacks.Callback):
        """Adds ``mac_density`` (train) and ``val_mac_density`` to the epoch logs, from the
        delta layers' own counters (MAC-weighted temporal density, frames t >= 1)."""

        def _layers(self):
            if not hasattr(self, "_weighted"):
                self._weighted = []
                for layer in delta_layers(self.model):
                    elements = 1
                    for s in layer.input.shape[2:]:
                        elements *= int(s)
                    self._weighted.append((layer, layer.cost_per_nonzero * elements))
            return self._weighted

        def _read(self):
            from deltanet import density

            layers = self._layers()
            return density.mac_density([m for _, m in layers], [la.temporal_density for la, _ in layers])

        def _reset(self):
            for layer, _ in self._layers():
                layer.reset_density()

        def on_epoch_begin(self, epoch, logs=None):
            self._reset()
            self._train = None

        def on_test_begin(self, logs=None):
            self._train = self._read() if self._layers() else None
            self._reset()

        def on_epoch_end(self, epoch, logs=None):
            if logs is None or not self._layers():
                return
            if self._train is None:
                logs["mac_density"] = self._read()
            else:
                logs["mac_density"] = self._train
                logs["val_mac_density"] = self._read()

    return DensityLogger()


# --- the run ------------------------------------------------------------------------------------


def run(cfg: FitConfig, *, resume: bool = False, verbose: int = 1) -> dict:
    """Train, evaluate and export according to ``cfg``; returns the metrics dict.

    Raises ``CliError`` for bad configuration or data (the CLI turns it into exit code 2).
    """
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoint"
    state_path = ckpt_dir / "state.json"
    initial_epoch = 0
    if resume:
        if not state_path.exists():
            raise CliError(f"--resume: no checkpoint in {ckpt_dir} (nothing to resume; drop --resume to start)")
        state = json.loads(state_path.read_text())
        saved = FitConfig(**state["config"])
        if saved.out != cfg.out:
            saved.out = cfg.out
        saved.distribute = cfg.distribute  # [distribute] how to run now, not part of the checkpoint
        cfg = saved
        initial_epoch = int(state["epoch"])
    elif state_path.exists():
        raise CliError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")

    import_tensorflow_quietly()
    import keras
    import numpy as np

    from deltanet.saving import load_model
    from training import distribute
    from training.ucf101 import DataError

    dist = distribute.setup(cfg.distribute, batch_size=cfg.batch_size)  # [distribute] before any TF op
    if keras.backend.backend() == "tensorflow" and not cfg.baseline:
        from deltanet import native_op

        native_op.build_in_background()  # the compiler runs while the data is generated and loaded
    keras.utils.set_random_seed(cfg.seed)
    started = time.time()
    channels = 3
    if arch_is_path(cfg) and not initial_epoch:
        try:
            h, w, channels = (int(s) for s in arch_frame_model(cfg).input.shape[1:])
        except (ValueError, TypeError) as e:
            raise CliError(f"--arch: {e}") from e
        if (h, w) != (cfg.size, cfg.size):
            raise CliError(f"--arch {cfg.arch} takes {h}x{w} frames: pass --size {h}" if h == w else
                           f"--arch {cfg.arch} takes {h}x{w} frames; only square inputs are supported")
    elif initial_epoch:
        channels = int(load_model(ckpt_dir / "model.keras").input.shape[-1])
    try:
        index, train_ds, val_ds, skipped = load_data(cfg, channels)
    except (DataError, FileNotFoundError, NotADirectoryError) as e:
        raise CliError(str(e)) from e
    _log(f"data: {index.describe()}")
    steps = int(np.ceil(len(index.train) / cfg.batch_size)) if index.train else None
    if dist.mode != "none":  # [distribute]
        _log(f"distribute: {dist.describe()}")
        train_ds, val_ds = dist.datasets(cfg, index, train_ds, val_ds, skipped)

    with dist.scope():  # [distribute] variables are created under the strategy
        if initial_epoch:
            model = load_model(ckpt_dir / "model.keras")
            _log(f"resuming from epoch {initial_epoch} of {cfg.epochs} ({ckpt_dir})")
        else:
            try:
                model = build(cfg, index.class_names)
            except (ValueError, OSError) as e:
                raise CliError(f"cannot build the model: {e}") from e
            compile_model(model, cfg, steps or 100)
        dist.prepare_model(model)
    out = dist.write_dir(out)  # [distribute] only the chief writes --out
    ckpt_dir = out / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)

    from deltanet.schedules import fit_callbacks

    if cfg.warmup >= 0.9 or cfg.depth_progressive >= 1 or cfg.shift_fraction >= 1 or cfg.lr_warmup >= 1:
        raise CliError("--warmup must be < 0.9, --depth-progressive < 1, --shift-fraction < 1 and --lr-warmup < 1")
    schedule = fit_callbacks(
        schedule=cfg.schedule, total_steps=cfg.epochs * (steps or 100), warmup=cfg.warmup,
        depth_progressive=cfg.depth_progressive, threshold_shift=cfg.threshold_shift, shift_fraction=cfg.shift_fraction,
    ) if not cfg.baseline else []
    callbacks = schedule + [
        _checkpoint_callback(ckpt_dir, cfg),
        _density_callback(),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=initial_epoch > 0),
    ]
    last_val = None
    if initial_epoch < cfg.epochs:
        try:
            history = model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=cfg.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # the dataset shuffles itself (training.pipeline); Keras ignores it for tf.data, with a warning
            )
        except KeyboardInterrupt:
            _log(f"interrupted: the last completed epoch is saved in {ckpt_dir}; continue with --resume --out {cfg.out}")
            raise
        # the last epoch validated the final weights: its figures are what evaluate would give
        last_val = {k[4:]: v[-1] for k, v in history.history.items() if k in ("val_loss", "val_accuracy") and v}
    if skipped.count:
        _log(f"skipped {skipped.count} unreadable video(s): {skipped.summary()}")

    metrics = finish(model, cfg, index, val_ds, skipped, out, started, last_val)
    dist.close()  # [distribute] a non-chief worker's temporary output
    return metrics


def finish(model, cfg: FitConfig, index, val_ds, skipped, out: Path, started: float, last_val: dict | None = None) -> dict:
    """Evaluate, measure sparsity on the validation clips, write model.keras and metrics.json.

    ``last_val``: the last epoch's validation ``loss`` and ``accuracy`` (Keras' ``val_*`` logs),
    computed with the final weights on the same clips; given both, validation is not re-run.
    """
    from deltanet.measure import measure_model

    _log("evaluating on the validation clips ...")
    if last_val and {"loss", "accuracy"} <= last_val.keys():
        results = last_val
    else:
        results = model.evaluate(val_ds, verbose=0, return_dict=True)
    measured = measure_model(model, val_ds, max_batches=cfg.eval_batches)
    test = _evaluate_test(model, cfg, index)
    layers = [
        {k: rec[k] for k in ("name", "type", "macs", "temporal_density", "spatial_density")} for rec in measured["layers"]
    ]
    metrics = {
        "val_accuracy": float(results["accuracy"]),
        "val_loss": float(results["loss"]),
        # the held-out test split: reported only, never used for a choice (training.evaluate
        # measures it in more ways, including frame by frame through the engine)
        "test_accuracy": test["accuracy"],
        "test_mac_density": test["mac_density"],
        "mac_density": measured["mac_density"],
        "temporal_mac_density": measured["temporal_mac_density"],
        "spatial_mac_density": measured["spatial_mac_density"],
        "macs_per_frame": measured["macs_per_frame"],
        "baseline": cfg.baseline,
        "layers": layers,
        "classes": index.class_names,
        "train_videos": len(index.train),
        "val_videos": len(index.val),
        "test_videos": len(index.test) if index.kind != "tfds" else None,
        "skipped_videos": skipped.count,
        "seconds": round(time.time() - started, 1),
        "config": asdict(cfg),
    }
    _atomic_save_model(model, out / "model.keras")
    _atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    test_txt = f"  test_accuracy {test['accuracy']:.3f}" if test["accuracy"] is not None else ""
    _log(
        f"val_accuracy {metrics['val_accuracy']:.3f}{test_txt}  mac_density {metrics['mac_density']:.4f}  "
        f"({'baseline: non-zero activations' if cfg.baseline else 'delta: non-zero deltas, frames t>=1'})  "
        f"{metrics['seconds']:.0f}s -> {out / 'model.keras'}"
    )
    return metrics


def _evaluate_test(model, cfg: FitConfig, index) -> dict:
    """Accuracy and MAC density on the test split (``None``s where the source has none)."""
    from deltanet.measure import measure_model
    from training.pipeline import make_subset_dataset

    if index.kind != "tfds" and not index.test:
        return {"accuracy": None, "mac_density": None}
    _log("evaluating on the test clips ...")
    ds = make_subset_dataset(index, "test", frames=cfg.frames, stride=cfg.stride, size=(cfg.size, cfg.size),
                             batch_size=cfg.batch_size, seed=cfg.seed)
    if int(model.input.shape[-1]) == 1:  # a gray model gets gray clips, as in training
        ds = ds.map(gray_clips)
    measured = measure_model(model, ds, max_batches=cfg.eval_batches)  # accuracy and density in one pass
    accuracy = measured["accuracy"]
    if cfg.eval_batches is not None:  # density from a sample, accuracy from every test clip
        accuracy = model.evaluate(ds, verbose=0, return_dict=True)["accuracy"]
    return {"accuracy": float(accuracy), "mac_density": measured["mac_density"]}


def use_pooled_cpu_allocator() -> None:
    """Let TensorFlow pool its CPU tensors (BFC allocator) unless the user chose otherwise.

    Its default CPU allocator is malloc, and the training step's largest tensors (8 clips of 4
    frames at 112x112, up to ~150 MB) are above glibc's mmap threshold: every step mapped and
    unmapped ~100 MB afresh, 27,000 page faults per step (scripts/epoch_profile.py,
    docs/training_speed.md); pooled, 750. Read when TensorFlow makes its first tensor, so this
    must run before anything does.
    """
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def main(argv: list[str] | None = None) -> int:
    use_pooled_cpu_allocator()
    # Keras 3 warns "Your input ran out of data" at the end of the first pass over every dataset of
    # unknown length (training, validation and test); ours have one on purpose (unreadable videos are
    # skipped, so the number of batches is known only once an epoch has run): not a problem here.
    warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = FitConfig(
        data=args.data,
        split=args.split,
        arch=args.arch,
        size=args.size,
        width=args.width,
        frames=args.frames,
        stride=args.stride,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_warmup=args.lr_warmup,
        delta_mode=args.delta_mode,
        threshold=args.threshold,
        step=args.step,
        delta_weight=args.delta_weight,
        penalty=args.penalty,
        baseline=args.baseline,
        init=args.init,
        out=args.out,
        seed=args.seed,
        eval_batches=args.eval_batches,
        schedule=args.schedule,
        warmup=args.warmup,
        depth_progressive=args.depth_progressive,
        threshold_shift=args.threshold_shift,
        shift_fraction=args.shift_fraction,
        distribute=args.distribute,  # [distribute]
        rescale=list(args.rescale) if args.rescale else None,
        weights=args.weights,
        frame_cache=args.frame_cache,
    )
    if cfg.data != "embedded" and not cfg.data.startswith("tfds:") and not Path(cfg.data).expanduser().exists():
        # checked before --out, so a bad --data is reported as such even where --out already holds a run
        return fail(parser.prog, f"--data: {cfg.data!r} does not exist (expected 'embedded', a UCF101 root, a "
                                 "<class>/<video> folder or tfds:NAME)")
    if cfg.lr_warmup >= 1:  # checked before any data or model is loaded
        return fail(parser.prog, "--lr-warmup must be < 1 (a fraction of the training steps)")
    if cfg.init and not Path(cfg.init).is_file():
        return fail(parser.prog, f"--init: no such model file: {cfg.init}")
    if cfg.rescale and not arch_is_path(cfg):
        return fail(parser.prog, "--rescale applies to a pretrained --arch PATH only (built-in architectures rescale themselves)")
    if cfg.weights and not arch_is_application(cfg):
        return fail(parser.prog, "--weights applies to --arch keras.applications.NAME only")
    if arch_is_application(cfg):
        import_tensorflow_quietly()
        from deltanet.pretrained import check_application

        try:
            check_application(cfg.arch, cfg.weights)
        except ValueError as e:
            return fail(parser.prog, f"--arch: {e}")
    if arch_is_path(cfg) and not Path(cfg.arch).is_file():
        return fail(parser.prog, f"--arch: no such model file: {cfg.arch}")
    try:
        run(cfg, resume=args.resume, verbose=2 if args.quiet or not sys.stderr.isatty() else 1)
    except CliError as e:
        return fail(parser.prog, str(e))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
