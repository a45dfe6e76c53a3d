"""Delta MAC kernels for Conv2D and pointwise (1x1) / Dense layers.

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

Parallel variants (``*_par``, numba ``prange``) have no write races:

* Conv2D element-wise: the output rows are split among threads (blocks with about the
  same number of active pixels); a thread processes the active pixels that reach its
  rows, through the taps that land in them. One parallel region per call.
* Conv2D pixel-wise: a fixed tap maps distinct pixels to distinct outputs, so per tap
  the gathered pixels are split among threads, each doing its own ``sgemm`` and
  scatter. One parallel region per tap.
* pointwise / Dense: the active pixels are split among threads (a single pixel, i.e.
  Dense, splits the output channels instead).

With several threads, keep BLAS single-threaded (``OPENBLAS_NUM_THREADS=1``): OpenBLAS
worker threads and numba's compete for the same cores and stall for milliseconds.
"""

from __future__ import annotations

import numpy as np

from ops.config import CHANNEL_BLOCK, PAR_BLOCKS, USE_BLAS, njit_exact, njit_mac, njit_par, prange
from ops.encode import _check_array, _check_count, _check_pixel_list

__all__ = [
    "nz_scratch",
    "conv2d_delta",
    "pointwise_delta",
    "dense_delta",
]


# --------------------------------------------------------------------------------------
# shared helpers (also used by ops.depthwise)
# --------------------------------------------------------------------------------------


@njit_exact
def _n_blocks(n, align):
    """Number of parallel blocks (<= PAR_BLOCKS) for ``n`` items split in chunks of ``align``."""
    chunks = (n + align - 1) // align
    nb = PAR_BLOCKS
    if chunks < nb:
        nb = chunks
    if nb < 1:
        nb = 1
    return nb


@njit_exact
def _block(b, nb, n, align):
    """Bounds ``[lo, hi)`` of block ``b`` of ``nb`` over ``n`` items, aligned to ``align``."""
    chunks = (n + align - 1) // align
    lo = (b * chunks) // nb * align
    hi = ((b + 1) * chunks) // nb * align
    if hi > n:
        hi = n
    if lo > n:
        lo = n
    return lo, hi


@njit_exact
def _heapsort(a, n):
    """In-place ascending heapsort of ``a[:n]`` (no allocation)."""
    # heapify
    start = n // 2 - 1
    while start >= 0:
        root = start
        while True:
            child = 2 * root + 1
            if child >= n:
                break
            if child + 1 < n and a[child + 1] > a[child]:
                child += 1
            if a[root] < a[child]:
                t = a[root]
                a[root] = a[child]
                a[child] = t
                root = child
            else:
                break
        start -= 1
    end = n - 1
    while end > 0:
        t = a[0]
        a[0] = a[end]
        a[end] = t
        root = 0
        while True:
            child = 2 * root + 1
            if child >= end:
                break
            if child + 1 < end and a[child + 1] > a[child]:
                child += 1
            if a[root] < a[child]:
                t = a[root]
                a[root] = a[child]
                a[child] = t
                root = child
            else:
                break
        end -= 1


@njit_exact
def _finish_touched(touched, n_touched, mark, lo, hi):
    """Sort ``touched[:n_touched]`` ascending and clear their marks.

    ``lo``/``hi`` are the smallest/largest touched index. If the span is small compared
    with the count, the marks in ``[lo, hi]`` are scanned (which both sorts and clears);
    otherwise the list is checked for order, heap-sorted if needed, and its marks cleared.
    """
    if n_touched == 0:
        return
    if hi - lo + 1 <= 8 * n_touched:
        k = 0
        for o in range(lo, hi + 1):
            if mark[o] != 0:
                touched[k] = o
                k += 1
                mark[o] = 0
        return
    ordered = True
    for t in range(1, n_touched):
        if touched[t] < touched[t - 1]:
            ordered = False
            break
    if not ordered:
        _heapsort(touched, n_touched)
    for t in range(n_touched):
        mark[touched[t]] = 0


