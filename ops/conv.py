"""Delta MAC kernels for Conv2D (and the buffer contract every delta MAC kernel shares).

Each kernel adds ``conv(delta_t)`` to a persistent pre-activation buffer ``acc``
(the layer's output before bias and activation, kept across frames), so that after
frame ``t`` ``acc == conv(y_t) + bias`` if it was initialised to ``bias``. Only the
outputs reachable from a non-zero delta are read or written.

Buffer contract
---------------
Input: a sparse delta in the format of :mod:`ops.encode` -- ``active`` int32 ``(>= n,)``
(flat pixel indices ``iy*in_w + ix``, distinct and **ascending**: the serial kernels
would accept any order, the parallel Conv2D/depthwise kernels split the work by output
rows with a binary search over ``active``), ``n_active``, ``rows`` float32
``(>= n, Cin)`` (row ``a`` = delta of pixel ``active[a]``). Entries past ``n_active``
are never read.

``acc`` : float32 ``(Ho, Wo, Cout)``, C-contiguous, updated in place.

``touched`` : int32 ``(Ho*Wo,)``
    Output: its first ``n_touched`` entries are the flat indices ``oy*Wo + ox`` of the
    outputs reached by at least one active pixel through a tap in range (whether or
    not the weights are zero), **strictly ascending**, so they can be fed directly to
    the ``candidates`` of the encoders' ``*_pixels`` variants. (The pixel-wise Conv2D
    kernels also use it as scratch while they run.)
``mark`` : uint8 ``(Ho*Wo,)``
    Dedup scratch. Must be all zero on entry; it is all zero again on return (only
    the touched entries are cleared, no full memset).
``nzbuf`` : int32 ``(B, Cin)`` -- element-wise kernels: per-block list of a pixel's
    non-zero channels. Serial kernels use row 0; parallel kernels use at most ``B``
    blocks (:func:`nz_scratch` allocates ``PAR_BLOCKS`` rows).
``gather`` : float32 ``(>= n_active, Cin)`` -- pixel-wise Conv2D only: the rows of the
    active pixels that a tap maps inside the output.
``prod`` : float32 ``(>= n_active, Cout)`` -- pixel-wise kernels only: the small dense
    product.

Each kernel returns ``(n_touched, macs)``: ``macs`` is the number of multiply-adds it
executed -- element-wise: ``sum over active pixels of nnz(pixel) * taps_in_range *
Cout``; pixel-wise: ``sum over taps of P_tap * Cin * Cout``.

Geometry: input pixel ``(iy, ix)`` feeds output ``(oy, ox)`` through tap ``(ky, kx)``
iff ``oy*stride + ky - pad_top == iy`` and ``ox*stride + kx - pad_left == ix``, with
``0 <= oy < Ho``, ``0 <= ox < Wo`` (Ho, Wo are ``acc``'s shape). :func:`ops.geometry.conv_geometry`
gives ``(Ho, Wo, pad_top, pad_left)`` for Keras' ``"same"``/``"valid"``.

Granularities
-------------
* element-wise (``_conv2d_elem``, ``_pointwise_elem``): per non-zero delta element
  ``v`` of channel ``c`` and tap: ``acc[o, :] += v * W[ky, kx, c, :]`` (four channels
  per pass over the ``acc`` row).
* pixel-wise (``_conv2d_pix``, ``_pointwise_pix``): per tap, the ``P`` active rows that
  the tap maps inside the output form a dense ``(P, Cin)`` block (``rows`` itself when
  all of them do, else gathered), multiplied by ``W[ky, kx]`` with ``np.dot`` (BLAS
  ``sgemm``; a hand loop when SciPy is missing) into ``prod``, then scatter-added.

* patch-wise (``_conv2d_patch``): output-centric. The outputs the active pixels reach
  (``touched``) get their ``kh*kw*Cin`` delta patch gathered (zeros for inactive pixels),
  one ``(n_touched, kh*kw*Cin) @ (kh*kw*Cin, Cout)`` ``sgemm``, scatter-added. It multiplies
  the zeros of a patch, but does one large product instead of ``kh*kw`` thin ones: the
  stem's three input channels make the others' per-tap work tiny. For a 1x1 kernel it is
  the pixel-wise kernel (``ops.pointwise``).

Parallel variants (``*_par``, numba ``prange``) have no write races:

* Conv2D element-wise: the output rows are split among threads (blocks with about the
  same number of active pixels); a thread processes the active pixels that reach its
  rows, through the taps that land in them. One parallel region per call.
* Conv2D pixel-wise: a fixed tap maps distinct pixels to distinct outputs, so per tap
  the gathered pixels are split among threads, each doing its own ``sgemm`` and
  scatter. One parallel region per tap.
* Conv2D patch-wise: the touched outputs are split among threads (distinct outputs).
* pointwise / Dense: the active pixels are split among threads (a single pixel, i.e.
  Dense, splits the output channels instead).

With several threads, keep BLAS single-threaded (``OPENBLAS_NUM_THREADS=1``): OpenBLAS
worker threads and numba's compete for the same cores and stall for milliseconds.
"""

