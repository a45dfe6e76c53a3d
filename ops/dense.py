"""Dense (non-delta) MAC kernels: the runtime's dense mode and its periodic keyframe refresh.

Conv2D is an im2col gather followed by one BLAS ``sgemm`` (``ops.accumulate._matmul``: numba's
``np.dot``), the usual way an optimized CPU runtime does it; depthwise is a direct loop.

:func:`_conv_dense_par` splits the output pixels into row blocks, one per thread: each block
gathers its own im2col rows and runs its own single-threaded sgemm (BLAS stays at one thread
inside numba's workers, ``DeltaEngine(threads=)``). Every output element is the same sum of
the same products as in the serial kernel (no block cuts K), but BLAS may block a shorter
matrix differently: the two agree to float32 rounding (measured: ~1e-6 relative; tests/test_fallback.py).
"""

from __future__ import annotations

from ops.accumulate import _matmul
from ops.config import njit_exact, njit_mac, njit_par, prange


@njit_exact
def _im2col(x, kh, kw, stride, pad_top, pad_left, out_h, out_w, col):
    """``col[(oy*out_w+ox), (ky*kw+kx)*C + c] = x[oy*s+ky-pt, ox*s+kx-pl, c]`` (0 outside)."""
    _im2col_rows(x, kh, kw, stride, pad_top, pad_left, out_w, 0, out_h, col)


@njit_exact
def _im2col_rows(x, kh, kw, stride, pad_top, pad_left, out_w, oy0, oy1, col):
    """:func:`_im2col` for the output rows ``oy0 <= oy < oy1`` only."""
    in_h, in_w, c = x.shape
    for oy in range(oy0, oy1):
        for ox in range(out_w):
            r = oy * out_w + ox
            for ky in range(kh):
                iy = oy * stride + ky - pad_top
                for kx in range(kw):
                    ix = ox * stride + kx - pad_left
                    base = (ky * kw + kx) * c
                    if iy < 0 or iy >= in_h or ix < 0 or ix >= in_w:
                        for k in range(c):
                            col[r, base + k] = 0.0
                    else:
                        for k in range(c):
                            col[r, base + k] = x[iy, ix, k]


@njit_mac
def _depthwise_dense(x, w, stride, pad_top, pad_left, out):
    """Dense DepthwiseConv2D of one HWC frame into ``out`` (Ho, Wo, C*M), no bias.

    Each output pixel takes one pass over its channels per tap in range, the channel loop
    innermost (contiguous in ``x``, ``w`` and ``out``: it vectorizes); each output sums its
    taps in row-major order and gets its bias afterwards (``_conv_dense``, no fastmath).
    A multiplier ``M > 1`` (rare) spreads each input channel over ``M`` outputs."""
    _depthwise_dense_rows(x, w, stride, pad_top, pad_left, out, 0, out.shape[0])


