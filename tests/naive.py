"""Slow NumPy references: the one written definition of the delta semantics.

Everything fast in this project (the Keras ``DeltaActivation`` layer written with
``keras.ops``, the numba encoder in ``ops/``, the streaming engine) is tested
against these functions. If they disagree with this file, they are wrong.

All references work on one stream: an array ``x`` of shape ``(T, ...features)``
(time first, channels last), float32.
"""

from __future__ import annotations

import numpy as np


def quantize_stream(x: np.ndarray, step: np.ndarray):
    """``mode="quantize"``: ``y_t = step * round(x_t / step)``, ``d_t = y_t - y_{t-1}``, ``y_{-1} = 0``.

    ``round`` is round-half-to-even (IEEE ``rint``), computed in float32 as
    ``x / step`` (a true division, not a multiplication by ``1 / step``).
    Returns ``(y, d)``, both shaped like ``x``.
    """
    x = np.asarray(x, np.float32)
    step = np.asarray(step, np.float32)
    y = (np.rint(x / step) * step).astype(np.float32)
    d = np.empty_like(y)
    d[0] = y[0]
    d[1:] = y[1:] - y[:-1]
    return y, d


def threshold_stream(x: np.ndarray, theta: np.ndarray):
    """``mode="threshold"`` (hysteresis): per element and frame,

    ``fire = |x_t - r_{t-1}| > theta``; ``r_t = r_{t-1} + fire * (x_t - r_{t-1})``;
    ``y_t = r_t``; ``d_t = r_t - r_{t-1}``; ``r_{-1} = 0``.

    A fired element's reference becomes exactly ``x_t`` (``fire * (x - r)`` is
    added to ``r`` in float32, which lands on ``x_t`` up to one rounding; the
    runtime and the layer both compute ``where(fire, x_t, r_{t-1})`` so that it
    lands *exactly* on ``x_t``). Returns ``(y, d)``.
    """
    x = np.asarray(x, np.float32)
    theta = np.asarray(theta, np.float32)
    r = np.zeros(x.shape[1:], np.float32)
    y = np.empty_like(x)
    d = np.empty_like(x)
    for t in range(x.shape[0]):
        fire = np.abs(x[t] - r) > theta
        new_r = np.where(fire, x[t], r)
        d[t] = new_r - r
        r = new_r
        y[t] = r
    return y, d


def temporal_density(d: np.ndarray) -> float:
    """Fraction of non-zero deltas over frames t >= 1 (frame 0 is the keyframe)."""
    d = np.asarray(d)
    if d.shape[0] < 2:
        return float("nan")
    return float(np.count_nonzero(d[1:]) / d[1:].size)


def spatial_density(y: np.ndarray) -> float:
    """Fraction of non-zero activations over all frames."""
    y = np.asarray(y)
    return float(np.count_nonzero(y) / y.size)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``padding="same"``: (before, after) padding along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1, padding: str = "valid") -> np.ndarray:
    """Dense 2-D convolution (cross-correlation, as Keras), one HWC image, float64 accumulation.

    ``x``: (H, W, Cin); ``w``: (kh, kw, Cin, Cout). Returns (Ho, Wo, Cout) float64.
    """
    x = np.asarray(x, np.float64)
    kh, kw, cin, cout = w.shape
    if padding == "same":
        pt, pb = same_padding(x.shape[0], kh, stride)
        pl, pr = same_padding(x.shape[1], kw, stride)
        x = np.pad(x, ((pt, pb), (pl, pr), (0, 0)))
    ho = (x.shape[0] - kh) // stride + 1
    wo = (x.shape[1] - kw) // stride + 1
    out = np.zeros((ho, wo, cout), np.float64)
    for ky in range(kh):
        for kx in range(kw):
            patch = x[ky : ky + stride * (ho - 1) + 1 : stride, kx : kx + stride * (wo - 1) + 1 : stride, :]
            out += patch @ np.asarray(w[ky, kx], np.float64)
    return out


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1, padding: str = "valid") -> np.ndarray:
    """Dense depthwise convolution, one HWC image. ``w``: (kh, kw, C, M) -> output channels C*M (Keras order)."""
    x = np.asarray(x, np.float64)
    kh, kw, c, m = w.shape
    if padding == "same":
        pt, pb = same_padding(x.shape[0], kh, stride)
        pl, pr = same_padding(x.shape[1], kw, stride)
        x = np.pad(x, ((pt, pb), (pl, pr), (0, 0)))
    ho = (x.shape[0] - kh) // stride + 1
    wo = (x.shape[1] - kw) // stride + 1
    out = np.zeros((ho, wo, c, m), np.float64)
    for ky in range(kh):
        for kx in range(kw):
            patch = x[ky : ky + stride * (ho - 1) + 1 : stride, kx : kx + stride * (wo - 1) + 1 : stride, :]
            out += patch[..., None] * np.asarray(w[ky, kx], np.float64)[None, None]
    return out.reshape(ho, wo, c * m)


