"""Delta MAC kernels for DepthwiseConv2D.

``acc += depthwise_conv2d(delta)`` for one sparse delta frame, touching only the
outputs the active pixels reach. Weights ``(kh, kw, C, M)`` (depth multiplier ``M``),
output channel ``c*M + m`` (Keras order). The buffer contract (``active``/``rows``
input, ``acc``, ``touched`` strictly ascending, ``mark`` zero on entry and on return,
``(n_touched, macs)`` result) and the geometry are those of :mod:`ops.conv`.

Granularity, chosen per active pixel: a pixel whose delta row has few non-zero channels
(at most ``C // SPARSE_RATIO``) is processed element-wise, ``acc[o, c*M + m] +=
rows[a, c] * W[ky, kx, c, m]`` for its non-zero ``c`` only; a denser row is processed
whole (a depthwise MAC per element is a single multiply-add, so skipping zeros costs
about as much as it saves unless they are the vast majority; the whole row vectorizes).
``macs`` counts the executed multiply-adds (zeros included for dense rows). Kernels take
an int32 ``nzbuf`` scratch ``(B, C)`` like the element-wise Conv2D. The parallel variant
splits the output rows among threads (each thread handles the active pixels that reach
its rows, through the taps that land there), which needs ``active`` ascending (the
encoders' order).
"""

from __future__ import annotations

import numpy as np

from ops.config import njit_mac, njit_par, prange
from ops.accumulate import _compact_nz, _count_nz
from ops.blocks import _n_blocks, _row_span, _split_row, nz_scratch
from ops.checks import _check_array, _check_geometry, _check_int, _check_mark, _check_sparse_input, _check_touched, _scratch
from ops.touch import _conv2d_touch, _taps

__all__ = ["depthwise_delta"]


#: A pixel whose delta row has at most ``C // SPARSE_RATIO`` non-zero channels is
#: processed channel by channel (element-wise); denser rows are processed whole
#: (vectorized, zeros included).
SPARSE_RATIO = 32


@njit_mac(inline="always")
def _dw_dense(rows, a, w2, ky, kx, acc, oy, ox, c, mult):
    """``acc[oy, ox, c*M + m] += rows[a, c] * w2[ky, kx, c*M + m]`` for every ``c``.

    ``w2`` is the weights viewed as ``(kh, kw, C*M)``. Plain indexing with zero-based
    loop counters: no array views in the hot loop (a view costs two atomic reference
    count updates) and no negative-index wraparound code (which blocks vectorization).
    """
    if mult == 1:
        for i in range(c):
            acc[oy, ox, i] += rows[a, i] * w2[ky, kx, i]
    else:
        for i in range(c):
            v = rows[a, i]
            for m in range(mult):
                acc[oy, ox, i * mult + m] += v * w2[ky, kx, i * mult + m]


@njit_mac(inline="always")
def _dw_sparse(rows, a, nz, k, w2, ky, kx, acc, oy, ox, mult):
    """As :func:`_dw_dense` for the ``k`` channels listed in ``nz`` only."""
    if mult == 1:
        for j in range(k):
            ci = nz[j]
            acc[oy, ox, ci] += rows[a, ci] * w2[ky, kx, ci]
    else:
        for j in range(k):
            ci = nz[j]
            v = rows[a, ci]
            for m in range(mult):
                acc[oy, ox, ci * mult + m] += v * w2[ky, kx, ci * mult + m]


@njit_mac
def _depthwise_rows_range(active, rows, in_w, w, stride, pad_top, pad_left, acc, nz, a0, a1, r0, r1):
    """Accumulate the active pixels ``a0 <= a < a1`` through every tap whose output row
    is in ``[r0, r1)``. ``nz``: int32 ``(>= C,)`` scratch. Returns the MACs done."""
    kh, kw, c, mult = w.shape
    w2 = w.reshape((kh, kw, c * mult))
    out_h = acc.shape[0]
    out_w = acc.shape[1]
    macs = 0
    row0 = 0
    row1 = 0  # the current input row's flat indices (see ops.touch._conv2d_touch)
    ky0 = oy0 = ty_lo = ty_hi = 0
    for a in range(a0, a1):
        p = active[a]
        if p >= row1 or p < row0:
            iy = p // in_w
            row0 = iy * in_w
            row1 = row0 + in_w
            ky0, oy0, ty_lo, ty_hi = _taps(iy, pad_top, kh, stride, out_h)
            if ty_lo < oy0 - r1 + 1:
                ty_lo = oy0 - r1 + 1
            if ty_hi > oy0 - r0 + 1:
                ty_hi = oy0 - r0 + 1
        ix = p - row0
        kx0, ox0, tx_lo, tx_hi = _taps(ix, pad_left, kw, stride, out_w)
        if ty_hi <= ty_lo or tx_hi <= tx_lo:
            continue
        pairs = (ty_hi - ty_lo) * (tx_hi - tx_lo)
        if _count_nz(rows, a) * SPARSE_RATIO <= c:
            k = _compact_nz(rows, a, nz)
            macs += pairs * k * mult
            for ty in range(ty_lo, ty_hi):
                ky = ky0 + ty * stride
                oy = oy0 - ty
                for tx in range(tx_lo, tx_hi):
                    _dw_sparse(rows, a, nz, k, w2, ky, kx0 + tx * stride, acc, oy, ox0 - tx, mult)
        else:
            macs += pairs * c * mult
            for ty in range(ty_lo, ty_hi):
                ky = ky0 + ty * stride
                oy = oy0 - ty
                for tx in range(tx_lo, tx_hi):
                    _dw_dense(rows, a, w2, ky, kx0 + tx * stride, acc, oy, ox0 - tx, c, mult)
    return macs


