"""Dense (non-delta) MAC kernels: the runtime's dense mode and its periodic keyframe refresh.

Conv2D is an im2col gather (numba) followed by one BLAS ``sgemm`` (``numpy.matmul``), the
usual way an optimized CPU runtime does it; depthwise is a direct numba loop.
"""

from __future__ import annotations

import numpy as np

from ops.config import njit_exact, njit_mac


@njit_exact
def _im2col(x, kh, kw, stride, pad_top, pad_left, out_h, out_w, col):
    """``col[(oy*out_w+ox), (ky*kw+kx)*C + c] = x[oy*s+ky-pt, ox*s+kx-pl, c]`` (0 outside)."""
    in_h, in_w, c = x.shape
    for oy in range(out_h):
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


def conv2d_dense(x, w2d, kh, kw, stride, pad_top, pad_left, out, col):
    """Dense Conv2D of one HWC frame: ``out = conv(x) `` (no bias), via im2col + sgemm.

    ``w2d`` is the kernel reshaped to ``(kh*kw*Cin, Cout)``; ``col`` a scratch
    ``(Ho*Wo, kh*kw*Cin)`` (unused for a 1x1 stride-1 kernel); ``out`` ``(Ho, Wo, Cout)``.
    """
    out_h, out_w, cout = out.shape
    if kh == 1 and kw == 1 and stride == 1:
        np.matmul(x.reshape(-1, x.shape[2]), w2d, out=out.reshape(-1, cout))
        return
    _im2col(x, kh, kw, stride, pad_top, pad_left, out_h, out_w, col)
    np.matmul(col, w2d, out=out.reshape(-1, cout))


@njit_mac
def depthwise_dense(x, w, stride, pad_top, pad_left, out):
    """Dense DepthwiseConv2D of one HWC frame into ``out`` (Ho, Wo, C*M), no bias."""
    in_h, in_w, c = x.shape
    kh, kw, _, m = w.shape
    out_h, out_w, _ = out.shape
    for oy in range(out_h):
        for ox in range(out_w):
            for k in range(c * m):
                out[oy, ox, k] = 0.0
            for ky in range(kh):
                iy = oy * stride + ky - pad_top
                if iy < 0 or iy >= in_h:
                    continue
                for kx in range(kw):
                    ix = ox * stride + kx - pad_left
                    if ix < 0 or ix >= in_w:
                        continue
                    for ci in range(c):
                        v = x[iy, ix, ci]
                        for j in range(m):
                            out[oy, ox, ci * m + j] += v * w[ky, kx, ci, j]