@njit_exact(inline="always")
def _taps(i, pad, k, stride, out_n):
    """Taps of one axis through which input coordinate ``i`` reaches the output.

    Returns ``(k0, o0, t_lo, t_hi)``: for ``t`` in ``range(t_lo, t_hi)``, tap
    ``k0 + t*stride`` feeds output ``o0 - t``, and these are exactly the taps with the
    output inside ``[0, out_n)`` (``o*stride + tap - pad == i``). One division per pixel
    and axis instead of one per tap (none for stride 1 or 2: ``r >= 0``, so a shift and a
    mask do; an integer division costs ~15 cycles, about as much as a tap's MACs).
    """
    r = i + pad
    if stride == 1:
        k0 = 0
        o0 = r
        nt = k
    elif stride == 2:
        k0 = r & 1
        o0 = r >> 1
        nt = (k - k0 + 1) >> 1
    else:
        k0 = r % stride
        o0 = r // stride
        nt = (k - k0 + stride - 1) // stride
    t_lo = o0 - out_n + 1
    if t_lo < 0:
        t_lo = 0
    t_hi = o0 + 1
    if t_hi > nt:
        t_hi = nt
    if t_hi < t_lo:
        t_hi = t_lo
    return k0, o0, t_lo, t_hi


@njit_exact
def _conv2d_touch(active, n_active, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, touched, mark):
    """List (ascending, deduplicated) the outputs reached by the active pixels.

    Returns ``(n_touched, n_pairs)``, ``n_pairs`` = number of (active pixel, tap) pairs
    that land inside the output. ``mark`` must be zero on entry and is zero on return.
    """
    n_t = 0
    n_pairs = 0
    lo = out_h * out_w
    hi = -1
    row0 = 0
    row1 = 0  # [row0, row1): the flat indices of the current input row (none yet)
    oy0 = ty_lo = ty_hi = 0
    for a in range(n_active):
        p = active[a]
        if p >= row1 or p < row0:
            # a new input row: one division and one row of y taps per row, not per pixel
            iy = p // in_w
            row0 = iy * in_w
            row1 = row0 + in_w
            ky0, oy0, ty_lo, ty_hi = _taps(iy, pad_top, kh, stride, out_h)
        ix = p - row0
        kx0, ox0, tx_lo, tx_hi = _taps(ix, pad_left, kw, stride, out_w)
        n_pairs += (ty_hi - ty_lo) * (tx_hi - tx_lo)
        for ty in range(ty_lo, ty_hi):
            base = (oy0 - ty) * out_w + ox0
            for tx in range(tx_lo, tx_hi):
                o = base - tx
                if mark[o] == 0:
                    mark[o] = 1
                    touched[n_t] = o
                    n_t += 1
                    if o < lo:
                        lo = o
                    if o > hi:
                        hi = o
    _finish_touched(touched, n_t, mark, lo, hi)
    return n_t, n_pairs