# --- sparse-delta helpers (for the ops/ kernel tests) ---------------------------------


def to_sparse(d: np.ndarray):
    """One frame's dense delta ``(H, W, C)`` -> ``(active, rows)``: the ascending flat
    indices of the pixels with a non-zero channel, and their delta rows (the layout of
    ``ops.encode``, trimmed to the active pixels)."""
    d = np.asarray(d, np.float32)
    h, w, c = d.shape
    flat = d.reshape(h * w, c)
    active = np.flatnonzero(np.any(flat != 0, axis=1)).astype(np.int32)
    return active, np.ascontiguousarray(flat[active])


def to_dense(active, n_active: int, rows, h: int, w: int) -> np.ndarray:
    """Inverse of :func:`to_sparse`: scatter ``rows[:n_active]`` to pixels ``active[:n_active]``."""
    rows = np.asarray(rows)
    out = np.zeros((h * w, rows.shape[1]), rows.dtype)
    out[np.asarray(active[:n_active])] = rows[:n_active]
    return out.reshape(h, w, rows.shape[1])


def reached_outputs(mask: np.ndarray, kh: int, kw: int, stride: int = 1, padding: str = "valid") -> np.ndarray:
    """Flat indices (ascending) of the conv outputs whose receptive field contains a
    ``True`` pixel of the 2-D ``mask`` -- the outputs a sparse delta can change."""
    ind = np.asarray(mask, np.float64)[..., None]
    hit = conv2d(ind, np.ones((kh, kw, 1, 1)), stride, padding)[..., 0] > 0
    return np.flatnonzero(hit.ravel())


def refine_shift(anchor: np.ndarray, frame: np.ndarray, sx: float, sy: float, walk: int = 2, truncate: float = 24.0, min_gain: float = 0.75):
    """``streaming.motion.refine_shift`` written plainly (the Python walk it had before it was compiled).

    Truncated absolute difference ``sum(min(|frame - anchor(x - s)|, truncate))`` over a core that
    leaves room for the walk; walk downhill from the rounded estimate (first best of left, right,
    up, down); give up (``None``) if the walk leaves the core; prefer no shift unless the minimum
    is below ``min_gain`` times standing still's cost; equiangular fit of the neighbours for the
    fraction. Returns ``(shift or None, mean remaining cost)``.
    """
    a, f = np.asarray(anchor, np.float64), np.asarray(frame, np.float64)
    h, w = f.shape
    ix, iy = int(round(sx)), int(round(sy))
    r = max(abs(ix), abs(iy)) + walk + 1
    if 2 * r >= min(h, w) // 2:
        return None, truncate
    core = f[r : h - r, r : w - r]

    def cost(dx, dy):
        return float(np.minimum(np.abs(core - a[r - dy : h - r - dy, r - dx : w - r - dx]), truncate).sum())

    def v_fit(left, centre, right):
        rise = max(left, right) - centre
        return 0.0 if rise <= 0 else min(max((left - right) / (2.0 * rise), -0.5), 0.5)

    start = cost(ix, iy) / core.size
    while True:
        c0 = cost(ix, iy)
        best = min(((ix + a_, iy + b_) for a_, b_ in ((-1, 0), (1, 0), (0, -1), (0, 1))), key=lambda p: cost(*p))
        if cost(*best) >= c0:
            break
        if max(abs(best[0]), abs(best[1])) + 1 > r:
            return None, start
        ix, iy = best
    c0 = cost(ix, iy)
    if (ix, iy) != (0, 0) and c0 > min_gain * cost(0, 0):
        ix, iy = 0, 0
        c0 = cost(0, 0)
    fraction = (v_fit(cost(ix - 1, iy), c0, cost(ix + 1, iy)), v_fit(cost(ix, iy - 1), c0, cost(ix, iy + 1)))
    return (ix + fraction[0], iy + fraction[1]), c0 / core.size
