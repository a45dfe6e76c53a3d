"""Delta encoders: turn one frame of activations into a sparse delta.

One encoder per ``DeltaActivation`` mode (the definition is ``tests/naive.py``):

* **threshold** (hysteresis), state ``ref``: per element ``d = x - ref``; where
  ``|d| > theta[c]`` the element fires, transmits ``d`` and sets ``ref = x`` exactly.
* **quantize**, state ``y_prev``: ``y = rint(x / step[c]) * step[c]`` (true float32
  division, round half to even), transmits ``d = y - y_prev`` and sets ``y_prev = y``.

Sparse delta of one frame (the buffer contract shared with :mod:`ops.conv` and
:mod:`ops.depthwise`)
--------------------------------------------------------------------------------
For a frame of shape ``(H, W, C)``:

``active`` : int32 ``(H*W,)``
    Its first ``n_active`` entries are the flat pixel indices ``y*W + x`` of the pixels
    with at least one non-zero channel delta, in ascending order (for the ``*_pixels``
    variants: in the order of the candidate list, i.e. ascending if it is).
``rows`` : float32 ``(H*W, C)``
    Its first ``n_active`` rows are those pixels' delta vectors (exact zeros in the
    channels that did not change). Rows ``>= n_active`` are scratch: their content is
    unspecified.
``nnz``
    The number of non-zero delta elements (so the density is ``nnz / (H*W*C)``).

Entries past ``n_active`` are never read by the MAC kernels. The buffers are allocated
once (:func:`empty_delta`) and reused every frame: the kernels never allocate. All
kernels in ``ops`` expect C-contiguous arrays (numba layout ``'C'``: whole buffers or
leading-axis slices of them).

Non-finite input: every encoder first counts the non-finite values of the pixels it is
about to examine; if there is any, it returns immediately **without touching the
state or the buffers** and the public function raises ``ValueError``. The private
kernels return that count as a third value so compiled callers can react without
exceptions.

The arithmetic is compiled without fastmath, so it is bit-identical to NumPy's
float32 arithmetic (``tests/test_ops_encode.py`` checks it, ties of ``rint`` included).
"""

from __future__ import annotations

import math

import numpy as np

from ops.checks import _check_array, _check_count, _check_pixel_list
from ops.config import njit_exact

__all__ = [
    "empty_delta",
    "encode_threshold",
    "encode_quantize",
    "encode_threshold_pixels",
    "encode_quantize_pixels",
    "count_fires",
]










def _check_frame_and_param(x, param, param_name, state, state_name):
    _check_array("x", x, np.float32, ndim=3)
    h, w, c = x.shape
    if h == 0 or w == 0 or c == 0:
        raise ValueError(f"x must have non-zero dimensions, got shape {x.shape}")
    _check_array(param_name, param, np.float32, shape=(c,))
    _check_array(state_name, state, np.float32, shape=(h, w, c), writeable=True)
    return h, w, c


def _check_delta_buffers(active, rows, n_pixels, c, writeable=True):
    _check_array("active", active, np.int32, shape=(n_pixels,), writeable=writeable)
    _check_array("rows", rows, np.float32, shape=(n_pixels, c), writeable=writeable)


def _raise_nonfinite(bad, x):
    raise ValueError(
        f"x contains {bad} non-finite value(s) (NaN or Inf) among the examined pixels "
        f"(x shape {x.shape}); state and buffers were left unchanged"
    )


def empty_delta(h: int, w: int, c: int):
    """Allocate the buffers of one sparse delta of a ``(h, w, c)`` frame.

    Parameters
    ----------
    h, w, c : int
        Frame height, width and channels.

    Returns
    -------
    active : ndarray of int32, shape (h*w,)
    rows : ndarray of float32, shape (h*w, c)
        Zero-filled (the contents past ``n_active`` are unspecified after use).
    """
    return np.zeros(h * w, np.int32), np.zeros((h * w, c), np.float32)


# --------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------


