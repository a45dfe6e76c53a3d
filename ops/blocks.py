"""How the parallel kernels split their work into blocks (one ``prange`` iteration each).

A kernel splits its work into at most :data:`ops.config.PAR_BLOCKS` blocks: Conv2D and
depthwise split the *output rows* (blocks with about the same number of active input pixels,
found by binary search over the ascending ``active`` list), pointwise/Dense split the active
pixels (a single pixel: the output channels). ``streaming.workers`` reuses these helpers to
report how evenly a frame's work was shared.
"""

from __future__ import annotations

import numpy as np

from ops.config import PAR_BLOCKS, njit_exact


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
