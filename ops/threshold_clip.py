"""Threshold mode over whole training clips in one pass: ``DeltaActivation``'s training fast path.

``DeltaActivation`` (``mode="threshold"``) on a clip ``x`` of known length computes the
references ``y_t`` (its output), the statistics of the transmitted deltas ``d_t = y_t - y_{t-1}``
at frames ``t >= 1`` (``sum|d|``, ``sum d^2``, the non-zero count) and the non-zero count of
``y``; backward, ``dL/dx_t = g_y_t + g_l1 sign(d_t) + 2 g_l2 d_t`` (``t >= 1``). As separate
TensorFlow ops that is about twenty passes over every activation of the network per
training step; these two kernels do it in one pass each way (``docs/training_speed.md``,
"Session 5"). ``deltanet.threshold_clip_tf`` calls them from the TensorFlow graph; the
backend-neutral ``keras.ops`` formulation (``deltanet.delta_activation._threshold_clip``)
is their reference.

The recursion is the one definition of the hysteresis in the kernels
(:func:`ops.encode._hysteresis`), so training and the runtime agree bit for bit. Sums are
accumulated in float64. Each kernel comes serial (the default) and as a ``prange`` over the
clips (``parallel=True``): while a kernel runs, the training step has nothing else to do on a
chain of layers, so a second core would otherwise idle; but a parallel region on a busy 2-core
machine waits for descheduled workers (``ops.config``; session 5 measured 8 ms per call under
load against 1.4 ms serial). ``docs/training_speed.md``, "Session 6", has the measurements.

Outputs are :data:`ALIGNMENT`-aligned (or written into ``out``): TensorFlow then takes them as
they are instead of copying them.
"""

from __future__ import annotations

import math

import numpy as np

from ops.checks import _check_array
from ops.config import njit_exact, njit_par, prange
from ops.encode import _check_theta, _hysteresis


@njit_exact(fastmath={"reassoc"})
def _forward_clip(x, theta_row, y):
    """One clip: ``x``, ``y``: (T, E) float32; ``theta_row``: (E,), each element's threshold.
    Returns ``(sum|d|, sum d^2, non-zero d, non-zero y)``. Two loops per frame, the recursion and
    then the statistics of ``d = y_t - y_{t-1}`` (what the recursion transmitted, see
    :func:`_delta`): one loop doing both does not vectorize (4.5x slower). ``reassoc`` lets the
    float64 sums vectorize; the recursion has nothing to reassociate."""
    t_len, e = x.shape
    l1 = 0.0
    l2 = 0.0
    nonzero_d = 0
    nonzero_y = 0
    for t in range(t_len):
        xr = x[t]
        yr = y[t]
        ref = y[t - 1] if t else np.zeros(0, np.float32)
        for k in range(e):
            r = ref[k] if t else np.float32(0.0)
            fires, _ = _hysteresis(xr[k], r, theta_row[k])
            yr[k] = xr[k] if fires else r
        for k in range(e):
            nonzero_y += yr[k] != 0
        if t:
            for k in range(e):
                d = _delta(yr[k], ref[k])
                l1 += abs(np.float64(d))
                l2 += np.float64(d) * np.float64(d)
                nonzero_d += d != 0
    return l1, l2, nonzero_d, nonzero_y


@njit_exact
def _forward(x, theta_row, y, stats):
    """``x``, ``y``: (N, T, E) float32, clip after clip on this thread; ``stats``: (4,) float64,
    receives ``(sum|d|, sum d^2, non-zero d, non-zero y)``."""
    stats[:] = 0.0
    for i in range(x.shape[0]):
        l1, l2, nonzero_d, nonzero_y = _forward_clip(x[i], theta_row, y[i])
        stats[0] += l1
        stats[1] += l2
        stats[2] += nonzero_d
        stats[3] += nonzero_y


@njit_par
def _forward_par(x, theta_row, y, stats):
    """:func:`_forward` with the clips shared out among numba's threads."""
    l1 = 0.0
    l2 = 0.0
    nonzero_d = 0
    nonzero_y = 0
    for i in prange(x.shape[0]):
        a, b, c, d = _forward_clip(x[i], theta_row, y[i])
        l1 += a
        l2 += b
        nonzero_d += c
        nonzero_y += d
    stats[0] = l1
    stats[1] = l2
    stats[2] = nonzero_d
    stats[3] = nonzero_y


@njit_exact(inline="always")
def _delta(now, before):
    """The delta the recursion transmitted, from its references: ``now - before``, 0 where the
    reference did not move (``inf - inf`` would be NaN). Bit for bit the fired ``x_t - r_{t-1}``."""
    return now - before if now != before else np.float32(0.0)


@njit_exact
def _backward_clip(y, g_y, g_l1, two_g_l2, g_x):
    """One clip: ``y``, ``g_y``, ``g_x``: (T, E) float32."""
    t_len, e = y.shape
    zero = np.float32(0.0)
    one = np.float32(1.0)
    g_x[0] = g_y[0]
    for t in range(1, t_len):
        now = y[t]
        before = y[t - 1]
        gy = g_y[t]
        gx = g_x[t]
        for k in range(e):
            d = _delta(now[k], before[k])
            sign = one if d > zero else (-one if d < zero else zero)
            gx[k] = gy[k] + (g_l1 * sign + two_g_l2 * d)