@njit_exact
def _nonfinite_frame(x):
    """Number of non-finite values in the whole ``(H, W, C)`` frame (C-contiguous)."""
    # one flat loop vectorizes far better than three nested ones (6x for C = 24)
    xf = x.reshape(x.size)
    bad = 0
    for i in range(xf.shape[0]):
        bad += not math.isfinite(xf[i])
    return bad


@njit_exact
def _nonfinite_pixels(x, candidates, n_candidates):
    """Number of non-finite values in the listed pixels of ``x``."""
    w = x.shape[1]
    c = x.shape[2]
    bad = 0
    for t in range(n_candidates):
        p = candidates[t]
        i = p // w
        j = p - i * w
        for k in range(c):
            bad += not math.isfinite(x[i, j, k])
    return bad


# Row kernels: the frame viewed as (H*W, C) rows (no division per pixel to find (i, j)),
# one pass per candidate pixel. They are what the engine runs; the non-finite values are
# counted while encoding (one pass instead of two: the separate check cost as much as
# the encoding itself for C <= 48), so when they report any, the state and buffers of
# the pixels before it HAVE been updated (the engine raises and the stream is broken
# anyway). The ``*_pixels`` kernels below keep the "nothing modified" contract by
# checking first.


@njit_exact(inline="always")
def _hysteresis(x, ref, theta):
    """The threshold hysteresis of one element, the one definition in the kernels (encoders,
    region encoders, calibration): it fires when ``|x - ref| > theta``; a fired element
    transmits ``d = x - ref`` and its reference becomes exactly ``x``. Returns ``(fires, d)``."""
    d = x - ref
    return abs(d) > theta, d


@njit_exact(inline="always")
def _threshold_row_scaled(x, theta, s, ref, rows, p, n):
    """Threshold-encode row ``p`` of the (P, C) ``x`` into ``rows[n]`` with thresholds
    ``theta[k] * s`` (``s``: float32; 1 for the plain encoder, a per-pixel factor for the
    region-weighted one in ``ops.region``). The one definition of the hysteresis in the kernels.

    Returns ``(fired channels, non-finite values of x[p])``.
    """
    c = x.shape[1]
    zero = np.float32(0.0)
    inf = np.float32(np.inf)
    fired = 0
    bad = 0
    for k in range(c):
        xv = x[p, k]
        rv = ref[p, k]
        fire, d = _hysteresis(xv, rv, theta[k] * s)
        # selects, not branches: the loop vectorizes and random firing costs no
        # mispredictions
        rows[n, k] = d if fire else zero
        ref[p, k] = xv if fire else rv
        fired += fire
        bad += not (abs(xv) < inf)  # NaN and +-Inf; vectorizes, unlike math.isfinite
    return fired, bad


@njit_exact(inline="always")
def _threshold_row(x, theta, ref, rows, p, n):
    """Threshold-encode row ``p`` of the (P, C) ``x`` into ``rows[n]`` (``theta * 1`` is
    exactly ``theta``, and the multiplication by 1 compiles away)."""
    return _threshold_row_scaled(x, theta, np.float32(1.0), ref, rows, p, n)


@njit_exact(inline="always")
def _quantize_row(x, step, y_prev, rows, p, n):
    """Quantize-encode row ``p`` of the (P, C) ``x`` into ``rows[n]``.

    Returns ``(non-zero deltas, non-finite values of x[p])``.
    """
    c = x.shape[1]
    inf = np.float32(np.inf)
    changed = 0
    bad = 0
    for k in range(c):
        xv = x[p, k]
        s = step[k]
        y = np.rint(xv / s) * s
        d = y - y_prev[p, k]
        y_prev[p, k] = y
        rows[n, k] = d
        changed += d != 0
        bad += not (abs(xv) < inf)
    return changed, bad


