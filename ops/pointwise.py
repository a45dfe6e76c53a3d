"""Delta MAC kernels for pointwise (1x1, stride 1) convolutions and Dense layers.

``acc[p] += rows[a] @ W`` for every active pixel ``p = active[a]`` (the buffer contract of
:mod:`ops.conv`); a Dense layer is a ``(1, 1, C)`` frame. Element-wise kernels scatter the
non-zero entries of each delta row, pixel-wise kernels multiply the whole ``(n, Cin)`` block
(``np.dot``: BLAS sgemm). The parallel variants split the active pixels among threads (a
single pixel, i.e. Dense, splits the output channels).
"""

from __future__ import annotations

import numpy as np

from ops.accumulate import _add_rows, _compact_nz, _matmul, _scatter_nz, _scatter_nz_channels
from ops.blocks import _block, _n_blocks, nz_scratch
from ops.checks import _check_array, _check_granularity, _check_sparse_input, _check_touched, _scratch
from ops.config import CHANNEL_BLOCK, njit_exact, njit_mac, njit_par, prange

__all__ = ["pointwise_delta", "dense_delta"]


@njit_exact
def _copy_touched(active, n_active, touched):
    for a in range(n_active):
        touched[a] = active[a]
    return n_active


@njit_mac
def _pointwise_elem(active, n_active, rows, w, acc, touched, nzbuf):
    """Element-wise delta pointwise conv / Dense (serial). Returns ``(n_touched, macs)``.

    ``w``: (Cin, Cout); ``acc``: (H, W, Cout) with the input's H, W (Dense: (1, 1, Cout));
    ``nzbuf``: int32 scratch ``(>= 1, Cin)``. ``touched[:n_active]`` receives a copy of
    ``active[:n_active]``.
    """
    cin, cout = w.shape
    w4 = w.reshape((1, 1, cin, cout))
    out_w = acc.shape[1]
    n_t = _copy_touched(active, n_active, touched)
    nz = nzbuf[0]
    macs = 0
    for a in range(n_active):
        k = _compact_nz(rows, a, nz)
        p = active[a]
        oy = p // out_w
        ox = p - oy * out_w
        macs += k * cout
        _scatter_nz(acc, oy, ox, w4, 0, 0, rows, a, nz, k)
    return n_t, macs


@njit_par
def _pointwise_elem_par(active, n_active, rows, w, acc, touched, nzbuf):
    """Element-wise delta pointwise / Dense, parallel: the active pixels are split among
    threads (distinct pixels own distinct ``acc`` rows); a single pixel (Dense) splits
    the output channels instead. One block per row of ``nzbuf`` at most.
    See :func:`_pointwise_elem`.
    """
    cin, cout = w.shape
    out_w = acc.shape[1]
    n_t = _copy_touched(active, n_active, touched)
    macs = 0
    if n_active == 1:
        nb = _n_blocks(cout, CHANNEL_BLOCK)
        if nb > nzbuf.shape[0]:
            nb = nzbuf.shape[0]
        p = active[0]
        oy = p // out_w
        ox = p - oy * out_w
        for b in prange(nb):
            c0, c1 = _block(b, nb, cout, CHANNEL_BLOCK)
            nz = nzbuf[b]
            k = _compact_nz(rows, 0, nz)
            _scatter_nz_channels(acc, oy, ox, w, rows, 0, nz, k, c0, c1)
            macs += k * (c1 - c0)
        return n_t, macs
    w4 = w.reshape((1, 1, cin, cout))
    nb = _n_blocks(n_active, 1)
    if nb > nzbuf.shape[0]:
        nb = nzbuf.shape[0]
    for b in prange(nb):
        a0, a1 = _block(b, nb, n_active, 1)
        nz = nzbuf[b]
        m = 0
        for a in range(a0, a1):
            k = _compact_nz(rows, a, nz)
            p = active[a]
            oy = p // out_w
            ox = p - oy * out_w
            m += k * cout
            _scatter_nz(acc, oy, ox, w4, 0, 0, rows, a, nz, k)
        macs += m
    return n_t, macs


@njit_mac
def _pointwise_pix(active, n_active, rows, w, acc, touched, prod):
    """Pixel-wise delta pointwise / Dense (serial): ``prod = rows[:n] @ w``, scatter-add.

    ``prod``: (>= n_active, Cout) float32 scratch. Returns ``(n_touched, macs)``.
    """
    cin, cout = w.shape
    out_w = acc.shape[1]
    n_t = _copy_touched(active, n_active, touched)
    if n_active == 0:
        return n_t, 0
    _matmul(rows[:n_active], w, prod[:n_active])
    _add_rows(acc, out_w, active, prod, 0, n_active)
    return n_t, n_active * cin * cout