from __future__ import annotations

import numpy as np

from ops.accumulate import _add_rows, _compact_nz, _matmul, _scatter_nz
from ops.blocks import _block, _n_blocks, _row_span, _split_row, nz_scratch
from ops.checks import _check_array, _check_geometry, _check_granularity, _check_int, _check_mark, _check_sparse_input, _check_touched, _scratch
from ops.config import njit_mac, njit_par, prange
from ops.touch import _conv2d_touch, _gather_tap, _taps

__all__ = ["conv2d_delta"]


@njit_mac
def _conv2d_elem_range(active, rows, in_w, w, stride, pad_top, pad_left, acc, nz, a0, a1, r0, r1):
    """Element-wise accumulation of the active pixels ``a0 <= a < a1`` through the taps
    whose output row is in ``[r0, r1)``. ``nz``: int32 ``(>= Cin,)`` scratch. Returns the
    MACs done."""
    kh, kw, cin, cout = w.shape
    out_h, out_w, _ = acc.shape
    macs = 0
    row0 = 0
    row1 = 0  # the current input row's flat indices (see _conv2d_touch)
    ky0 = oy0 = ty_lo = ty_hi = 0
    for a in range(a0, a1):
        p = active[a]
        if p >= row1 or p < row0:
            iy = p // in_w
            row0 = iy * in_w
            row1 = row0 + in_w
            ky0, oy0, ty_lo, ty_hi = _taps(iy, pad_top, kh, stride, out_h)
            # keep the taps whose output row oy0 - ty is in [r0, r1)
            if ty_lo < oy0 - r1 + 1:
                ty_lo = oy0 - r1 + 1
            if ty_hi > oy0 - r0 + 1:
                ty_hi = oy0 - r0 + 1
        ix = p - row0
        kx0, ox0, tx_lo, tx_hi = _taps(ix, pad_left, kw, stride, out_w)
        if ty_hi <= ty_lo or tx_hi <= tx_lo:
            continue
        k = _compact_nz(rows, a, nz)
        macs += k * cout * (ty_hi - ty_lo) * (tx_hi - tx_lo)
        for ty in range(ty_lo, ty_hi):
            ky = ky0 + ty * stride
            oy = oy0 - ty
            for tx in range(tx_lo, tx_hi):
                _scatter_nz(acc, oy, ox0 - tx, w, ky, kx0 + tx * stride, rows, a, nz, k)
    return macs


@njit_mac
def _conv2d_elem(active, n_active, rows, in_w, w, stride, pad_top, pad_left, acc, touched, mark, nzbuf):
    """Element-wise delta Conv2D (serial). Returns ``(n_touched, macs)``.

    ``w``: (kh, kw, Cin, Cout) float32; ``acc``: (Ho, Wo, Cout) float32; ``nzbuf``: int32
    scratch ``(>= 1, Cin)`` (row 0 is used).
    """
    kh, kw, cin, cout = w.shape
    out_h, out_w, _ = acc.shape
    n_t, _pairs = _conv2d_touch(active, n_active, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, touched, mark)
    macs = _conv2d_elem_range(active, rows, in_w, w, stride, pad_top, pad_left, acc, nzbuf[0], 0, n_active, 0, out_h)
    return n_t, macs