@njit_exact
def _encode_threshold_rows(x, theta, ref, candidates, n_candidates, active, rows):
    """Threshold encoder over the rows ``candidates[:n_candidates]`` of ``x`` (P, C).

    ``ref``: (P, C); ``active``: (>= n_candidates,) int32; ``rows``: (>= n_candidates, C).
    Returns ``(n_active, nnz, n_nonfinite)``; if ``n_nonfinite > 0`` the state and the
    buffers are partially updated (see the comment above).
    """
    n = 0
    nnz = 0
    bad = 0
    for t in range(n_candidates):
        p = candidates[t]
        fired, b = _threshold_row(x, theta, ref, rows, p, n)
        # branch-free append: row n is overwritten by the next candidate if none fired
        active[n] = p
        n += fired > 0
        nnz += fired
        bad += b
    return n, nnz, bad


@njit_exact
def _encode_quantize_rows(x, step, y_prev, candidates, n_candidates, active, rows):
    """Quantize encoder over the rows ``candidates[:n_candidates]`` of ``x`` (P, C).

    See :func:`_encode_threshold_rows`.
    """
    n = 0
    nnz = 0
    bad = 0
    for t in range(n_candidates):
        p = candidates[t]
        changed, b = _quantize_row(x, step, y_prev, rows, p, n)
        active[n] = p
        n += changed > 0
        nnz += changed
        bad += b
    return n, nnz, bad


@njit_exact
def _encode_threshold(x, theta, ref, active, rows):
    """Threshold encoder over the whole frame. Returns ``(n_active, nnz, n_nonfinite)``.

    ``x``, ``ref``: (H, W, C) float32; ``theta``: (C,) float32 (>= 0); ``active``: (H*W,)
    int32; ``rows``: (H*W, C) float32. If ``n_nonfinite > 0`` nothing was modified and
    ``n_active == nnz == 0``.
    """
    bad = _nonfinite_frame(x)
    if bad > 0:
        return 0, 0, bad
    h, w, c = x.shape
    x2 = x.reshape((h * w, c))
    ref2 = ref.reshape((h * w, c))
    n = 0
    nnz = 0
    for p in range(h * w):
        fired, _ = _threshold_row(x2, theta, ref2, rows, p, n)
        if fired > 0:  # (a branch: entries past n_active stay untouched, as documented)
            active[n] = p
            n += 1
            nnz += fired
    return n, nnz, 0


@njit_exact
def _encode_threshold_pixels(x, theta, ref, candidates, n_candidates, active, rows):
    """Threshold encoder over the pixels ``candidates[:n_candidates]`` only (in that order).

    Returns ``(n_active, nnz, n_nonfinite)``; see :func:`_encode_threshold`.
    """
    bad = _nonfinite_pixels(x, candidates, n_candidates)
    if bad > 0:
        return 0, 0, bad
    h, w, c = x.shape
    n, nnz, _ = _encode_threshold_rows(x.reshape((h * w, c)), theta, ref.reshape((h * w, c)), candidates, n_candidates, active, rows)
    return n, nnz, 0


@njit_exact
def _encode_quantize(x, step, y_prev, active, rows):
    """Quantize encoder over the whole frame. Returns ``(n_active, nnz, n_nonfinite)``.

    ``x``, ``y_prev``: (H, W, C) float32; ``step``: (C,) float32 (> 0); buffers as
    :func:`_encode_threshold`.
    """
    bad = _nonfinite_frame(x)
    if bad > 0:
        return 0, 0, bad
    h, w, c = x.shape
    x2 = x.reshape((h * w, c))
    y2 = y_prev.reshape((h * w, c))
    n = 0
    nnz = 0
    for p in range(h * w):
        changed, _ = _quantize_row(x2, step, y2, rows, p, n)
        if changed > 0:
            active[n] = p
            n += 1
            nnz += changed
    return n, nnz, 0


@njit_exact
def _encode_quantize_pixels(x, step, y_prev, candidates, n_candidates, active, rows):
    """Quantize encoder over the pixels ``candidates[:n_candidates]`` only (in that order).

    Returns ``(n_active, nnz, n_nonfinite)``; see :func:`_encode_quantize`.
    """
    bad = _nonfinite_pixels(x, candidates, n_candidates)
    if bad > 0:
        return 0, 0, bad
    h, w, c = x.shape
    n, nnz, _ = _encode_quantize_rows(x.reshape((h * w, c)), step, y_prev.reshape((h * w, c)), candidates, n_candidates, active, rows)
    return n, nnz, 0


