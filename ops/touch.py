"""Which outputs a sparse input reaches: the tap geometry of the delta MAC kernels.

Input pixel ``(iy, ix)`` feeds output ``(oy, ox)`` through tap ``(ky, kx)`` iff
``oy*stride + ky - pad_top == iy`` and ``ox*stride + kx - pad_left == ix``, with the output
inside ``[0, Ho) x [0, Wo)``. :func:`_taps` enumerates one axis of that with one division per
pixel (none for strides 1 and 2); :func:`_conv2d_touch` lists the reached outputs (ascending,
deduplicated through a zero-on-entry, zero-on-return ``mark`` buffer); :func:`_gather_tap`
collects the pixels one tap maps inside the output (the pixel-wise kernels).
"""

from __future__ import annotations

from ops.config import njit_exact


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
