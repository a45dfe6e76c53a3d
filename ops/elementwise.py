"""Per-pixel kernels of the delta runtime: the work between MAC layers, done only where inputs changed.

Every kernel takes a list of flat pixel indices (``pixels[:n]``, the pixels whose input
may have changed this frame) and updates only those pixels of its output. Values are
computed with the same float32 operations as the Keras layers (so ReLU, Add, affine
rescaling are bit-identical to TensorFlow's), which is why these use ``njit_exact``.

Activation codes (:data:`ACTIVATIONS`) are shared with the converter.
"""

from __future__ import annotations

import math

import numpy as np

from ops.config import njit_exact

#: name -> code of the element-wise activations the runtime knows.
ACTIVATIONS = {
    "linear": 0,
    "relu": 1,  # general Keras ReLU: negative_slope, max_value, threshold
    "sigmoid": 2,
    "tanh": 3,
    "swish": 4,
    "hard_sigmoid": 5,
    "hard_swish": 6,
    "elu": 7,
    "softplus": 8,
    "softmax": 9,  # over the channels of each pixel
    "gelu": 10,  # tanh approximation is not used by Keras' default; exact erf form
}


@njit_exact(inline="always")
def _act(v, code, a0, a1, a2):
    if code == 0:
        return v
    if code == 1:  # Keras ReLU(negative_slope=a0, max_value=a1 (<0: none), threshold=a2)
        if v >= a2:
            out = v
        else:
            out = np.float32(a0) * (v - np.float32(a2)) if a0 != 0.0 else np.float32(0.0)
        if a1 >= 0.0 and out > a1:
            out = np.float32(a1)
        return out
    if code == 2:
        return np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(-v)))
    if code == 3:
        return np.float32(math.tanh(v))
    if code == 4:
        return v / (np.float32(1.0) + np.float32(math.exp(-v)))
    if code == 5:  # Keras 3 hard_sigmoid: relu6(x + 3) / 6
        return min(max(v + np.float32(3.0), np.float32(0.0)), np.float32(6.0)) / np.float32(6.0)
    if code == 6:
        return v * (min(max(v + np.float32(3.0), np.float32(0.0)), np.float32(6.0)) / np.float32(6.0))
    if code == 7:
        return v if v > 0 else np.float32(a0) * np.float32(math.expm1(v))
    if code == 8:
        return np.float32(math.log1p(math.exp(-abs(v))) + max(v, 0.0))
    if code == 10:
        return np.float32(0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))
    return v


@njit_exact(inline="always")
def _relu(v, a0, a1, a2, s, t, mx, leaky, clamp):
    """Keras ReLU of one float32 ``v``, exactly as :func:`_act` code 1 computes it.

    ``s, t, mx`` are ``a0, a2, a1`` as float32 and ``leaky = a0 != 0``, ``clamp = a1 >= 0``,
    hoisted by the caller. The comparisons stay against the float64 ``a2``/``a1`` like
    :func:`_act`'s, so a threshold that is not a float32 value gives the same result.
    """
    if v >= a2:
        out = v
    elif leaky:
        out = s * (v - t)
    else:
        out = np.float32(0.0)
    if clamp and out > a1:
        out = mx
    return out


@njit_exact
def _relu_pixels(src, dst, a0, a1, a2, pixels, n):
    """``dst[p] = relu(src[p])`` (Keras ReLU, code 1 of :data:`ACTIVATIONS`) for the listed pixels.

    Same values as ``_act(v, 1, a0, a1, a2)``, but with the activation code and the
    parameter tests hoisted out of the loop so that the per-channel loop vectorizes:
    ~20x faster than the generic loop (2 ns -> 0.1 ns per element, C = 16..144).
    """
    c = src.shape[1]
    s = np.float32(a0)
    t = np.float32(a2)
    mx = np.float32(a1)
    leaky = a0 != 0.0
    clamp = a1 >= 0.0
    for i in range(n):
        p = pixels[i]
        for k in range(c):
            dst[p, k] = _relu(src[p, k], a0, a1, a2, s, t, mx, leaky, clamp)


@njit_exact
def _activation_pixels(src, dst, code, a0, a1, a2, pixels, n):
    """``dst[p] = f(src[p])`` for the listed pixels; src, dst (H*W, C) views."""
    c = src.shape[1]
    if code == 1:  # the common case gets a vectorizable loop of its own
        _relu_pixels(src, dst, a0, a1, a2, pixels, n)
        return
    if code == 0:
        for i in range(n):
            p = pixels[i]
            for k in range(c):
                dst[p, k] = src[p, k]
        return
    for i in range(n):
        p = pixels[i]
        if code == 9:  # softmax over channels
            m = src[p, 0]
            for k in range(1, c):
                m = max(m, src[p, k])
            s = np.float32(0.0)
            for k in range(c):
                e = np.float32(math.exp(src[p, k] - m))
                dst[p, k] = e
                s += e
            for k in range(c):
                dst[p, k] = dst[p, k] / s
        else:
            for k in range(c):
                dst[p, k] = _act(src[p, k], code, a0, a1, a2)


