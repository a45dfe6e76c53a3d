"""Region-weighted threshold encoder: a spatially varying threshold (after VASparse, arXiv 2501.06553).

The plain threshold encoder (:mod:`ops.encode`) fires an element when
``|x - ref| > theta[c]``. Here the threshold of pixel ``p`` (flat index ``y*W + x``) is
``theta[c] * pixel_scale[p]``: with ``pixel_scale = 1 / (1 + lambda * P)``
(:func:`streaming.region.pixel_scales`, ``P`` a cheap prior such as motion magnitude or a
region of interest) the pixels that matter update more often than the background.

Semantics are otherwise exactly those of :func:`ops.encode._encode_threshold_pixels`
(hysteresis; a fired element transmits ``d = x - ref`` and its reference becomes exactly
``x``; the buffer contract, candidate list and non-finite handling are the same). The
product ``theta[c] * pixel_scale[p]`` is one float32 multiplication, compiled without
fastmath, so a NumPy reference ``abs(x - ref) > theta[None, :] * scale[:, None]`` (all
float32) reproduces it bit for bit. ``pixel_scale == 1`` everywhere gives exactly
:func:`ops.encode._encode_threshold_pixels`.
"""

from __future__ import annotations

import numpy as np

from ops.config import njit_exact
from ops.checks import _check_array
from ops.encode import (
    _check_candidates,
    _check_delta_buffers,
    _check_frame_and_param,
    _check_theta,
    _nonfinite_pixels,
    _raise_nonfinite,
    _threshold_row_scaled,
)

__all__ = ["encode_threshold_pixels_scaled"]


@njit_exact
def _encode_threshold_rows_scaled(x, theta, pixel_scale, ref, candidates, n_candidates, active, rows):
    """Region-weighted threshold encoder over the rows ``candidates[:n_candidates]`` of ``x`` (P, C).

    As ``ops.encode._encode_threshold_rows`` (same buffers, same partial-update contract on
    non-finite input) with the threshold of row ``p`` scaled by ``pixel_scale[p]``.
    Returns ``(n_active, nnz, n_nonfinite)``.
    """
    n = 0
    nnz = 0
    bad = 0
    for t in range(n_candidates):
        p = candidates[t]
        fired, b = _threshold_row_scaled(x, theta, pixel_scale[p], ref, rows, p, n)
        active[n] = p
        n += fired > 0
        nnz += fired
        bad += b
    return n, nnz, bad


@njit_exact
def _encode_threshold_pixels_scaled(x, theta, pixel_scale, ref, candidates, n_candidates, active, rows):
    """Threshold encoder over ``candidates[:n_candidates]`` with a per-pixel threshold scale.

    ``x``, ``ref``: (H, W, C) float32; ``theta``: (C,) float32 (>= 0); ``pixel_scale``:
    (H*W,) float32 (>= 0, finite); ``active``: (H*W,) int32; ``rows``: (H*W, C) float32.
    An element fires when ``|x - ref| > theta[c] * pixel_scale[p]``. Returns
    ``(n_active, nnz, n_nonfinite)``; if ``n_nonfinite > 0`` nothing was modified.
    """
    bad = _nonfinite_pixels(x, candidates, n_candidates)
    if bad > 0:
        return 0, 0, bad
    h, w, c = x.shape
    n, nnz, _ = _encode_threshold_rows_scaled(
        x.reshape((h * w, c)), theta, pixel_scale, ref.reshape((h * w, c)), candidates, n_candidates, active, rows
    )
    return n, nnz, 0


def encode_threshold_pixels_scaled(x, theta, pixel_scale, ref, candidates, n_candidates, active, rows):
    """Region-weighted threshold encoding of the listed candidate pixels of one frame.

    Parameters
    ----------
    x, theta, ref, candidates, n_candidates, active, rows :
        As in :func:`ops.encode.encode_threshold_pixels`.
    pixel_scale : ndarray of float32, shape (H*W,), C-contiguous
        Per-pixel factor on the thresholds, finite and ``>= 0`` (``1``: the plain encoder).

    Returns
    -------
    n_active : int
    nnz : int

    Raises
    ------
    ValueError
        As :func:`ops.encode.encode_threshold_pixels`, plus a bad ``pixel_scale``.
    """
    h, w, c = _check_frame_and_param(x, theta, "theta", ref, "ref")
    _check_theta(theta)
    _check_array("pixel_scale", pixel_scale, np.float32, shape=(h * w,))
    if not np.all(np.isfinite(pixel_scale)) or np.any(pixel_scale < 0):
        raise ValueError("pixel_scale must be finite and >= 0")
    _check_delta_buffers(active, rows, h * w, c)
    n_cand = _check_candidates(candidates, n_candidates, h * w)
    n, nnz, bad = _encode_threshold_pixels_scaled(x, theta, pixel_scale, ref, candidates, n_cand, active, rows)
    if bad:
        _raise_nonfinite(bad, x)
    return int(n), int(nnz)