@njit_exact
def _backward(y, g_y, g_l1, two_g_l2, g_x):
    """``y``, ``g_y``, ``g_x``: (N, T, E) float32, clip after clip on this thread."""
    for i in range(y.shape[0]):
        _backward_clip(y[i], g_y[i], g_l1, two_g_l2, g_x[i])


@njit_par
def _backward_par(y, g_y, g_l1, two_g_l2, g_x):
    """:func:`_backward` with the clips shared out among numba's threads."""
    for i in prange(y.shape[0]):
        _backward_clip(y[i], g_y[i], g_l1, two_g_l2, g_x[i])


#: Byte alignment of the arrays the kernels return. TensorFlow wraps a returned NumPy array
#: without copying it only if its data is aligned to Eigen's maximum (at most 64 bytes); NumPy
#: aligns to 16, so ``np.empty`` would cost a full copy of every output, forward and backward.
ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialized C-contiguous float32 array whose data starts on an :data:`ALIGNMENT` boundary."""
    size = math.prod(shape) * 4
    raw = np.empty(size + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + size].view(np.float32).reshape(shape)


def _output(out: np.ndarray | None, shape: tuple[int, ...], *inputs: np.ndarray) -> np.ndarray:
    if out is None:
        return aligned_empty(shape)
    _check_array("out", out, np.float32, shape=shape, writeable=True)
    if any(np.may_share_memory(out, a) for a in inputs):
        raise ValueError("out must not overlap the inputs")
    return out


def threshold_clip_forward(
    x: np.ndarray, theta: np.ndarray, parallel: bool = False, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Threshold mode over clips: references and delta statistics in one pass.

    Parameters
    ----------
    x : ndarray of float32, shape (N, T, M, C), C-contiguous
        N clips of T frames, M pixels of C channels each.
    theta : ndarray of float32, shape (C,)
        Per-channel thresholds, finite and ``>= 0``.
    parallel : bool
        Share the clips out among numba's threads (``numba.set_num_threads``). Defaults to False.
    out : ndarray of float32, the shape of ``x``, C-contiguous, optional
        Where to write ``y`` (not overlapping ``x``) (returned as is). Defaults to a new :func:`aligned_empty` array.

    Returns
    -------
    y : ndarray of float32, shape (N, T, M, C), :data:`ALIGNMENT`-aligned
        The references ``r_t = x_t`` where ``|x_t - r_{t-1}| > theta``, else ``r_{t-1}``
        (``r_{-1} = 0``): the layer's output.
    stats : ndarray of float64, shape (4,)
        ``sum |d_t|`` and ``sum d_t^2`` over frames ``t >= 1``, the number of non-zero
        ``d_t`` (``t >= 1``) and of non-zero elements of ``y`` (all frames). One array, so
        that a caller in a TensorFlow graph receives them as one output.
    """
    _check_array("x", x, np.float32, 4)
    _check_array("theta", theta, np.float32, 1, shape=(x.shape[3],))
    _check_theta(theta)
    n, t, m, c = x.shape
    y = _output(out, x.shape, x)
    stats = np.empty(4, np.float64)
    kernel = _forward_par if parallel else _forward
    kernel(x.reshape(n, t, m * c), np.tile(theta, m), y.reshape(n, t, m * c), stats)
    return y, stats


def threshold_clip_backward(
    y: np.ndarray, g_y: np.ndarray, g_l1: float, g_l2: float, parallel: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient w.r.t. ``x`` of ``threshold_clip_forward``'s ``y``, ``l1`` and ``l2``.

    ``g_x_t = g_y_t + g_l1 sign(d_t) + 2 g_l2 d_t`` at frames ``t >= 1`` (``g_y_0`` at
    ``t = 0``), ``d_t = y_t - y_{t-1}``: ``y`` passes gradients straight through, the penalty
    pulls each fired ``x_t`` towards what was last sent. Arithmetic in float32, in the order
    ``deltanet.delta_activation._threshold_clip``'s gradient uses.

    Parameters
    ----------
    y : ndarray of float32, shape (N, T, ...), C-contiguous
        The forward pass's output.
    g_y : ndarray of float32, same shape as ``y``, C-contiguous
        Upstream gradient of ``y``.
    g_l1, g_l2 : float
        Upstream gradients of ``l1`` and ``l2``.
    parallel : bool
        Share the clips out among numba's threads. Defaults to False.
    out : ndarray of float32, the shape of ``y``, C-contiguous, optional
        Where to write the gradient (not overlapping ``y``, ``g_y``) (returned as is). Defaults to a new :func:`aligned_empty` array.

    Returns
    -------
    ndarray of float32, the shape of ``y``, :data:`ALIGNMENT`-aligned
    """
    if y.ndim < 2 or g_y.shape != y.shape:
        raise ValueError(f"y and g_y must have one shape (N, T, ...), got {y.shape} and {g_y.shape}")
    flat = (y.shape[0], y.shape[1], -1)
    _check_array("y", y, np.float32)
    _check_array("g_y", g_y, np.float32)
    g_x = _output(out, y.shape, y, g_y)
    g_l1, g_l2 = np.float32(g_l1), np.float32(g_l2)
    (_backward_par if parallel else _backward)(y.reshape(flat), g_y.reshape(flat), g_l1, np.float32(2.0) * g_l2, g_x.reshape(flat))
    return g_x