@njit_exact
def _affine_pixels(src, dst, scale, offset, pixels, n):
    """``dst[p] = src[p] * scale + offset`` (per-channel scale/offset) for the listed pixels."""
    c = src.shape[1]
    for i in range(n):
        p = pixels[i]
        for k in range(c):
            dst[p, k] = src[p, k] * scale[k] + offset[k]


@njit_exact
def _frame_to_float_changed(frame, prev, dst, scale, offset, pixels, force):
    """uint8 frame (H*W, C) -> float ``dst = frame * scale + offset`` where the frame changed.

    Lists the pixels whose uint8 value differs from ``prev`` (all of them when ``force``),
    updates ``prev`` and ``dst`` there; returns the count.

    Per run of 64 pixels, an OR of ``frame ^ prev`` (8 bytes at a time) first skips runs that did not change
    (a static camera, a frozen frame: the whole frame costs ~1 us instead of ~20 us). In a
    changed run, two branch-free passes: list the changed pixels (always store the index,
    advance the count only if changed), then convert the listed ones. On video about half the
    pixels change at random, so a per-pixel "changed?" branch mispredicts half the time; this
    is 2.5x faster (55 -> 22 us at 112x112x3). RGB (C = 3) gets unrolled loops.
    """
    c = frame.shape[1]
    n_pix = frame.shape[0]
    # the skip test compares 8 bytes at a time (a run of 64 pixels is 8*c bytes); the bytes
    # past the last whole word are compared one by one
    n_words = n_pix * c // 8
    words = frame.reshape(n_pix * c)[: n_words * 8].view(np.uint64)
    words_prev = prev.reshape(n_pix * c)[: n_words * 8].view(np.uint64)
    flat = frame.reshape(n_pix * c)
    flat_prev = prev.reshape(n_pix * c)
    n = 0
    run = 64  # pixels per skip test
    for p0 in range(0, n_pix, run):
        p1 = min(p0 + run, n_pix)
        if not force:
            diff = np.uint64(0)
            for i in range(p0 * c // 8, min(p1 * c // 8, n_words)):
                diff |= words[i] ^ words_prev[i]
            for i in range(max(p0 * c, n_words * 8), p1 * c):
                diff |= np.uint64(flat[i] != flat_prev[i])
            if diff == 0:
                continue
        if c == 3:
            for p in range(p0, p1):
                changed = force | (frame[p, 0] != prev[p, 0]) | (frame[p, 1] != prev[p, 1]) | (frame[p, 2] != prev[p, 2])
                pixels[n] = p
                n += changed
        else:
            for p in range(p0, p1):
                changed = force
                for k in range(c):
                    changed |= frame[p, k] != prev[p, k]
                pixels[n] = p
                n += changed
    if c == 3:
        s0, s1, s2 = scale[0], scale[1], scale[2]
        o0, o1, o2 = offset[0], offset[1], offset[2]
        for i in range(n):
            p = pixels[i]
            prev[p, 0] = frame[p, 0]
            prev[p, 1] = frame[p, 1]
            prev[p, 2] = frame[p, 2]
            dst[p, 0] = np.float32(frame[p, 0]) * s0 + o0
            dst[p, 1] = np.float32(frame[p, 1]) * s1 + o1
            dst[p, 2] = np.float32(frame[p, 2]) * s2 + o2
        return n
    for i in range(n):
        p = pixels[i]
        for k in range(c):
            prev[p, k] = frame[p, k]
            dst[p, k] = np.float32(frame[p, k]) * scale[k] + offset[k]
    return n


@njit_exact
def _union(a, na, b, nb, out):
    """Merge two strictly ascending pixel lists into ``out`` (ascending, no duplicates).

    Ascending order matters: the MAC kernels require their active pixels sorted.
    Returns the count.
    """
    i = 0
    j = 0
    n = 0
    while i < na and j < nb:
        if a[i] < b[j]:
            out[n] = a[i]
            i += 1
        elif b[j] < a[i]:
            out[n] = b[j]
            j += 1
        else:
            out[n] = a[i]
            i += 1
            j += 1
        n += 1
    while i < na:
        out[n] = a[i]
        i += 1
        n += 1
    while j < nb:
        out[n] = b[j]
        j += 1
        n += 1
    return n


@njit_exact
def _copy_channels(src, dst, c0, pixels, n):
    """``dst[p, c0:c0+C] = src[p]`` (Concatenate along channels)."""
    c = src.shape[1]
    for i in range(n):
        p = pixels[i]
        for k in range(c):
            dst[p, c0 + k] = src[p, k]


@njit_exact
def _pad_pixels(src, dst, in_w, out_w, top, left, pixels, n, out_pixels):
    """ZeroPadding2D: copy the listed pixels to their padded position; returns the mapped list."""
    for i in range(n):
        p = pixels[i]
        y = p // in_w
        x = p - y * in_w
        q = (y + top) * out_w + (x + left)
        dst[q, :] = src[p, :]
        out_pixels[i] = q
    return n


@njit_exact
def _pool_touch(pixels, n, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, touched, mark):
    """Outputs of a pooling window that contain any listed input pixel (deduplicated)."""
    nt = 0
    for i in range(n):
        p = pixels[i]
        iy = p // in_w
        ix = p - iy * in_w
        for ky in range(kh):
            t = iy + pad_top - ky
            if t < 0 or t % stride != 0:
                continue
            oy = t // stride
            if oy >= out_h:
                continue
            for kx in range(kw):
                u = ix + pad_left - kx
                if u < 0 or u % stride != 0:
                    continue
                ox = u // stride
                if ox >= out_w:
                    continue
                q = oy * out_w + ox
                if mark[q] == 0:
                    mark[q] = 1
                    touched[nt] = q
                    nt += 1
    for i in range(nt):
        mark[touched[i]] = 0
    touched[:nt].sort()  # downstream MAC kernels need ascending pixel lists
    return nt


@njit_exact
def _pool_pixels(src, dst, in_h, in_w, kh, kw, stride, pad_top, pad_left, out_w, is_max, outputs, n):
    """Recompute average/max pooling at the listed output pixels (Keras: average ignores padding).

    Per output pixel the taps are visited in row-major order with the channels innermost
    (contiguous: the loop vectorizes), accumulating in the output row itself."""
    c = src.shape[1]
    start = np.float32(-np.inf) if is_max else np.float32(0.0)
    for i in range(n):
        q = outputs[i]
        oy = q // out_w
        ox = q - oy * out_w
        for k in range(c):
            dst[q, k] = start
        cnt = 0
        for ky in range(kh):
            iy = oy * stride + ky - pad_top
            if iy < 0 or iy >= in_h:
                continue
            for kx in range(kw):
                ix = ox * stride + kx - pad_left
                if ix < 0 or ix >= in_w:
                    continue
                p = iy * in_w + ix
                if is_max:
                    for k in range(c):
                        dst[q, k] = max(dst[q, k], src[p, k])
                else:
                    for k in range(c):
                        dst[q, k] += src[p, k]
                cnt += 1
        if not is_max:
            for k in range(c):
                dst[q, k] = dst[q, k] / np.float32(cnt)


@njit_exact
def _global_pool(src, dst, is_max):
    """Global average/max pooling of (H*W, C) into dst (1, C)."""
    hw, c = src.shape
    for k in range(c):
        acc = np.float32(-np.inf) if is_max else np.float32(0.0)
        for p in range(hw):
            v = src[p, k]
            if is_max:
                acc = max(acc, v)
            else:
                acc += v
        dst[0, k] = acc if is_max else acc / np.float32(hw)


#: merge kinds of :func:`_merge_pixels` (Keras Add, Subtract, Multiply, Maximum, Minimum; Average is
#: Add followed by :func:`_scale_pixels`)
MERGES = {"add": 0, "subtract": 1, "multiply": 2, "maximum": 3, "minimum": 4}


@njit_exact
def _merge_pixels(kind, a, a_step, b, b_step, dst, pixels, n):
    """``dst[p] = a[p] (op) b[p]`` for the listed pixels, ``op`` one of :data:`MERGES`.

    ``a_step``/``b_step`` are 1 for a full ``(H*W, C)`` input and 0 for a ``(1, C)`` vector
    broadcast over every pixel (a squeeze-excite gate). One loop per kind, so each vectorizes;
    the float32 operation and operand order are Keras' (``output = op(output, inputs[i])``).
    """
    c = dst.shape[1]
    for i in range(n):
        p = pixels[i]
        pa = p * a_step
        pb = p * b_step
        if kind == 0:
            for k in range(c):
                dst[p, k] = a[pa, k] + b[pb, k]
        elif kind == 1:
            for k in range(c):
                dst[p, k] = a[pa, k] - b[pb, k]
        elif kind == 2:
            for k in range(c):
                dst[p, k] = a[pa, k] * b[pb, k]
        elif kind == 3:
            for k in range(c):
                dst[p, k] = max(a[pa, k], b[pb, k])
        else:
            for k in range(c):
                dst[p, k] = min(a[pa, k], b[pb, k])


@njit_exact
def _divide_pixels(dst, divisor, pixels, n):
    """``dst[p] /= divisor`` for the listed pixels (Keras Average: the sum divided by the input count)."""
    c = dst.shape[1]
    d = np.float32(divisor)
    for i in range(n):
        p = pixels[i]
        for k in range(c):
            dst[p, k] = dst[p, k] / d