@njit_par
def _pointwise_pix_par(active, n_active, rows, w, acc, touched, prod):
    """Pixel-wise delta pointwise / Dense, active pixels split among threads (each thread
    multiplies and scatters its own rows). See :func:`_pointwise_pix`.
    """
    cin, cout = w.shape
    out_w = acc.shape[1]
    n_t = _copy_touched(active, n_active, touched)
    if n_active == 0:
        return n_t, 0
    nb = _n_blocks(n_active, 8)
    for b in prange(nb):
        a0, a1 = _block(b, nb, n_active, 8)
        if a1 > a0:
            _matmul(rows[a0:a1], w, prod[a0:a1])
            _add_rows(acc, out_w, active, prod, a0, a1)
    return n_t, n_active * cin * cout


def pointwise_delta(
    active, n_active, rows, weights, acc, touched, *, granularity="element", parallel=False, nzbuf=None, prod=None
):
    """Accumulate a pointwise (1x1, stride 1) convolution of one sparse delta into ``acc``.

    ``acc[p] += rows[a] @ weights`` for every active pixel ``p = active[a]``. Also the
    Dense layer: a vector is a ``(1, 1, C)`` frame (see :func:`dense_delta`).

    Parameters
    ----------
    active : ndarray of int32, shape (>= n_active,)
        Flat indices of the active pixels (distinct, ascending).
    n_active : int
    rows : ndarray of float32, shape (>= n_active, Cin)
    weights : ndarray of float32, shape (Cin, Cout)
        (A Keras 1x1 Conv2D kernel ``(1, 1, Cin, Cout)`` reshaped.)
    acc : ndarray of float32, shape (H, W, Cout), C-contiguous
        Same H, W as the input; updated in place.
    touched : ndarray of int32, shape (H*W,)
        Output: ``touched[:n_active] = active[:n_active]``.
    granularity : {"element", "pixel", "patch"}
        ``"patch"`` is ``"pixel"``: a 1x1 patch is the pixel.
    parallel : bool
    nzbuf : ndarray of int32, shape (B, Cin), optional
        Element-wise scratch (see :func:`nz_scratch`). Allocated if None.
    prod : ndarray of float32, shape (>= n_active, Cout), optional
        Pixel-wise scratch. Allocated if None.

    Returns
    -------
    n_touched : int
        ``n_active``.
    macs : int
        Multiply-adds executed.

    Raises
    ------
    ValueError
        On a wrong dtype, shape or layout, or bad ``active`` entries.
    """
    _check_granularity(granularity)
    _check_array("weights", weights, np.float32, ndim=2)
    cin, cout = weights.shape
    _check_array("acc", acc, np.float32, ndim=3, writeable=True)
    h, w, acc_c = acc.shape
    if acc_c != cout:
        raise ValueError(f"acc must have {cout} channels (the weights' Cout), got shape {acc.shape}")
    n = _check_sparse_input(active, n_active, rows, h * w, cin)
    _check_touched(touched, h * w)
    if granularity == "element":
        nzbuf = nz_scratch(cin, parallel) if nzbuf is None else _scratch("nzbuf", nzbuf, 1, cin, np.int32)
        kern = _pointwise_elem_par if parallel else _pointwise_elem
        n_t, macs = kern(active, n, rows, weights, acc, touched, nzbuf)
    else:
        prod = _scratch("prod", prod, n, cout, np.float32)
        kern = _pointwise_pix_par if parallel else _pointwise_pix
        n_t, macs = kern(active, n, rows, weights, acc, touched, prod)
    return int(n_t), int(macs)


def dense_delta(
    active, n_active, rows, weights, acc, touched, *, granularity="element", parallel=False, nzbuf=None, prod=None
):
    """Accumulate a Dense layer's response to one sparse delta vector into ``acc``.

    The input vector is a ``(1, 1, Cin)`` frame: ``active`` int32 ``(1,)``, ``n_active``
    0 or 1, ``rows`` ``(1, Cin)``; ``acc`` is ``(1, 1, Cout)``, ``touched`` int32 ``(1,)``.
    Same as :func:`pointwise_delta` (see there for the parameters and return values).

    Returns
    -------
    n_touched : int
    macs : int

    Raises
    ------
    ValueError
        If ``acc`` is not ``(1, 1, Cout)``, or as :func:`pointwise_delta`.
    """
    if isinstance(acc, np.ndarray) and acc.shape[:2] != (1, 1):
        raise ValueError(f"dense_delta needs acc of shape (1, 1, Cout), got {acc.shape}")
    return pointwise_delta(
        active, n_active, rows, weights, acc, touched, granularity=granularity, parallel=parallel, nzbuf=nzbuf, prod=prod
    )