@njit_exact
def _count_fires(x, theta):
    """Fires at frames ``t >= 1`` of a threshold layer simulated on clip activations ``x``
    ``(N, T, M, C)`` (N clips, T frames, M pixels) with per-channel ``theta`` ``(C,)``, every
    (clip, pixel) stream starting from ``ref = 0`` (``deltanet.calibrate``'s density model)."""
    n_clips, t_len, m, c = x.shape
    count = 0
    ref = np.zeros(c, np.float32)
    for i in range(n_clips):
        for j in range(m):
            for k in range(c):
                ref[k] = 0.0
            for t in range(t_len):
                for k in range(c):
                    xv = x[i, t, j, k]
                    fire, _ = _hysteresis(xv, ref[k], theta[k])
                    if fire:
                        ref[k] = xv
                        count += t >= 1
    return count


# --------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------


def _check_theta(theta):
    if not np.all(np.isfinite(theta)) or np.any(theta < 0):
        raise ValueError(f"theta must be finite and >= 0, got min {theta.min()!r}, max {theta.max()!r}")


def _check_step(step):
    if not np.all(np.isfinite(step)) or np.any(step <= 0):
        raise ValueError(f"step must be finite and > 0, got min {step.min()!r}, max {step.max()!r}")


def encode_threshold(x, theta, ref, active, rows):
    """Threshold-mode (hysteresis) delta encoding of one frame.

    Per element: ``d = x - ref``; it fires if ``|d| > theta[c]``; a fired element
    transmits ``d`` and its reference becomes exactly ``x``. Matches
    ``tests/naive.py::threshold_stream`` bit for bit.

    Parameters
    ----------
    x : ndarray of float32, shape (H, W, C), C-contiguous
        The current frame's activations. Must be finite.
    theta : ndarray of float32, shape (C,)
        Per-channel thresholds, finite and ``>= 0``.
    ref : ndarray of float32, shape (H, W, C), C-contiguous
        The reference (state, all zeros before the first frame); updated in place.
    active : ndarray of int32, shape (H*W,)
        Output: first ``n_active`` entries = ascending flat indices of the active pixels.
    rows : ndarray of float32, shape (H*W, C)
        Output: first ``n_active`` rows = those pixels' delta vectors.

    Returns
    -------
    n_active : int
        Number of pixels with at least one non-zero delta.
    nnz : int
        Number of non-zero delta elements.

    Raises
    ------
    ValueError
        On a wrong dtype, shape or layout, a negative or non-finite ``theta``, or if
        ``x`` has NaN/Inf (then ``ref`` and the buffers are left unchanged).
    """
    h, w, c = _check_frame_and_param(x, theta, "theta", ref, "ref")
    _check_theta(theta)
    _check_delta_buffers(active, rows, h * w, c)
    n, nnz, bad = _encode_threshold(x, theta, ref, active, rows)
    if bad:
        _raise_nonfinite(bad, x)
    return int(n), int(nnz)


def encode_quantize(x, step, y_prev, active, rows):
    """Quantize-mode delta encoding of one frame.

    ``y = rint(x / step[c]) * step[c]`` (float32 true division, round half to even),
    ``d = y - y_prev``, then ``y_prev = y``. Matches ``tests/naive.py::quantize_stream``
    bit for bit.

    Parameters
    ----------
    x : ndarray of float32, shape (H, W, C), C-contiguous
        The current frame's activations. Must be finite.
    step : ndarray of float32, shape (C,)
        Per-channel quantization steps, finite and ``> 0``.
    y_prev : ndarray of float32, shape (H, W, C), C-contiguous
        The previous quantized output (state, zeros before the first frame); updated
        in place.
    active, rows :
        Output buffers, see :func:`encode_threshold`.

    Returns
    -------
    n_active : int
    nnz : int

    Raises
    ------
    ValueError
        On a wrong dtype, shape or layout, a non-positive or non-finite ``step``, or if
        ``x`` has NaN/Inf (then ``y_prev`` and the buffers are left unchanged).
    """
    h, w, c = _check_frame_and_param(x, step, "step", y_prev, "y_prev")
    _check_step(step)
    _check_delta_buffers(active, rows, h * w, c)
    n, nnz, bad = _encode_quantize(x, step, y_prev, active, rows)
    if bad:
        _raise_nonfinite(bad, x)
    return int(n), int(nnz)


