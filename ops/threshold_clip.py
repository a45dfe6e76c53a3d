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
accumulated in float32 within blocks of :data:`BLOCK` elements and in float64 across them. Each kernel comes serial (the default) and as a ``prange`` over the
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


#: Elements per block of :func:`_forward_clip`: ``x``, ``y`` and the reference rows of one
#: block (3 x 8 KiB) stay in a 48 KiB L1 data cache between the recursion and the statistics.
BLOCK = 2048


@njit_exact(fastmath={"reassoc"})
def _forward_clip(x, theta_row, y):
    """One clip: ``x``, ``y``: (T, E) float32; ``theta_row``: (E,), each element's threshold.
    Returns ``(sum|d|, sum d^2, non-zero d, non-zero y)``.

    Per frame and per :data:`BLOCK` of elements, two loops: the recursion, then the statistics
    of ``d = y_t - y_{t-1}`` (what the recursion transmitted, see :func:`_delta`) and of ``y``.
    One loop doing both does not vectorize (4.5x slower); two loops over whole frames re-read
    ``y_t`` and ``y_{t-1}`` from L2/L3 (frames of the large layers are 0.6 MB each). Each block's
    sums are float32 (full-width vectors), accumulated in float64 across blocks; counts int32
    per block. Blocked, one forward pass over the default model's 26 layers takes 5.3-5.6 ms against
    7.5-7.6 ms before (``prange``; serial 7.7 against 12.6-12.9; ``python
    scripts/threshold_clip_kernels.py --cold``, docs/training_speed.md, "Session 11").
    ``reassoc`` lets the sums vectorize; the recursion has nothing to reassociate."""
    t_len, e = x.shape
    zero = np.float32(0.0)
    l1 = 0.0
    l2 = 0.0
    nonzero_d = 0
    nonzero_y = 0
    x0 = x[0]
    y0 = y[0]
    count = np.int32(0)
    for k in range(e):
        fires, _ = _hysteresis(x0[k], zero, theta_row[k])
        v = x0[k] if fires else zero
        y0[k] = v
        count += np.int32(v != zero)
    nonzero_y += count
    for t in range(1, t_len):
        for s in range(0, e, BLOCK):
            n = min(BLOCK, e - s)
            xb = x[t, s : s + n]
            yb = y[t, s : s + n]
            ref = y[t - 1, s : s + n]
            tb = theta_row[s : s + n]
            for k in range(n):
                r = ref[k]
                fires, _ = _hysteresis(xb[k], r, tb[k])
                yb[k] = xb[k] if fires else r
            a = zero
            b = zero
            count_d = np.int32(0)
            count_y = np.int32(0)
            for k in range(n):
                d = _delta(yb[k], ref[k])
                a += abs(d)
                b += d * d
                count_d += np.int32(d != zero)
                count_y += np.int32(yb[k] != zero)
            l1 += a
            l2 += b
            nonzero_d += count_d
            nonzero_y += count_y
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


_cfuncs: tuple | None = None


def clip_cfuncs() -> tuple:
    """C-callable versions of :func:`_forward_clip` and :func:`_backward_clip` (numba ``cfunc``,
    compiled on first call, ~2 s): ``(forward, backward)``, each with ``.address``.

    They let a native TensorFlow op (``deltanet/native/threshold_clip_op.cc``) run *these*
    kernels, one clip per call, on TensorFlow's own threads, with no Python in between:
    the recursion keeps one definition. C signatures::

        void forward(const float* x, const float* theta_row, float* y, int64 t, int64 e, double* stats4)
        void backward(const float* y, const float* g_y, float* g_x, int64 t, int64 e, float g_l1, float two_g_l2)
    """
    global _cfuncs
    if _cfuncs is None:
        from numba import carray, cfunc, types

        f32p, f64p = types.CPointer(types.float32), types.CPointer(types.float64)

        @cfunc(types.void(f32p, f32p, f32p, types.int64, types.int64, f64p), nopython=True, error_model="numpy")
        def forward(x_ptr, theta_ptr, y_ptr, t, e, stats_ptr):
            x = carray(x_ptr, (t, e))
            y = carray(y_ptr, (t, e))
            stats = carray(stats_ptr, (4,))
            l1, l2, nonzero_d, nonzero_y = _forward_clip(x, carray(theta_ptr, (e,)), y)
            stats[0] = l1
            stats[1] = l2
            stats[2] = nonzero_d
            stats[3] = nonzero_y

        @cfunc(types.void(f32p, f32p, f32p, types.int64, types.int64, types.float32, types.float32), nopython=True, error_model="numpy")
        def backward(y_ptr, g_y_ptr, g_x_ptr, t, e, g_l1, two_g_l2):
            _backward_clip(carray(y_ptr, (t, e)), carray(g_y_ptr, (t, e)), g_l1, two_g_l2, carray(g_x_ptr, (t, e)))

        _cfuncs = (forward, backward)
    return _cfuncs