@njit_exact
def _lower_bound(a, n, value):
    """First index ``i`` in ``[0, n]`` with ``a[i] >= value`` (``a[:n]`` ascending)."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit_exact
def _split_row(active, n_active, b, nb, in_w, pad_top, stride, out_h):
    """Output row where parallel block ``b`` of ``nb`` starts (row split of the output).

    Blocks get about the same number of active pixels; non-decreasing in ``b``, 0 for
    ``b == 0`` and ``out_h`` for ``b == nb``. Needs ``active`` ascending.
    """
    if b <= 0:
        return 0
    if b >= nb:
        return out_h
    if n_active == 0:
        return (b * out_h) // nb
    p = active[(b * n_active) // nb]
    r = (p // in_w + pad_top) // stride
    if r > out_h:
        r = out_h
    return r


@njit_exact
def _row_span(active, n_active, in_w, r0, r1, kh, stride, pad_top):
    """Index range ``[a0, a1)`` of the active pixels whose input row can reach output rows
    ``[r0, r1)``: ``iy`` in ``[r0*stride - pad_top, (r1-1)*stride - pad_top + kh - 1]``."""
    if r1 <= r0:
        return 0, 0
    iy_lo = r0 * stride - pad_top
    if iy_lo < 0:
        iy_lo = 0
    iy_hi = (r1 - 1) * stride - pad_top + kh - 1
    if iy_hi < iy_lo:
        return 0, 0
    a0 = _lower_bound(active, n_active, iy_lo * in_w)
    a1 = _lower_bound(active, n_active, (iy_hi + 1) * in_w)
    return a0, a1


@njit_exact
def _gather_tap(active, n_active, rows, in_w, ky, kx, stride, pad_top, pad_left, out_h, out_w, gather, target):
    """Collect the active pixels that tap (ky, kx) maps inside the output.

    Writes the flat output index of the ``k``-th such pixel to ``target[k]`` and, unless
    every active pixel qualifies, copies its row to ``gather[k]``. Returns
    ``(n_in, all_in)``: with ``all_in`` the block is ``rows[:n_in]`` itself.
    """
    cin = rows.shape[1]
    n_in = 0
    all_in = True
    row0 = 0
    row1 = 0  # the current input row's flat indices: one division per row (see _conv2d_touch)
    iy = 0
    for a in range(n_active):
        p = active[a]
        if p >= row1 or p < row0:
            iy = p // in_w
            row0 = iy * in_w
            row1 = row0 + in_w
        ix = p - row0
        ty = iy + pad_top - ky
        tx = ix + pad_left - kx
        if ty < 0 or tx < 0:
            ok = False
        elif stride == 1:
            ok = ty < out_h and tx < out_w
        else:
            ok = ty % stride == 0 and tx % stride == 0 and ty // stride < out_h and tx // stride < out_w
        if ok:
            if stride == 1:
                target[n_in] = ty * out_w + tx
            else:
                target[n_in] = (ty // stride) * out_w + tx // stride
            if not all_in:
                for c in range(cin):
                    gather[n_in, c] = rows[a, c]
            n_in += 1
        elif all_in:
            # first pixel left out: the rows so far (a == n_in of them) move to gather
            all_in = False
            for k in range(n_in):
                for c in range(cin):
                    gather[k, c] = rows[k, c]
    return n_in, all_in


@njit_mac(inline="always")
def _add_rows(acc, out_w, target, prod, p0, p1):
    """``acc[target[k]] += prod[k]`` for ``k`` in ``[p0, p1)`` (flat output indices)."""
    cout = prod.shape[1]
    for k in range(p0, p1):
        o = target[k]
        oy = o // out_w
        ox = o - oy * out_w
        for co in range(cout):
            acc[oy, ox, co] += prod[k, co]


# Hot loops below index arrays directly with zero-based loop counters instead of taking
# views (``acc[oy, ox]``): in numba a view costs two atomic reference-count updates,
# and a loop counter that may be negative (``range(c0, c1)`` with a run-time ``c0``)
# keeps numba's negative-index wraparound code, which blocks vectorization.


@njit_exact(inline="always")
def _compact_nz(rows, a, nz):
    """Write the indices of the non-zero entries of ``rows[a]`` to ``nz``; return their count.

    Branch-free (every index is written, the count only advances on non-zeros), so
    random zero patterns cost no branch mispredictions. ``nz``: int32 ``(>= Cin,)``.
    """
    k = 0
    for c in range(rows.shape[1]):
        nz[k] = c
        k += rows[a, c] != 0
    return k


@njit_exact(inline="always")
def _count_nz(rows, a):
    """Number of non-zero entries of ``rows[a]`` (a vectorized reduction)."""
    k = 0
    for c in range(rows.shape[1]):
        k += rows[a, c] != 0
    return k


@njit_mac(inline="always")
def _scatter_nz(acc, oy, ox, w, ky, kx, rows, a, nz, k):
    """``acc[oy, ox, :] += sum_j rows[a, nz[j]] * w[ky, kx, nz[j], :]`` for ``j < k``.

    ``w``: (kh, kw, Cin, Cout). Four input channels per pass over the ``acc`` row (a
    quarter of the ``acc`` loads and stores of one axpy per element).
    """
    cout = w.shape[3]
    j = 0
    while j + 4 <= k:
        i0 = nz[j]
        i1 = nz[j + 1]
        i2 = nz[j + 2]
        i3 = nz[j + 3]
        v0 = rows[a, i0]
        v1 = rows[a, i1]
        v2 = rows[a, i2]
        v3 = rows[a, i3]
        for co in range(cout):
            acc[oy, ox, co] += (v0 * w[ky, kx, i0, co] + v1 * w[ky, kx, i1, co]) + (
                v2 * w[ky, kx, i2, co] + v3 * w[ky, kx, i3, co]
            )
        j += 4
    while j < k:
        i0 = nz[j]
        v0 = rows[a, i0]
        for co in range(cout):
            acc[oy, ox, co] += v0 * w[ky, kx, i0, co]
        j += 1


@njit_mac
def _scatter_nz_channels(acc, oy, ox, w, rows, a, nz, k, c0, c1):
    """``acc[oy, ox, c0:c1] += sum_j rows[a, nz[j]] * w[nz[j], c0:c1]`` (``w``: (Cin, Cout)).

    The channel-range variant, only used to split a single pixel's (Dense) outputs among
    threads."""
    for j in range(k):
        i0 = nz[j]
        v0 = rows[a, i0]
        for co in range(c0, c1):
            acc[oy, ox, co] += v0 * w[i0, co]


@njit_mac
def _matmul_loop(a, b, out):
    """``out[...] = a @ b`` for small float32 matrices (hand loop, no BLAS)."""
    m, k = a.shape
    n = b.shape[1]
    zero = np.float32(0.0)
    for i in range(m):
        for j in range(n):
            out[i, j] = zero
        for p in range(k):
            v = a[i, p]
            for j in range(n):
                out[i, j] += v * b[p, j]


@njit_mac
def _matmul_blas(a, b, out):
    """``out[...] = a @ b`` through numba's ``np.dot`` (SciPy BLAS sgemm)."""
    np.dot(a, b, out)


