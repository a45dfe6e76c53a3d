"""Calibration, part 4: running the clip model on calibration clips (thresholds in and out, per-frame
logits, agreement, the one-scalar solve). See ``deltanet.calibrate``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import numpy as np

from deltanet import density
from deltanet.delta_activation import DeltaActivation

from deltanet.calibration_sites import DeltaSite

# --------------------------------------------------------------------------------------
# running the model
# --------------------------------------------------------------------------------------


def _frames_output(model: keras.Model):
    from deltanet.models import CLIP_HEAD

    try:
        return model.get_layer(CLIP_HEAD).input
    except ValueError:
        return model.output


def get_thresholds(model: keras.Model) -> dict[str, np.ndarray]:
    """Current per-channel thresholds of every threshold-mode delta layer."""
    return {
        la.name: np.asarray(keras.ops.convert_to_numpy(la.threshold), np.float32)
        for la in model.layers
        if isinstance(la, DeltaActivation) and la.mode == "threshold"
    }


def set_thresholds(model: keras.Model, thresholds: dict[str, np.ndarray]) -> None:
    """Assign thresholds (name -> per-channel array or scalar) to the model's delta layers."""
    for name, theta in thresholds.items():
        layer = model.get_layer(name)
        shape = tuple(layer.threshold.shape)
        value = np.broadcast_to(np.asarray(theta, np.float32), shape).astype(np.float32)
        if not np.all(np.isfinite(value)) or np.any(value < 0):
            raise ValueError(f"{name}: thresholds must be finite and >= 0")
        layer.threshold.assign(value)


class Runner:
    """Runs a clip model on fixed batches and measures it with ``deltanet.density``.

    One probe model (traced once) returns every delta site's output (the MAC layers'
    input) and the per-frame logits. ``measure()`` gives the MAC density exactly as
    ``deltanet.measure.measure_model`` computes it (per site: non-zero deltas over frames
    t >= 1 summed over the batches; MAC-weighted with ``density.mac_density``), the
    per-frame logits, and (once a reference is set) the output error.
    """

    def __init__(self, model: keras.Model, sites: list[DeltaSite], batches: list[np.ndarray]):
        self.model = model
        self.sites = sites
        self.batches = [np.asarray(b) for b in batches]
        if not self.batches:
            raise ValueError("no calibration clips")
        outs = [s.layer.output for s in sites] + [_frames_output(model)]
        self.probe = keras.Model(model.input, outs)
        self.logits_model = keras.Model(model.input, _frames_output(model))
        self.reference = None
        self.calls = 0

    def measure(self, with_logits: bool = True) -> dict:
        self.calls += 1
        nz = np.zeros(len(self.sites), np.int64)
        n = np.zeros(len(self.sites), np.int64)
        logits = []
        for x in self.batches:
            outs = self.probe.predict_on_batch(x.astype(np.float32))
            for i in range(len(self.sites)):
                d = density.clip_deltas(np.asarray(outs[i]))
                nz[i] += np.count_nonzero(d)
                n[i] += d.size
            logits.append(np.asarray(outs[-1], np.float32))
        per_site = nz / np.maximum(n, 1)
        layers = [{"macs": s.macs, "temporal_density": float(p)} for s, p in zip(self.sites, per_site)]
        result = {"mac_density": density.mac_density_of_layers(layers), "densities": per_site}
        if with_logits:
            result["logits"] = np.concatenate(logits)
            if self.reference is not None:
                result.update(output_agreement(result["logits"], self.reference))
        return result

    def logits(self) -> np.ndarray:
        self.calls += 1
        return np.concatenate([np.asarray(self.logits_model.predict_on_batch(x.astype(np.float32)), np.float32) for x in self.batches])

    def error(self) -> float:
        """Mean squared error of the per-frame logits against the reference."""
        return float(np.mean((self.logits() - self.reference) ** 2))

    def capture(self, names: Sequence[str], batches: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The inputs of the named delta layers (batch, time, ..., C) on ``batches`` (default: all)."""
        layers = [self.model.get_layer(n) for n in names]
        probe = keras.Model(self.model.input, [la.input for la in layers])
        got = {n: [] for n in names}
        for x in self.batches if batches is None else batches:
            outs = probe.predict_on_batch(x.astype(np.float32))
            if len(names) == 1:
                outs = [outs]
            for n_, o in zip(names, outs):
                got[n_].append(np.asarray(o, np.float32))
        return {n_: np.concatenate(v) for n_, v in got.items()}


def output_agreement(logits: np.ndarray, reference: np.ndarray) -> dict:
    """Per-frame logits ``(clips, time, classes)`` against a reference: ``mse``, per-frame
    ``top1_agreement`` and per-clip ``clip_agreement`` (argmax of the mean over time)."""
    logits = np.asarray(logits, np.float64)
    reference = np.asarray(reference, np.float64)
    if logits.shape != reference.shape:
        raise ValueError(f"logits {logits.shape} and reference {reference.shape} differ in shape")
    return {
        "mse": float(np.mean((logits - reference) ** 2)),
        "top1_agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        "clip_agreement": float(np.mean(logits.mean(1).argmax(-1) == reference.mean(1).argmax(-1))),
    }


def solve_scale(
    evaluate: Callable[[float], float], target: float, *, start: float = 1.0, tol: float = 0.002, max_evals: int = 30
) -> tuple[float, float]:
    """Find ``a > 0`` with ``|evaluate(a) - target| <= tol`` for a density non-increasing in ``a``.

    Brackets by factors of 4 from ``start``, then bisects in log space. Returns
    ``(a, density)``: the best found (within ``tol`` if reachable, else the closest).
    """
    seen: list[tuple[float, float]] = []

    def f(a):
        d = float(evaluate(a))
        seen.append((a, d))
        return d

    def best():
        return min(seen, key=lambda s: (abs(s[1] - target), -s[0]))

    a = float(start)
    d = f(a)
    lo = hi = None  # lo: density above target (too dense); hi: density below target
    if abs(d - target) <= tol:
        return a, d
    if d > target:
        lo = a
        while len(seen) < max_evals:
            a *= 4.0
            d = f(a)
            if abs(d - target) <= tol:
                return a, d
            if d < target:
                hi = a
                break
            lo = a
    else:
        hi = a
        while len(seen) < max_evals:
            a /= 4.0
            d = f(a)
            if abs(d - target) <= tol:
                return a, d
            if d > target:
                lo = a
                break
            hi = a
    while lo is not None and hi is not None and len(seen) < max_evals:
        a = math.sqrt(lo * hi)
        d = f(a)
        if abs(d - target) <= tol:
            return a, d
        if d > target:
            lo = a
        else:
            hi = a
    return best()
