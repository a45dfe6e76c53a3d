"""Calibration, part 2: densities of the threshold hysteresis simulated on cached activations, and
TEAL's per-layer threshold for a target density. See ``deltanet.calibrate``."""

from __future__ import annotations


import numpy as np

from ops.encode import count_fires

# --------------------------------------------------------------------------------------
# the hysteresis on cached activations
# --------------------------------------------------------------------------------------


def _as_nt_mc(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim < 3:
        raise ValueError(f"expected clip activations (batch, time, ..., C), got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], -1, x.shape[-1])


def hysteresis_density(x: np.ndarray, theta) -> float:
    """Temporal density (frames t >= 1, ``deltanet.density``) of a threshold-mode delta layer
    with thresholds ``theta`` (scalar or per channel) on clip activations ``x`` (batch, time, ..., C)."""
    x4 = _as_nt_mc(x)
    theta = np.ascontiguousarray(np.broadcast_to(np.asarray(theta, np.float32), (x4.shape[-1],)))
    total = x4.shape[0] * (x4.shape[1] - 1) * x4.shape[2] * x4.shape[3]
    if total <= 0:
        return float("nan")
    return count_fires(x4, theta) / total


class DensityCurve:
    """Density of one layer as a function of a scale ``s`` on per-channel thresholds ``s * base``.

    Sampled on a log grid of ``s`` (plus ``s = 0``: exact deltas) from the layer's cached input;
    :meth:`scale_for` inverts it by log-linear interpolation (the density is made
    non-increasing in ``s``).
    """

    def __init__(self, x: np.ndarray, base: np.ndarray, points: int = 40, decades: float = 5.0):
        x4 = _as_nt_mc(x)
        base = np.asarray(base, np.float64)
        self.p0 = hysteresis_density(x4, np.zeros(x4.shape[-1], np.float32))
        span = float(np.max(np.abs(x4))) * 2.0 + 1e-12
        s_max = span / float(np.min(base))  # every threshold above any possible change: density 0
        self.scales = np.geomspace(s_max * 10.0**-decades, s_max, points)
        dens = [hysteresis_density(x4, (s * base).astype(np.float32)) for s in self.scales]
        self.densities = np.minimum.accumulate(np.minimum(np.asarray(dens), self.p0))

    def scale_for(self, p: float) -> float:
        """The smallest sampled-interpolated scale whose density is ``<= p`` (0 if ``p >= p0``)."""
        if p >= self.p0:
            return 0.0
        d = self.densities
        if p <= d[-1]:
            return float(self.scales[-1])
        if p >= d[0]:
            # between exact deltas (p0) and the smallest sampled scale: interpolate linearly in s
            return float(self.scales[0] * (self.p0 - p) / max(self.p0 - d[0], 1e-12))
        i = int(np.argmax(d <= p))  # first index with density <= p (d is non-increasing)
        d0, d1 = d[i - 1], d[i]
        ls0, ls1 = np.log(self.scales[i - 1]), np.log(self.scales[i])
        u = 0.0 if d0 == d1 else (d0 - p) / (d0 - d1)
        return float(np.exp(ls0 + u * (ls1 - ls0)))


def teal_threshold(x: np.ndarray, target: float, *, iters: int = 40) -> float:
    """TEAL's per-layer threshold: the quantile of ``|accumulated delta|`` giving density ``target``.

    For the hysteresis the accumulated deltas ``x_t - r_{t-1}(theta)`` depend on the
    threshold itself; the threshold wanted is the fixed point ``theta`` at which a fraction
    ``target`` of them exceed ``theta`` (frames t >= 1), i.e. the threshold whose simulated
    density is ``target``. Found by bisection (the density is non-increasing in theta up to
    hysteresis effects); returns the smallest threshold found with density ``<= target``.
    """
    x4 = _as_nt_mc(x)
    c = x4.shape[-1]
    if hysteresis_density(x4, np.zeros(c, np.float32)) <= target:
        return 0.0
    lo, hi = 0.0, float(np.max(np.abs(x4))) * 2.0 + 1e-12
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if hysteresis_density(x4, np.full(c, mid, np.float32)) <= target:
            hi = mid
        else:
            lo = mid
    return hi