_matmul = _matmul_blas if USE_BLAS else _matmul_loop


# --------------------------------------------------------------------------------------
# Conv2D kernels
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# pointwise (1x1, stride 1) and Dense kernels
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------

GRANULARITIES = ("element", "pixel")


def _check_granularity(granularity):
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be 'element' or 'pixel', got {granularity!r}")


def _check_sparse_input(active, n_active, rows, n_pixels, cin):
    _check_array("active", active, np.int32, ndim=1)
    _check_array("rows", rows, np.float32, ndim=2)
    if rows.shape[1] != cin:
        raise ValueError(f"rows must have {cin} columns (the weights' Cin), got shape {rows.shape}")
    n = _check_count("n_active", n_active, min(active.shape[0], rows.shape[0], n_pixels))
    _check_pixel_list("active", active, n, n_pixels)
    return n


def _check_int(name, v, lo):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _check_touched(touched, n_out):
    _check_array("touched", touched, np.int32, shape=(n_out,), writeable=True)


def _check_mark(mark, n_out):
    if mark is None:
        raise ValueError(f"mark must be a zero-filled uint8 buffer of shape ({n_out},), got None")
    _check_array("mark", mark, np.uint8, shape=(n_out,), writeable=True)
    if mark.any():
        raise ValueError(f"mark must be all zero on entry (it has {int(np.count_nonzero(mark))} non-zero entries)")


def _check_geometry(in_h, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w):
    """Validate explicit padding and the output size against the input."""
    if pad_top >= kh or pad_left >= kw:
        raise ValueError(f"padding must be smaller than the kernel, got pad {(pad_top, pad_left)} kernel {(kh, kw)}")
    # every output window must overlap the input: (Ho-1)*stride - pad_top <= in_h - 1
    max_h = (in_h - 1 + pad_top) // stride + 1
    max_w = (in_w - 1 + pad_left) // stride + 1
    if out_h < 1 or out_w < 1 or out_h > max_h or out_w > max_w:
        raise ValueError(
            f"acc spatial shape {(out_h, out_w)} does not fit input {(in_h, in_w)}, kernel {(kh, kw)}, "
            f"stride {stride}, pad {(pad_top, pad_left)} (at most {(max_h, max_w)})"
        )


def _scratch(name, buf, n, cols, dtype):
    """Validate a scratch buffer ``(>= n, cols)``, or allocate one if ``buf`` is None."""
    if buf is None:
        return np.zeros((max(n, 1), cols), dtype)
    _check_array(name, buf, dtype, ndim=2, writeable=True)
    if buf.shape[0] < max(n, 1) or buf.shape[1] != cols:
        raise ValueError(f"{name} must have shape (>= {max(n, 1)}, {cols}), got {buf.shape}")
    return buf


def nz_scratch(cin: int, parallel: bool = False):
    """Allocate the ``nzbuf`` scratch of the element-wise kernels.

    Parameters
    ----------
    cin : int
        Input channels.
    parallel : bool
        If True, one row per parallel block (``ops.config.PAR_BLOCKS``), else one row.

    Returns
    -------
    ndarray of int32, shape (PAR_BLOCKS or 1, cin)
    """
    return np.zeros((PAR_BLOCKS if parallel else 1, cin), np.int32)


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
    granularity : {"element", "pixel"}
        Element-wise scatter of weight rows, or per-tap dense products.
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
    else:
        gather = _scratch("gather", gather, n, cin, np.float32)
        prod = _scratch("prod", prod, n, cout, np.float32)
        kern = _conv2d_pix_par if parallel else _conv2d_pix
        n_t, macs = kern(active, n, rows, in_w, weights, stride, pad_top, pad_left, acc, touched, mark, gather, prod)
    return int(n_t), int(macs)


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
    granularity : {"element", "pixel"}
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