@njit_par
def _conv2d_elem_par(active, n_active, rows, in_w, w, stride, pad_top, pad_left, acc, touched, mark, nzbuf):
    """Element-wise delta Conv2D, parallel: the output rows are split among threads
    (one block per row of ``nzbuf``, at most ``PAR_BLOCKS``; blocks get about the same
    number of active pixels). Needs ``active`` ascending. See :func:`_conv2d_elem`.
    """
    kh, kw, cin, cout = w.shape
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
        macs += _conv2d_elem_range(active, rows, in_w, w, stride, pad_top, pad_left, acc, nzbuf[b], a0, a1, r0, r1)
    return n_t, macs


@njit_mac
def _conv2d_pix(active, n_active, rows, in_w, w, stride, pad_top, pad_left, acc, touched, mark, gather, prod):
    """Pixel-wise delta Conv2D (serial): per tap, dense (P, Cin) @ (Cin, Cout), scatter-add.

    ``gather``: (>= n_active, Cin) and ``prod``: (>= n_active, Cout) float32 scratch.
    ``touched`` doubles as the per-tap list of target outputs before it receives the
    touched outputs at the end. Returns ``(n_touched, macs)``.
    """
    kh, kw, cin, cout = w.shape
    out_h, out_w, _ = acc.shape
    macs = 0
    for ky in range(kh):
        for kx in range(kw):
            n_in, all_in = _gather_tap(
                active, n_active, rows, in_w, ky, kx, stride, pad_top, pad_left, out_h, out_w, gather, touched
            )
            if n_in == 0:
                continue
            src = rows if all_in else gather
            _matmul(src[:n_in], w[ky, kx], prod[:n_in])
            macs += n_in * cin * cout
            _add_rows(acc, out_w, touched, prod, 0, n_in)
    n_t, _pairs = _conv2d_touch(active, n_active, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, touched, mark)
    return n_t, macs


@njit_par
def _conv2d_pix_par(active, n_active, rows, in_w, w, stride, pad_top, pad_left, acc, touched, mark, gather, prod):
    """Pixel-wise delta Conv2D, parallel: per tap, the gathered pixels are split among
    threads, each multiplying and scatter-adding its own rows (a fixed tap maps distinct
    pixels to distinct outputs, so there are no write races). See :func:`_conv2d_pix`.
    """
    kh, kw, cin, cout = w.shape
    out_h, out_w, _ = acc.shape
    macs = 0
    for ky in range(kh):
        for kx in range(kw):
            n_in, all_in = _gather_tap(
                active, n_active, rows, in_w, ky, kx, stride, pad_top, pad_left, out_h, out_w, gather, touched
            )
            if n_in == 0:
                continue
            src = rows if all_in else gather
            wt = w[ky, kx]
            macs += n_in * cin * cout
            nb = _n_blocks(n_in, 8)
            for b in prange(nb):
                p0, p1 = _block(b, nb, n_in, 8)
                if p1 > p0:
                    _matmul(src[p0:p1], wt, prod[p0:p1])
                    _add_rows(acc, out_w, touched, prod, p0, p1)
    n_t, _pairs = _conv2d_touch(active, n_active, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, touched, mark)
    return n_t, macs


@njit_mac
def _patch_block(rows, in_h, in_w, w2, kh, kw, stride, pad_top, pad_left, acc, touched, rowof, col, prod, p0, p1):
    """The touched outputs ``touched[p0:p1]``: each one's ``kh*kw*Cin`` delta patch gathered
    into ``col`` (``rowof[pixel]``: 1 + the pixel's row in ``rows``, 0 if inactive), one
    ``(p1-p0, kh*kw*Cin) @ (kh*kw*Cin, Cout)`` product into ``prod``, scatter-added into ``acc``.
    (Output-centric gather: measured faster in the engine than scattering each active pixel
    into its patches, which must zero ``col`` first.)"""
    cin = rows.shape[1]
    out_w = acc.shape[1]
    zero = np.float32(0.0)
    for t in range(p0, p1):
        o = touched[t]
        oy = o // out_w
        ox = o - oy * out_w
        for ky in range(kh):
            iy = oy * stride + ky - pad_top
            for kx in range(kw):
                ix = ox * stride + kx - pad_left
                base = (ky * kw + kx) * cin
                r = 0
                if iy >= 0 and iy < in_h and ix >= 0 and ix < in_w:
                    r = rowof[iy * in_w + ix]
                if r > 0:
                    for c in range(cin):
                        col[t, base + c] = rows[r - 1, c]
                else:
                    for c in range(cin):
                        col[t, base + c] = zero
    _matmul(col[p0:p1], w2, prod[p0:p1])
    _add_rows(acc, out_w, touched, prod, p0, p1)