@njit_mac
def _depthwise(active, n_active, rows, in_w, w, stride, pad_top, pad_left, acc, touched, mark, nzbuf):
    """Delta DepthwiseConv2D (serial). Returns ``(n_touched, macs)``.

    ``w``: (kh, kw, C, M) float32; ``acc``: (Ho, Wo, C*M) float32; ``nzbuf``: int32
    scratch ``(>= 1, C)`` (row 0 is used).
    """
    kh, kw, c, mult = w.shape
    out_h, out_w, _ = acc.shape
    n_t, _pairs = _conv2d_touch(active, n_active, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, touched, mark)
    macs = _depthwise_rows_range(active, rows, in_w, w, stride, pad_top, pad_left, acc, nzbuf[0], 0, n_active, 0, out_h)
    return n_t, macs


@njit_par
def _depthwise_par(active, n_active, rows, in_w, w, stride, pad_top, pad_left, acc, touched, mark, nzbuf):
    """Delta DepthwiseConv2D, parallel: the output rows are split among threads (one block
    per row of ``nzbuf``, at most ``PAR_BLOCKS``, with about the same number of active
    pixels). Needs ``active`` ascending. See :func:`_depthwise`.
    """
    kh, kw, c, mult = w.shape
    out_h, out_w, _ = acc.shape
    n_t, _pairs = _conv2d_touch(active, n_active, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, touched, mark)
    nb = _n_blocks(out_h, 1)
    if nb > nzbuf.shape[0]:
        nb = nzbuf.shape[0]
    macs = 0
    for b in prange(nb):
        r0 = _split_row(active, n_active, b, nb, in_w, pad_top, stride, out_h)
        r1 = _split_row(active, n_active, b + 1, nb, in_w, pad_top, stride, out_h)
        a0, a1 = _row_span(active, n_active, in_w, r0, r1, kh, stride, pad_top)
        macs += _depthwise_rows_range(active, rows, in_w, w, stride, pad_top, pad_left, acc, nzbuf[b], a0, a1, r0, r1)
    return n_t, macs


def depthwise_delta(
    active, n_active, rows, in_h, in_w, weights, stride, pad_top, pad_left, acc, touched, mark, *, parallel=False,
    nzbuf=None,
):  # fmt: skip
    """Accumulate the DepthwiseConv2D of one sparse delta frame into ``acc``.

    Parameters
    ----------
    active : ndarray of int32, shape (>= n_active,)
        Flat indices ``iy*in_w + ix`` of the active input pixels (distinct, ascending).
    n_active : int
    rows : ndarray of float32, shape (>= n_active, C)
        Delta vectors of the active pixels.
    in_h, in_w : int
        Input height and width.
    weights : ndarray of float32, shape (kh, kw, C, M)
        Keras layout (depth multiplier ``M``).
    stride : int
    pad_top, pad_left : int
        Leading padding (see :func:`ops.geometry.conv_geometry`).
    acc : ndarray of float32, shape (Ho, Wo, C*M), C-contiguous
        Persistent pre-activation buffer (output channel ``c*M + m``), updated in place.
    touched : ndarray of int32, shape (Ho*Wo,)
        Output: strictly ascending flat indices of the outputs reached.
    mark : ndarray of uint8, shape (Ho*Wo,)
        Zero-filled scratch, zero again on return.
    parallel : bool
        Use the multi-threaded kernel.
    nzbuf : ndarray of int32, shape (B, C), optional
        Scratch (B >= 1; the parallel kernel uses at most B blocks), see
        :func:`ops.blocks.nz_scratch`. Allocated if None.

    Returns
    -------
    n_touched : int
    macs : int
        Multiply-adds executed (per (pixel, tap) pair in range: ``nnz(pixel) * M`` for a
        sparse row, ``C * M`` for a dense one).

    Raises
    ------
    ValueError
        On a wrong dtype, shape or layout, inconsistent sizes, bad ``active`` entries or
        a non-zero ``mark``.
    """
    in_h = _check_int("in_h", in_h, 1)
    in_w = _check_int("in_w", in_w, 1)
    stride = _check_int("stride", stride, 1)
    pad_top = _check_int("pad_top", pad_top, 0)
    pad_left = _check_int("pad_left", pad_left, 0)
    _check_array("weights", weights, np.float32, ndim=4)
    kh, kw, c, mult = weights.shape
    _check_array("acc", acc, np.float32, ndim=3, writeable=True)
    out_h, out_w, acc_c = acc.shape
    if acc_c != c * mult:
        raise ValueError(f"acc must have C*M = {c * mult} channels, got shape {acc.shape}")
    _check_geometry(in_h, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w)
    n = _check_sparse_input(active, n_active, rows, in_h * in_w, c)
    _check_touched(touched, out_h * out_w)
    _check_mark(mark, out_h * out_w)
    nzbuf = nz_scratch(c, parallel) if nzbuf is None else _scratch("nzbuf", nzbuf, 1, c, np.int32)
    kern = _depthwise_par if parallel else _depthwise
    n_t, macs = kern(active, n, rows, in_w, weights, stride, pad_top, pad_left, acc, touched, mark, nzbuf)
    return int(n_t), int(macs)
