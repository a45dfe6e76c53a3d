"""The one definition of density in deltanet (NumPy only: the streaming runtime imports it too).

* ``temporal_density``: the fraction of transmitted deltas that are non-zero, over frames
  ``t >= 1`` (frame 0 is a keyframe: everything is "new" there, and a stream pays it once).
* ``spatial_density``: the fraction of activations that are non-zero (what a runtime that only
  skips zero *activations*, not unchanged ones, must still multiply).
* ``mac_density``: MAC-weighted density over the MAC layers of a model, i.e. the fraction of
  the dense multiply-accumulates that a zero-skipping runtime must still execute:
  ``sum_l macs_l * density_l / sum_l macs_l``.

The Keras layer computes the same quantities in-graph (``DeltaActivation``), the
training metrics, the report and the benchmark all call these functions, and
``tests/test_density.py`` checks that the in-graph numbers agree with these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def nonzero_fraction(x: np.ndarray) -> float:
    """Fraction of non-zero elements of ``x`` (NaN for an empty array)."""
    x = np.asarray(x)
    if x.size == 0:
        return float("nan")
    return float(np.count_nonzero(x) / x.size)


def clip_deltas(y: np.ndarray) -> np.ndarray:
    """Deltas ``d_t = y_t - y_{t-1}`` for ``t >= 1`` of clip activations ``y`` shaped ``(batch, time, ...)``.

    Both delta modes transmit exactly this (threshold mode: ``y_t = r_t``), so the deltas
    of any ``DeltaActivation`` can be recovered from its outputs.
    """
    y = np.asarray(y)
    if y.ndim < 2:
        raise ValueError(f"expected clip activations shaped (batch, time, ...), got shape {y.shape}")
    return y[:, 1:] - y[:, :-1]


def temporal_density(y: np.ndarray) -> float:
    """Fraction of non-zero deltas over frames ``t >= 1`` of clip activations ``(batch, time, ...)``."""
    return nonzero_fraction(clip_deltas(y))


def spatial_density(y: np.ndarray) -> float:
    """Fraction of non-zero activations (all frames)."""
    return nonzero_fraction(y)


def mac_density(macs: Iterable[float], densities: Iterable[float]) -> float:
    """MAC-weighted mean of per-layer densities: ``sum(macs * density) / sum(macs)``."""
    macs = np.asarray(list(macs), np.float64)
    densities = np.asarray(list(densities), np.float64)
    if macs.shape != densities.shape:
        raise ValueError(f"macs and densities differ in length: {macs.shape} vs {densities.shape}")
    total = macs.sum()
    if total <= 0:
        return float("nan")
    return float((macs * densities).sum() / total)


def mac_density_of_layers(layers: Iterable[Mapping], key: str = "temporal_density") -> float:
    """``mac_density`` of per-layer records (dicts with ``macs`` and ``key``)."""
    layers = list(layers)
    return mac_density([layer["macs"] for layer in layers], [layer[key] for layer in layers])


def theoretical_speedup(density: float) -> float:
    """Upper bound on the speedup of skipping work at this MAC density: ``1 / density``."""
    return float("inf") if density <= 0 else 1.0 / density