@njit_mac
def _conv2d_patch_setup(active, n_active, in_w, w, stride, pad_top, pad_left, acc, touched, mark, rowof, colbuf, prodbuf):
    """The touched outputs (``touched``, ascending) and the active pixels' rows in ``rowof``;
    returns ``(n_touched, col, prod, w2)``: the ``(n_touched, kh*kw*Cin)`` / ``(n_touched, Cout)``
    views of the flat scratch and the weights as a ``(kh*kw*Cin, Cout)`` matrix."""
    kh, kw, cin, cout = w.shape
    out_h, out_w, _ = acc.shape
    n_t, _pairs = _conv2d_touch(active, n_active, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, touched, mark)
    for a in range(n_active):
        rowof[active[a]] = a + 1
    k = kh * kw * cin
    return n_t, colbuf[: n_t * k].reshape((n_t, k)), prodbuf[: n_t * cout].reshape((n_t, cout)), w.reshape((k, cout))


@njit_mac
def _conv2d_patch(active, n_active, rows, in_h, in_w, w, stride, pad_top, pad_left, acc, touched, mark, rowof, colbuf, prodbuf):
    """Patch-wise (output-centric) delta Conv2D, serial: the delta patches of the outputs the
    active pixels reach, im2col-style, in one ``sgemm``, scatter-added. It multiplies the
    zeros of a patch's inactive pixels too (``macs`` counts them) and pays off where the
    other kernels' per-tap work is small: few input channels. ``rowof``: int32
    ``(in_h*in_w,)``, all zero on entry and again on return; ``colbuf``, ``prodbuf``: flat
    float32 scratch of ``>= Ho*Wo*kh*kw*Cin`` and ``>= Ho*Wo*Cout``. Returns ``(n_touched, macs)``."""
    kh, kw, cin, cout = w.shape
    n_t, col, prod, w2 = _conv2d_patch_setup(active, n_active, in_w, w, stride, pad_top, pad_left, acc, touched, mark, rowof,
                                             colbuf, prodbuf)  # fmt: skip
    if n_t > 0:
        _patch_block(rows, in_h, in_w, w2, kh, kw, stride, pad_top, pad_left, acc, touched, rowof, col, prod, 0, n_t)
    for a in range(n_active):
        rowof[active[a]] = 0
    return n_t, n_t * kh * kw * cin * cout


@njit_par
def _conv2d_patch_par(active, n_active, rows, in_h, in_w, w, stride, pad_top, pad_left, acc, touched, mark, rowof, colbuf, prodbuf):
    """Patch-wise delta Conv2D, parallel: the touched outputs are split among threads, each
    gathering, multiplying and scatter-adding its own (distinct outputs: no write races).
    See :func:`_conv2d_patch`."""
    kh, kw, cin, cout = w.shape
    n_t, col, prod, w2 = _conv2d_patch_setup(active, n_active, in_w, w, stride, pad_top, pad_left, acc, touched, mark, rowof,
                                             colbuf, prodbuf)  # fmt: skip
    nb = _n_blocks(n_t, 8)
    for b in prange(nb):
        p0, p1 = _block(b, nb, n_t, 8)
        if p1 > p0:
            _patch_block(rows, in_h, in_w, w2, kh, kw, stride, pad_top, pad_left, acc, touched, rowof, col, prod, p0, p1)
    for a in range(n_active):
        rowof[active[a]] = 0
    return n_t, n_t * kh * kw * cin * cout


