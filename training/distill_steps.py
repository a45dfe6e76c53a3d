"""The steps of ``training.distill``: student, threshold initialisation, fine-tuning, selection.

Kept apart from the CLI module (argument checks, loading, the report file) so that each stays
short. Everything here works on the student's *frames* model (clip in, per-frame logits out);
the clip head with the class names is put on top only when the result is saved.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import keras
import numpy as np

from deltanet import calibrate as cal
from deltanet.models import CLIP_HEAD, clip_classifier, frame_logits_model
from deltanet.temporal_mean import TemporalMean
from training.distribute import build_before_tracing
from training.footage import Footage, sample_clips, windows

#: validation clips are this long (or as long as the shortest validation video): long enough
#: that the hysteresis of the delta layers reaches its steady state, as in a stream
EVAL_FRAMES = 32


@keras.saving.register_keras_serializable(package="deltanet")
class TeacherKL(keras.losses.Loss):
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` per frame, from logits.

    ``y_true`` are the teacher's logits, ``y_pred`` the student's, both ``(batch, time, classes)``.
    """

    def __init__(self, temperature: float = 1.0, name: str = "teacher_kl", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        t = self.temperature
        p = keras.ops.softmax(y_true / t, axis=-1)
        log_p = keras.ops.log_softmax(y_true / t, axis=-1)
        log_q = keras.ops.log_softmax(y_pred / t, axis=-1)
        return (t * t) * keras.ops.sum(p * (log_p - log_q), axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def teacher_logits(teacher: keras.Model, clips: np.ndarray) -> np.ndarray:
    """The dense teacher's per-frame logits of uint8 clips ``(n, T, H, W, C)``: ``(n, T, classes)``."""
    n, t = clips.shape[:2]
    flat = clips.reshape((n * t,) + clips.shape[2:]).astype(np.float32)
    return np.asarray(teacher.predict(flat, batch_size=256, verbose=0), np.float32).reshape(n, t, -1)


def score(frames: keras.Model, batches: list[np.ndarray], reference: np.ndarray) -> dict:
    """Per-frame ``top1_agreement`` and ``logit_rmse`` against the teacher, and the ``mac_density``."""
    runner = cal.Runner(frames, cal.delta_sites(frames), batches)
    runner.reference = reference
    m = runner.measure()
    return {"top1_agreement": m["top1_agreement"], "logit_rmse": math.sqrt(m["mse"]), "mac_density": m["mac_density"]}


def _batches(clips: np.ndarray, size: int) -> list[np.ndarray]:
    return [clips[i : i + size] for i in range(0, len(clips), size)]


def build_student(teacher: keras.Model, delta_weight: float) -> keras.Model:
    """A deltafied copy of the teacher (own weights; threshold mode, per channel, threshold 0):
    its frames model, with BatchNormalization frozen (moving statistics, not trained)."""
    copy = keras.models.clone_model(teacher)
    copy.set_weights(teacher.get_weights())
    for layer in copy.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # Keras 3: also runs it in inference mode
    clip = clip_classifier(copy, mode="threshold", threshold=0.0, penalty_weight=delta_weight)
    return frame_logits_model(clip)


def with_clip_head(frames: keras.Model, info: dict) -> keras.Model:
    """The clip classifier users run: per-frame logits averaged over time, ``info`` attached."""
    head = TemporalMean(info=dict(info, baseline=False), name=CLIP_HEAD)(frames.output)
    return keras.Model(frames.input, head, name=frames.name.removesuffix("_frames") + "_distilled")


class Job:
    """One distillation run; ``run(state)`` starts it (``state=None``) or resumes it."""

    def __init__(self, cfg, teacher: keras.Model, distil: list[Footage], val: list[Footage], info: dict, paths: dict, log):
        self.cfg, self.teacher, self.distil, self.info, self.paths, self.log = cfg, teacher, distil, info, paths, log
        rng = np.random.default_rng([cfg.seed, 1 << 20])
        self.cal_clips = sample_clips(distil, cfg.calibration_clips, cfg.frames, rng)
        eval_frames = min(EVAL_FRAMES, min(len(f.frames) for f in val))
        self.val_clips = windows(val, max(2, eval_frames))
        self.val_ref = teacher_logits(teacher, self.val_clips)
        self.val_frames = int(np.prod(self.val_clips.shape[:2]))

    def _score(self, frames) -> dict:
        return score(frames, _batches(self.val_clips, 16), self.val_ref)

    def _initialise(self, frames) -> dict:
        """Calibrate with every method, keep the thresholds that agree best on validation."""
        cfg, tried = self.cfg, []
        batches = _batches(self.cal_clips, 16)
        for method in cfg.methods:
            self.log(f"calibrating the student's thresholds with {method} for MAC density {cfg.target_density} ...")
            result = cal.calibrate(frames, batches, cfg.target_density, method, sweep_clips=min(cfg.sweep_clips, cfg.calibration_clips))
            rec = {"method": method, "calibration_mac_density": result.mac_density, **self._score(frames)}
            self.log(f"  {method}: validation top-1 agreement {rec['top1_agreement']:.4f}, MAC density {rec['mac_density']:.4f}")
            tried.append((rec, result.thresholds))
        best, thresholds = max(tried, key=lambda r: r[0]["top1_agreement"])
        cal.set_thresholds(frames, thresholds)
        return {"tried": [r for r, _ in tried], "chosen": best["method"]}

    def _compile(self, frames) -> None:
        cfg = self.cfg
        steps = cfg.epochs * math.ceil(cfg.clips_per_epoch / cfg.batch_size)
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, steps), alpha=0.05)
        frames.compile(optimizer=keras.optimizers.Adam(lr), loss=TeacherKL(cfg.temperature))

    def _save_state(self, state: dict) -> None:
        self.paths["work"].mkdir(parents=True, exist_ok=True)
        tmp = self.paths["state"].with_name("state.json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.paths["state"])

    def run(self, state: dict | None) -> dict:
        cfg, paths = self.cfg, self.paths
        from deltanet.saving import load_model

        if state is None:
            frames = build_student(self.teacher, cfg.delta_weight)
            init = self._initialise(frames)
            first = self._score(frames)
            state = {"epoch": 0, "config": asdict(cfg), "init": init, "history": [{"epoch": 0, **first}], "best": {"epoch": 0, **first}}
            self._compile(frames)
            paths["work"].mkdir(parents=True, exist_ok=True)
            _save(frames, paths["checkpoint"])
            _save(frames, paths["best"])
            self._save_state(state)
        else:
            frames = load_model(paths["checkpoint"])  # compiled: the optimizer state comes back
            self.log(f"resuming after epoch {state['epoch']} of {cfg.epochs}")
        build_before_tracing(frames)  # one trace of the training step instead of two
        for epoch in range(state["epoch"], cfg.epochs):
            rng = np.random.default_rng([cfg.seed, epoch])
            x = sample_clips(self.distil, cfg.clips_per_epoch, cfg.frames, rng)
            y = teacher_logits(self.teacher, x)
            hist = frames.fit(x.astype(np.float32), y, batch_size=cfg.batch_size, epochs=epoch + 1, initial_epoch=epoch,
                              shuffle=True, verbose=0)
            # back to the target density at the new weights: the student trains at its operating point
            cal.match_density(frames, _batches(self.cal_clips, 16), cfg.target_density)
            rec = {"epoch": epoch + 1, "loss": float(hist.history["loss"][-1]), **self._score(frames)}
            state["history"].append(rec)
            if rec["top1_agreement"] > state["best"]["top1_agreement"]:
                state["best"] = rec
                _save(frames, paths["best"])
            state["epoch"] = epoch + 1
            _save(frames, paths["checkpoint"])
            self._save_state(state)
            self.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.4f}, validation top-1 agreement "
                     f"{rec['top1_agreement']:.4f}, logit RMSE {rec['logit_rmse']:.3f}, MAC density {rec['mac_density']:.4f}")

        best = load_model(paths["best"], compile=False)
        _save(with_clip_head(best, self.info), paths["model"])
        report = {
            "model": str(paths["model"]),
            "target_density": cfg.target_density,
            "val_top1_agreement": state["best"]["top1_agreement"],
            "val_logit_rmse": state["best"]["logit_rmse"],
            "val_mac_density": state["best"]["mac_density"],
            "kept_epoch": state["best"]["epoch"],
            "initialisation": state["init"],
            "val_frames": self.val_frames,
            "val_teacher_label_changes": int(np.sum(np.diff(self.val_ref.argmax(-1), axis=1) != 0)),
            "history": state["history"],
        }
        self.log(f"kept epoch {report['kept_epoch']}: validation top-1 agreement {report['val_top1_agreement']:.4f} at MAC density "
                 f"{report['val_mac_density']:.4f} -> {paths['model']}")
        return report


def _save(model, path) -> None:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(path)