def _check_candidates(candidates, n_candidates, n_pixels):
    _check_array("candidates", candidates, np.int32, ndim=1)
    n = _check_count("n_candidates", n_candidates, candidates.shape[0])
    _check_pixel_list("candidates", candidates, n, n_pixels)
    return n


def encode_threshold_pixels(x, theta, ref, candidates, n_candidates, active, rows):
    """Threshold-mode encoding restricted to a list of candidate pixels.

    Only the pixels ``candidates[:n_candidates]`` are examined (and only their ``ref``
    may change); every other pixel produces no delta. Use it when only those pixels'
    inputs can have changed (e.g. the ``touched`` list of the MAC kernels).

    Parameters
    ----------
    x, theta, ref, active, rows :
        As in :func:`encode_threshold`.
    candidates : ndarray of int32, shape (K,), C-contiguous
        Flat pixel indices ``y*W + x``; the first ``n_candidates`` must be strictly
        ascending and in ``[0, H*W)``. ``active`` lists the active ones in this order.
    n_candidates : int
        Number of valid entries of ``candidates``.

    Returns
    -------
    n_active : int
    nnz : int

    Raises
    ------
    ValueError
        As :func:`encode_threshold`, plus a bad candidate list. Non-finite values are
        only looked for in the candidate pixels.
    """
    h, w, c = _check_frame_and_param(x, theta, "theta", ref, "ref")
    _check_theta(theta)
    _check_delta_buffers(active, rows, h * w, c)
    n_cand = _check_candidates(candidates, n_candidates, h * w)
    n, nnz, bad = _encode_threshold_pixels(x, theta, ref, candidates, n_cand, active, rows)
    if bad:
        _raise_nonfinite(bad, x)
    return int(n), int(nnz)


def encode_quantize_pixels(x, step, y_prev, candidates, n_candidates, active, rows):
    """Quantize-mode encoding restricted to a list of candidate pixels.

    See :func:`encode_quantize` and :func:`encode_threshold_pixels`.

    Parameters
    ----------
    x, step, y_prev, active, rows :
        As in :func:`encode_quantize`.
    candidates : ndarray of int32, shape (K,)
        Strictly ascending flat pixel indices (first ``n_candidates`` entries).
    n_candidates : int

    Returns
    -------
    n_active : int
    nnz : int

    Raises
    ------
    ValueError
        As :func:`encode_quantize`, plus a bad candidate list.
    """
    h, w, c = _check_frame_and_param(x, step, "step", y_prev, "y_prev")
    _check_step(step)
    _check_delta_buffers(active, rows, h * w, c)
    n_cand = _check_candidates(candidates, n_candidates, h * w)
    n, nnz, bad = _encode_quantize_pixels(x, step, y_prev, candidates, n_cand, active, rows)
    if bad:
        _raise_nonfinite(bad, x)
    return int(n), int(nnz)


def count_fires(x, theta):
    """Fires of a threshold-mode delta layer at frames ``t >= 1`` of cached clip activations.

    Parameters
    ----------
    x : ndarray of float32, shape (N, T, M, C), C-contiguous
        N clips of T frames, M pixels, C channels; each (clip, pixel) starts from ``ref = 0``.
    theta : ndarray of float32, shape (C,)
        Per-channel thresholds, finite and ``>= 0``.

    Returns
    -------
    int
        Transmitted non-zero delta elements over frames ``t >= 1``.
    """
    _check_array("x", x, np.float32, ndim=4)
    _check_array("theta", theta, np.float32, shape=(x.shape[3],))
    _check_theta(theta)
    return int(_count_fires(x, theta))