def conv2d_delta(
    active,
    n_active,
    rows,
    in_h,
    in_w,
    weights,
    stride,
    pad_top,
    pad_left,
    acc,
    touched,
    mark,
    *,
    granularity="element",
    parallel=False,
    nzbuf=None,
    gather=None,
    prod=None,
):
    """Accumulate the Conv2D of one sparse delta frame into ``acc``.

    ``acc += conv2d(delta)`` (cross-correlation, Keras semantics, no bias), touching
    only the outputs that the active pixels reach.

    Parameters
    ----------
    active : ndarray of int32, shape (>= n_active,)
        Flat indices ``iy*in_w + ix`` of the active input pixels (distinct, ascending).
    n_active : int
        Number of active pixels.
    rows : ndarray of float32, shape (>= n_active, Cin)
        Delta vectors of the active pixels (the encoder's ``rows`` buffer).
    in_h, in_w : int
        Input height and width.
    weights : ndarray of float32, shape (kh, kw, Cin, Cout)
        Keras layout.
    stride : int
        Stride (both axes), >= 1.
    pad_top, pad_left : int
        Leading padding (see :func:`conv_geometry`), ``0 <= pad < kernel``.
    acc : ndarray of float32, shape (Ho, Wo, Cout), C-contiguous
        Persistent pre-activation buffer, updated in place.
    touched : ndarray of int32, shape (Ho*Wo,)
        Output: first ``n_touched`` entries = strictly ascending flat indices of the
        outputs reached.
    mark : ndarray of uint8, shape (Ho*Wo,)
        Zero-filled scratch, zero again on return.
    granularity : {"element", "pixel", "patch"}
        Element-wise scatter of weight rows, per-tap dense products, or one dense product
        of the touched outputs' delta patches (im2col of the delta).
    parallel : bool
        Use the multi-threaded kernel (numba ``prange``; ``numba.set_num_threads``).
    nzbuf : ndarray of int32, shape (B, Cin), optional
        Element-wise scratch (B >= 1; the parallel kernel uses at most B blocks), see
        :func:`nz_scratch`. Allocated if None.
    gather : ndarray of float32, shape (>= n_active, Cin), optional
        Pixel-wise scratch. Allocated if None.
    prod : ndarray of float32, shape (>= n_active, Cout), optional
        Pixel-wise scratch. Allocated if None.

    Returns
    -------
    n_touched : int
        Number of valid entries in ``touched``.
    macs : int
        Multiply-adds executed.

    Raises
    ------
    ValueError
        On a wrong dtype, shape or layout, inconsistent sizes, out-of-range or
        unordered ``active`` entries, or a non-zero ``mark``.
    """
    _check_granularity(granularity)
    in_h = _check_int("in_h", in_h, 1)
    in_w = _check_int("in_w", in_w, 1)
    stride = _check_int("stride", stride, 1)
    pad_top = _check_int("pad_top", pad_top, 0)
    pad_left = _check_int("pad_left", pad_left, 0)
    _check_array("weights", weights, np.float32, ndim=4)
    kh, kw, cin, cout = weights.shape
    _check_array("acc", acc, np.float32, ndim=3, writeable=True)
    out_h, out_w, acc_c = acc.shape
    if acc_c != cout:
        raise ValueError(f"acc must have {cout} channels (the weights' Cout), got shape {acc.shape}")
    _check_geometry(in_h, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w)
    n = _check_sparse_input(active, n_active, rows, in_h * in_w, cin)
    _check_touched(touched, out_h * out_w)
    _check_mark(mark, out_h * out_w)
    if granularity == "element":
        nzbuf = nz_scratch(cin, parallel) if nzbuf is None else _scratch("nzbuf", nzbuf, 1, cin, np.int32)
        kern = _conv2d_elem_par if parallel else _conv2d_elem
        n_t, macs = kern(active, n, rows, in_w, weights, stride, pad_top, pad_left, acc, touched, mark, nzbuf)
    elif granularity == "pixel":
        gather = _scratch("gather", gather, n, cin, np.float32)
        prod = _scratch("prod", prod, n, cout, np.float32)
        kern = _conv2d_pix_par if parallel else _conv2d_pix
        n_t, macs = kern(active, n, rows, in_w, weights, stride, pad_top, pad_left, acc, touched, mark, gather, prod)
    else:  # patch: scratch for every output (the touched ones are not known before the kernel runs)
        rowof = np.zeros(in_h * in_w, np.int32)
        colbuf = np.empty(out_h * out_w * kh * kw * cin, np.float32)
        prodbuf = np.empty(out_h * out_w * cout, np.float32)
        kern = _conv2d_patch_par if parallel else _conv2d_patch
        n_t, macs = kern(active, n, rows, in_h, in_w, weights, stride, pad_top, pad_left, acc, touched, mark, rowof, colbuf, prodbuf)
    return int(n_t), int(macs)
