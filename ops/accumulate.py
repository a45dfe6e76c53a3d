"""The inner loops of the delta MAC kernels: scatter a delta row into ``acc``, or multiply a block.

Hot loops index arrays directly with zero-based loop counters instead of taking views
(``acc[oy, ox]``): in numba a view costs two atomic reference-count updates, and a loop
counter that may be negative (``range(c0, c1)`` with a run-time ``c0``) keeps numba's
negative-index wraparound code, which blocks vectorization.
"""

from __future__ import annotations

import numpy as np

from ops.config import USE_BLAS, njit_exact, njit_mac


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