@njit_mac
def _depthwise_dense_rows(x, w, stride, pad_top, pad_left, out, oy0, oy1):
    """:func:`_depthwise_dense` for the output rows ``oy0 <= oy < oy1`` only."""
    in_h, in_w, c = x.shape
    kh, kw, _, m = w.shape
    out_h, out_w, cm = out.shape
    w2 = w.reshape((kh, kw, cm))
    three = kh == 3 and kw == 3 and m == 1
    for oy in range(oy0, oy1):
        iy0 = oy * stride - pad_top
        rows_inside = iy0 >= 0 and iy0 + 3 <= in_h
        for ox in range(out_w):
            ix0 = ox * stride - pad_left
            if three and rows_inside and ix0 >= 0 and ix0 + 3 <= in_w:
                # the common case (3x3, all taps inside): the nine taps of a channel summed in a
                # register in row-major order, one store; the loop over channels vectorizes
                for k in range(c):
                    v = x[iy0, ix0, k] * w2[0, 0, k]
                    v += x[iy0, ix0 + 1, k] * w2[0, 1, k]
                    v += x[iy0, ix0 + 2, k] * w2[0, 2, k]
                    v += x[iy0 + 1, ix0, k] * w2[1, 0, k]
                    v += x[iy0 + 1, ix0 + 1, k] * w2[1, 1, k]
                    v += x[iy0 + 1, ix0 + 2, k] * w2[1, 2, k]
                    v += x[iy0 + 2, ix0, k] * w2[2, 0, k]
                    v += x[iy0 + 2, ix0 + 1, k] * w2[2, 1, k]
                    v += x[iy0 + 2, ix0 + 2, k] * w2[2, 2, k]
                    out[oy, ox, k] = v
                continue
            for k in range(cm):
                out[oy, ox, k] = 0.0
            for ky in range(kh):
                iy = oy * stride + ky - pad_top
                if iy < 0 or iy >= in_h:
                    continue
                for kx in range(kw):
                    ix = ox * stride + kx - pad_left
                    if ix < 0 or ix >= in_w:
                        continue
                    if m == 1:
                        for k in range(c):
                            out[oy, ox, k] += x[iy, ix, k] * w2[ky, kx, k]
                    else:
                        for ci in range(c):
                            v = x[iy, ix, ci]
                            for j in range(m):
                                out[oy, ox, ci * m + j] += v * w2[ky, kx, ci * m + j]


@njit_exact
def _conv_dense(x, w, stride, pad_top, pad_left, bias, acc, col, depthwise, pointwise):
    """``acc = conv(x) + bias`` of one whole HWC frame (``w``: ``(kh, kw, Cin, Cout)``, depthwise
    ``(kh, kw, C, M)``). ``pointwise``: a 1x1 stride-1 Conv2D (one sgemm, no im2col); ``col``:
    im2col scratch of at least ``Ho*Wo*kh*kw*Cin`` floats (other Conv2Ds)."""
    oh, ow, oc = acc.shape
    kh, kw, cin, cout = w.shape
    acc2 = acc.reshape((oh * ow, oc))
    if depthwise:
        _depthwise_dense(x, w, stride, pad_top, pad_left, acc)
    elif pointwise:
        _matmul(x.reshape((oh * ow, cin)), w.reshape((cin, cout)), acc2)
    else:
        cols = col[: oh * ow * kh * kw * cin].reshape((oh * ow, kh * kw * cin))
        _im2col(x, kh, kw, stride, pad_top, pad_left, oh, ow, cols)
        _matmul(cols, w.reshape((kh * kw * cin, cout)), acc2)
    for p in range(oh * ow):
        for k in range(oc):
            acc2[p, k] += bias[k]


@njit_par
def _conv_dense_par(x, w, stride, pad_top, pad_left, bias, acc, col, depthwise, pointwise, blocks):
    """:func:`_conv_dense` with the output rows split into ``blocks`` row blocks run in parallel
    (each its own im2col rows, sgemm and bias); the serial kernel's values up to float32 rounding."""
    oh, ow, oc = acc.shape
    kh, kw, cin, cout = w.shape
    acc2 = acc.reshape((oh * ow, oc))
    nb = min(blocks, oh)
    rows = 0 if depthwise or pointwise else oh * ow  # only a Conv2D has (and needs) im2col scratch
    cols = col[: rows * kh * kw * cin].reshape((rows, kh * kw * cin))
    for b in prange(nb):
        y0 = b * oh // nb
        y1 = (b + 1) * oh // nb
        r0, r1 = y0 * ow, y1 * ow
        if depthwise:
            _depthwise_dense_rows(x, w, stride, pad_top, pad_left, acc, y0, y1)
        elif pointwise:
            _matmul(x.reshape((oh * ow, cin))[r0:r1], w.reshape((cin, cout)), acc2[r0:r1])
        else:
            _im2col_rows(x, kh, kw, stride, pad_top, pad_left, ow, y0, y1, cols)
            _matmul(cols[r0:r1], w.reshape((kh * kw * cin, cout)), acc2[r0:r1])
        for p in range(r0, r1):
            for k in range(oc):
                acc2[p, k] += bias[k]
