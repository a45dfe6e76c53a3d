"""The one frame interpreter: a lowered plan's step table run in a single compiled loop.

``streaming.lower`` turns an engine plan into integer tables and buffer arenas; :func:`run_frame`
executes one frame of them. Every kind of frame goes through this loop:

* **delta frames**: each step works only on the pixels listed as changed (``ops`` kernels);
* **dense frames** (``dense=True``: keyframes, the engine's dense mode): MAC steps recompute their
  output from their input's current value (im2col + BLAS, direct depthwise), every tensor lists
  all its pixels;
* **profiled frames** (``profile=True``): the same loop, reading a monotonic clock around each
  step (``ns[s]``); nothing else changes, so a profiled frame computes exactly what an
  unprofiled one does.

Region-weighted thresholds (``scaled``) and the per-layer kernel choice (``kernels``) are
per-frame parameters too. Python builds the tables and reads the results; it never runs a step.

Tables (all int64, built by ``streaming.lower``; field names below)
-------------------------------------------------------------------
``steps`` ``(S, NF)``: per step its opcode (``OP_*``), where its inputs are listed in
``inputs`` (``F_IN0``, ``F_NIN``), its output tensor (``F_OUT``) and op arguments ``A0..``.
``tensors`` ``(T, 5)``: value offset in ``fbuf`` (``T_VAL``), ``H, W, C``, and the offset of its
own changed-pixel buffer in ``ibuf`` (``T_PIX``). ``params`` ``(S, 3)`` float64: activation
parameters. ``scratch``: offsets of the buffers every step may reuse (``X_*``).

Arenas: ``wbuf`` float32 (weights, read only, shareable between engines), ``fbuf`` float32
(activations, encoder states and deltas, scratch), ``ibuf`` int32 (pixel lists), ``ubuf``
uint8 (previous input frame, dedup marks).

Per stream and frame: ``lst[t]``/``nlst[t]``: where tensor ``t``'s changed-pixel list is
(an offset in ``ibuf``) and how long; ``enc_nnz[s]``: an encoder's non-zero deltas this frame;
``nnz``/``macs`` per MAC layer; ``ns`` per step (profiled frames).
"""

from __future__ import annotations

import numpy as np

from ops.clock import now_ns
from ops.config import njit_exact
from ops.conv import _conv2d_elem, _conv2d_elem_par, _conv2d_patch, _conv2d_patch_par, _conv2d_pix, _conv2d_pix_par
from ops.dense import _conv_dense, _conv_dense_par
from ops.depthwise import _depthwise, _depthwise_par
from ops.elementwise import (
    _activation_pixels,
    _affine_pixels,
    _copy_channels,
    _divide_pixels,
    _frame_to_float_changed,
    _global_pool,
    _merge_pixels,
    _pad_pixels,
    _pool_pixels,
    _pool_touch,
    _union,
)
from ops.encode import _encode_quantize_rows, _encode_threshold_rows, _threshold_row
from ops.pointwise import _pointwise_elem, _pointwise_elem_par, _pointwise_pix, _pointwise_pix_par
from ops.region import _encode_threshold_rows_scaled
from ops.touch import _conv2d_touch

# opcodes
OP_INPUT, OP_ENCODE, OP_MAC, OP_ACTIVATION, OP_AFFINE, OP_MERGE, OP_CONCAT, OP_PAD, OP_POOL, OP_GLOBAL_POOL, OP_FLATTEN = range(11)
OP_NAMES = ("input", "encode", "mac", "activation", "affine", "merge", "concat", "pad", "pool", "global_pool", "flatten")

# step table: common fields, then op arguments
F_OP, F_IN0, F_NIN, F_OUT = range(4)
A0 = 4
NF = A0 + 14

# input:    A0 scale (wbuf), A0+1 offset (wbuf), A0+2 previous frame (ubuf)
# encode:   A0 kind (ENC_*), A0+1 param (wbuf), A0+2 delta rows (fbuf), A0+3 region scale (fbuf) or -1,
#           A0+4 1 if a refresh frame may swap its reference with its input's buffer (streaming.lower)
ENC_THRESHOLD, ENC_QUANTIZE, ENC_IDENTITY = range(3)
# mac:      A0 kind (MAC_*), A0+1 kernel (wbuf), A0+2 bias (wbuf), A0+3..A0+6 kh, kw, Cin, Cout
#           (depthwise: the multiplier M), A0+7 stride, A0+8 pad_top, A0+9 pad_left,
#           A0+10 the encoder step, A0+11 MAC layer index, A0+12 dense MACs, A0+13 input elements
MAC_CONV, MAC_POINTWISE, MAC_DEPTHWISE = range(3)
# per-frame kernel choice of a MAC layer (``kernels``): granularity + KERNEL_PARALLEL * parallel
# (+ KERNEL_DENSE_PARALLEL). Patch-wise applies to Conv2D; a pointwise layer runs it as pixel-wise.
KERNEL_ELEMENT, KERNEL_PIXEL, KERNEL_PATCH = range(3)
KERNEL_PARALLEL = 3
KERNEL_ELEMENT_PARALLEL, KERNEL_PIXEL_PARALLEL, KERNEL_PATCH_PARALLEL = range(3, 6)
# added to a layer's code: its dense kernel (keyframes, dense mode, the fallback) runs in parallel row blocks
KERNEL_DENSE_PARALLEL = 8
# activation: A0 code (ops.elementwise.ACTIVATIONS), params[s, :3]
# affine:   A0 scale (wbuf), A0+1 offset (wbuf)
# merge:    A0 kind (ops.elementwise.MERGES), A0+1 divide the result by the input count (Average)
# pad:      A0 top, A0+1 left
# pool:     A0 is_max, A0+1 kh, A0+2 kw, A0+3 stride, A0+4 pad_top, A0+5 pad_left
# global_pool: A0 is_max

# tensor table
T_VAL, T_H, T_W, T_C, T_PIX = range(5)
NT = 5

# shared scratch (offsets): iota (ibuf), union target (ibuf), dedup marks (ubuf), the
# element-wise kernels' non-zero lists (ibuf, X_NZ_ROWS rows), pixel-wise gather and product
# (fbuf), im2col columns (fbuf; also the patch-wise kernel's), the patch-wise kernel's map of
# an input pixel to 1 + its delta row (ibuf; zero between uses)
X_IOTA, X_UNION, X_MARK, X_NZ, X_NZ_ROWS, X_GATHER, X_PROD, X_COL, X_ROWOF = range(9)
NX = 9


@njit_exact(inline="always")
def _mat(buf, off, rows, cols):
    """``buf[off : off + rows*cols]`` as a C-contiguous ``(rows, cols)`` view."""
    return buf[off : off + rows * cols].reshape((rows, cols))


@njit_exact(inline="always")
def _vec(buf, off, n):
    return buf[off : off + n]


@njit_exact
def _mac_sparse(kind, choice, act, na, rows, ah, aw, w4, stride, pt, pl, acc, touched, mark, nzbuf, gather, prod, rowof, colbuf, prodbuf):
    """One delta MAC step with the chosen kernel; returns ``(n_touched, macs)``."""
    par = choice >= KERNEL_PARALLEL
    gran = choice % KERNEL_PARALLEL
    pixel = gran != KERNEL_ELEMENT  # pointwise: patch-wise is pixel-wise
    if kind == MAC_CONV and gran == KERNEL_PATCH:
        if par:
            return _conv2d_patch_par(act, na, rows, ah, aw, w4, stride, pt, pl, acc, touched, mark, rowof, colbuf, prodbuf)
        return _conv2d_patch(act, na, rows, ah, aw, w4, stride, pt, pl, acc, touched, mark, rowof, colbuf, prodbuf)
    if kind == MAC_DEPTHWISE:
        if par:
            return _depthwise_par(act, na, rows, aw, w4, stride, pt, pl, acc, touched, mark, nzbuf)
        return _depthwise(act, na, rows, aw, w4, stride, pt, pl, acc, touched, mark, nzbuf)
    if kind == MAC_POINTWISE:
        w = w4.reshape((w4.shape[2], w4.shape[3]))
        if pixel:
            if par:
                return _pointwise_pix_par(act, na, rows, w, acc, touched, prod)
            return _pointwise_pix(act, na, rows, w, acc, touched, prod)
        if par:
            return _pointwise_elem_par(act, na, rows, w, acc, touched, nzbuf)
        return _pointwise_elem(act, na, rows, w, acc, touched, nzbuf)
    if pixel:
        if par:
            return _conv2d_pix_par(act, na, rows, aw, w4, stride, pt, pl, acc, touched, mark, gather, prod)
        return _conv2d_pix(act, na, rows, aw, w4, stride, pt, pl, acc, touched, mark, gather, prod)
    if par:
        return _conv2d_elem_par(act, na, rows, aw, w4, stride, pt, pl, acc, touched, mark, nzbuf)
    return _conv2d_elem(act, na, rows, aw, w4, stride, pt, pl, acc, touched, mark, nzbuf)


@njit_exact(inline="always")
def delta_fraction(steps, kernels, s, n_active, pixels, nnz):
    """How dense MAC step ``s``'s input delta is, in the unit its delta kernel's cost grows with:
    active pixels / pixels for the pixel-wise and depthwise kernels, non-zero elements / input
    elements for the element-wise ones (patch-wise: its touched outputs grow with the active
    pixels; ``streaming.tuning.tune_fallback`` measures the
    break-even in the same unit)."""
    gran = kernels[steps[s, A0 + 11]] % KERNEL_DENSE_PARALLEL % KERNEL_PARALLEL
    if steps[s, A0] == MAC_DEPTHWISE or gran != KERNEL_ELEMENT:
        return n_active / pixels
    return nnz / steps[s, A0 + 13]


@njit_exact
def _mac_step(steps, tensors, scratch, wbuf, fbuf, ibuf, ubuf, s, a, choice, la, na, run_dense, every_pixel):
    """MAC step ``s`` (input tensor ``a``) on the changed pixels ``la[:na]``; returns ``(n_listed, macs)``.

    Sparse (``run_dense`` false): the chosen delta kernel adds ``conv(delta)`` to the
    accumulator and lists the outputs it touched. Dense: ``acc = conv(x) + bias`` from the
    input's current value ``x`` -- the encoder's reference, i.e. the sum of every delta it
    transmitted, so ``acc`` is what the delta kernel would hold, in another summation order.
    A keyframe (``every_pixel``) lists every output; a fallback in a delta frame lists the
    outputs the delta kernel would have touched (elsewhere ``acc`` is unchanged up to float32
    rounding, and the steps downstream need not look at them).
    """
    kind = steps[s, A0]
    dense_par = choice >= KERNEL_DENSE_PARALLEL
    choice = choice % KERNEL_DENSE_PARALLEL
    o = steps[s, F_OUT]
    oh, ow, oc = tensors[o, T_H], tensors[o, T_W], tensors[o, T_C]
    ah, aw, ac = tensors[a, T_H], tensors[a, T_W], tensors[a, T_C]
    kh, kw, cin, cout = steps[s, A0 + 3], steps[s, A0 + 4], steps[s, A0 + 5], steps[s, A0 + 6]
    w4 = wbuf[steps[s, A0 + 1] : steps[s, A0 + 1] + kh * kw * cin * cout].reshape((kh, kw, cin, cout))
    stride, pt, pl = steps[s, A0 + 7], steps[s, A0 + 8], steps[s, A0 + 9]
    acc = _mat(fbuf, tensors[o, T_VAL], oh * ow, oc).reshape((oh, ow, oc))
    touched = _vec(ibuf, tensors[o, T_PIX], oh * ow)
    mark = _vec(ubuf, scratch[X_MARK], oh * ow)
    if run_dense:
        x = _mat(fbuf, tensors[a, T_VAL], ah * aw, ac).reshape((ah, aw, ac))
        bias = _vec(wbuf, steps[s, A0 + 2], oc)
        if dense_par:
            _conv_dense_par(x, w4, stride, pt, pl, bias, acc, fbuf[scratch[X_COL] :], kind == MAC_DEPTHWISE,
                            kind == MAC_POINTWISE, scratch[X_NZ_ROWS])  # fmt: skip
        else:
            _conv_dense(x, w4, stride, pt, pl, bias, acc, fbuf[scratch[X_COL] :], kind == MAC_DEPTHWISE, kind == MAC_POINTWISE)
        if every_pixel:
            return oh * ow, steps[s, A0 + 12]
        if kind == MAC_POINTWISE:
            touched[:na] = la[:na]
            return na, steps[s, A0 + 12]
        n_t, _pairs = _conv2d_touch(la, na, aw, kh, kw, stride, pt, pl, oh, ow, touched, mark)
        return n_t, steps[s, A0 + 12]
    rows = _mat(fbuf, steps[steps[s, A0 + 10], A0 + 2], ah * aw, ac)
    nzbuf = _mat(ibuf, scratch[X_NZ], scratch[X_NZ_ROWS], cin)
    gather = _mat(fbuf, scratch[X_GATHER], ah * aw, cin)
    prod = _mat(fbuf, scratch[X_PROD], ah * aw, oc)
    rowof = _vec(ibuf, scratch[X_ROWOF], ah * aw)
    return _mac_sparse(kind, choice, la, na, rows, ah, aw, w4, stride, pt, pl, acc, touched, mark, nzbuf, gather, prod, rowof,
                       fbuf[scratch[X_COL] :], fbuf[scratch[X_PROD] :])  # fmt: skip


@njit_exact
def time_mac_step(steps, inputs, tensors, scratch, wbuf, fbuf, ibuf, ubuf, s, choice, na, run_dense, reps):
    """Nanoseconds of ``reps`` runs of MAC step ``s`` (``streaming.tuning.tune_fallback``) on
    the delta already in the buffers: its input tensor's list ``[:na]`` and its encoder's
    rows. Each run adds into the accumulator: use a scratch engine's buffers."""
    a = inputs[steps[s, F_IN0]]
    la = _vec(ibuf, tensors[a, T_PIX], tensors[a, T_H] * tensors[a, T_W])
    out = np.empty(reps, np.int64)
    for r in range(reps):
        t0 = now_ns()
        _mac_step(steps, tensors, scratch, wbuf, fbuf, ibuf, ubuf, s, a, choice, la, na, run_dense, False)
        out[r] = now_ns() - t0
    return out


#: side of the square tiles (in the first encoder's pixels) whose occupancy decides a refresh frame:
#: a change anywhere in a tile reaches, through the receptive fields, most of what the deep layers
#: compute there, so the tile share saturates where a delta frame's cost does (moving clips: 73-100%
#: of the tiles, 14-89% of the pixels, every frame ~2x dense; docs/bench.md "Session 15")
REFRESH_TILE = 8


@njit_exact
def tile_occupancy(active, n, h, w, mark):
    """The fraction of the ``REFRESH_TILE``-pixel square tiles of an ``(h, w)`` grid holding at least
    one of the ``n`` ascending flat pixels ``active[:n]`` (``mark``: >= tiles zeroed uint8 scratch,
    zeroed again on return)."""
    tw = (w + REFRESH_TILE - 1) // REFRESH_TILE
    tiles = ((h + REFRESH_TILE - 1) // REFRESH_TILE) * tw
    hit = 0
    for t in range(n):
        p = active[t]
        k = (p // w) // REFRESH_TILE * tw + (p % w) // REFRESH_TILE
        hit += mark[k] == 0
        mark[k] = 1
    mark[:tiles] = 0
    return hit / tiles


@njit_exact
def _encode_threshold_rows_until(x, theta, ref, candidates, n_candidates, active, rows, h, w, need, mark):
    """``ops.encode._encode_threshold_rows`` that also counts the ``REFRESH_TILE`` tiles holding a
    fired pixel and stops right after the candidate with which ``need`` of them do (``need`` 0: at
    once, nothing encoded): a refresh frame overwrites the reference anyway, so the rest of the pass
    would be wasted. Returns ``(n_active, nnz, n_nonfinite, tiles hit)``; ``mark`` as in
    :func:`tile_occupancy`. A frame that stops early has not looked at its remaining candidates for
    non-finite values: the engine checks a refresh frame's logits instead."""
    tw = (w + REFRESH_TILE - 1) // REFRESH_TILE
    n = 0
    nnz = 0
    bad = 0
    hits = 0
    if need > 0:
        for t in range(n_candidates):
            p = candidates[t]
            fired, b = _threshold_row(x, theta, ref, rows, p, n)
            active[n] = p
            n += fired > 0
            nnz += fired
            bad += b
            if fired > 0:
                k = (p // w) // REFRESH_TILE * tw + (p % w) // REFRESH_TILE
                if mark[k] == 0:
                    mark[k] = 1
                    hits += 1
                    if hits >= need:
                        break
    mark[: ((h + REFRESH_TILE - 1) // REFRESH_TILE) * tw] = 0
    return n, nnz, bad, hits


@njit_exact(inline="always")
def _unchanged(steps, inputs, nlst, s):
    """Whether no input of step ``s`` lists a changed pixel."""
    first = steps[s, F_IN0]
    for k in range(steps[s, F_NIN]):
        if nlst[inputs[first + k]] > 0:
            return False
    return True


@njit_exact
def run_frame(steps, params, inputs, tensors, scratch, wbuf, fbuf, ibuf, ubuf, frame, kernels,
              lst, nlst, enc_nnz, nnz, macs, ran_dense, ns, fallback_at, refresh_at, frame_out, dense, scaled, profile):  # fmt: skip
    """Run one frame (``frame``: uint8 ``(H, W, C)``, C-contiguous) through every step.

    ``dense``: recompute every MAC layer from its input (a keyframe, or dense mode); in a
    delta frame, MAC layer ``i`` runs its dense kernel instead when its delta fraction
    (:func:`delta_fraction`) is ``>= fallback_at[i]`` (``ran_dense[i]`` says whether it did);
    ``refresh_at``: a delta frame whose first encoder's active pixels occupy at least this
    fraction of its ``REFRESH_TILE`` x ``REFRESH_TILE`` tiles (:func:`tile_occupancy`, written to
    ``frame_out[0]``) becomes a *refresh* frame from there on (``frame_out[1]`` = 1): the
    rest of the frame runs dense and every threshold encoder transmits its whole input (its
    reference becomes exactly the input: a buffer swap or a copy instead of a threshold test), so a scene cut or
    a pan costs a dense frame plus one copy per encoder; this departs from the delta model on
    that frame (it transmits more: its logits are the dense network's). ``inf``: never.
    ``scaled``: threshold encoders use their region scale; ``profile``: fill ``ns[s]`` with
    each step's nanoseconds. Returns -1, or the index of the step whose encoder met
    non-finite values (the stream's state is then broken: reset it).
    """
    iota = scratch[X_IOTA]
    refresh = False  # this frame became a refresh frame (from its first encoder on)
    first_encoder = not dense  # the next encoder is the frame's first: it decides on a refresh
    frame_out[0] = 1.0 if dense else 0.0
    frame_out[1] = 0.0
    h0, w0, c0 = frame.shape
    frame2 = frame.reshape((h0 * w0, c0))
    t0 = now_ns() if profile else 0
    for s in range(steps.shape[0]):
        op = steps[s, F_OP]
        o = steps[s, F_OUT]
        oh, ow, oc = tensors[o, T_H], tensors[o, T_W], tensors[o, T_C]
        opix = tensors[o, T_PIX]
        if not dense and op != OP_INPUT and _unchanged(steps, inputs, nlst, s):
            # nothing reached this step: it has nothing to do (no buffers are even looked at)
            lst[o] = opix
            nlst[o] = 0
            if op == OP_ENCODE:
                enc_nnz[s] = 0
            elif op == OP_MAC:
                nnz[steps[s, A0 + 11]] = 0
                macs[steps[s, A0 + 11]] = 0
                ran_dense[steps[s, A0 + 11]] = 0
        elif op == OP_INPUT:
            out2 = _mat(fbuf, tensors[o, T_VAL], oh * ow, oc)
            prev = _mat(ubuf, steps[s, A0 + 2], oh * ow, oc)
            n = _frame_to_float_changed(frame2, prev, out2, _vec(wbuf, steps[s, A0], oc), _vec(wbuf, steps[s, A0 + 1], oc),
                                        _vec(ibuf, opix, oh * ow), dense)  # fmt: skip
            lst[o] = iota if dense else opix
            nlst[o] = n
        else:
            out2 = _mat(fbuf, tensors[o, T_VAL], oh * ow, oc)
            a = inputs[steps[s, F_IN0]]
            ah, aw, ac = tensors[a, T_H], tensors[a, T_W], tensors[a, T_C]
            a2 = _mat(fbuf, tensors[a, T_VAL], ah * aw, ac)
            la = _vec(ibuf, lst[a], ah * aw)
            na = nlst[a]
            if op == OP_ENCODE:
                kind = steps[s, A0]
                if kind == ENC_IDENTITY:  # dense mode: the output is the input's buffer
                    lst[o] = lst[a]
                    nlst[o] = na
                    enc_nnz[s] = -1
                elif refresh and kind == ENC_THRESHOLD:  # a refresh frame: transmit everything
                    if steps[s, A0 + 4] == 1:
                        # the input was rewritten whole this frame (its producer ran dense) and only
                        # this encoder reads it: the buffers trade places instead of a copy
                        v = tensors[a, T_VAL]
                        tensors[a, T_VAL] = tensors[o, T_VAL]
                        tensors[o, T_VAL] = v
                    else:
                        out2[:, :] = a2
                    lst[o] = iota
                    nlst[o] = oh * ow
                    enc_nnz[s] = -1
                elif first_encoder and kind == ENC_THRESHOLD and refresh_at <= 1.0 and not (scaled and steps[s, A0 + 3] >= 0):
                    # the frame's first encoder, refresh frames on: it encodes until enough tiles hold a change
                    first_encoder = False
                    tiles = ((oh + REFRESH_TILE - 1) // REFRESH_TILE) * ((ow + REFRESH_TILE - 1) // REFRESH_TILE)
                    need = int(np.ceil(refresh_at * tiles))
                    n, z, bad, hits = _encode_threshold_rows_until(a2, _vec(wbuf, steps[s, A0 + 1], ac), out2, la, na,
                                                                   _vec(ibuf, opix, oh * ow), _mat(fbuf, steps[s, A0 + 2], ah * aw, ac),
                                                                   oh, ow, need, _vec(ubuf, scratch[X_MARK], oh * ow))  # fmt: skip
                    if bad > 0:
                        return s
                    frame_out[0] = hits / tiles
                    if hits >= need:  # dense from here on; the reference becomes the input
                        refresh = True
                        dense = True
                        frame_out[1] = 1.0
                        out2[:, :] = a2
                        enc_nnz[s] = -1
                        lst[o] = iota
                        nlst[o] = oh * ow
                    else:
                        enc_nnz[s] = z
                        lst[o] = opix
                        nlst[o] = n
                else:
                    param = _vec(wbuf, steps[s, A0 + 1], ac)
                    rows = _mat(fbuf, steps[s, A0 + 2], ah * aw, ac)
                    active = _vec(ibuf, opix, oh * ow)
                    if kind == ENC_QUANTIZE:
                        n, z, bad = _encode_quantize_rows(a2, param, out2, la, na, active, rows)
                    elif scaled and steps[s, A0 + 3] >= 0:
                        pscale = _vec(fbuf, steps[s, A0 + 3], ah * aw)
                        n, z, bad = _encode_threshold_rows_scaled(a2, param, pscale, out2, la, na, active, rows)
                    else:
                        n, z, bad = _encode_threshold_rows(a2, param, out2, la, na, active, rows)
                    if bad > 0:
                        return s
                    enc_nnz[s] = z
                    lst[o] = opix
                    nlst[o] = n
                    if first_encoder:  # (refresh frames off, or a quantize / region-scaled first encoder)
                        first_encoder = False
                        occ = tile_occupancy(active, n, oh, ow, _vec(ubuf, scratch[X_MARK], oh * ow))
                        frame_out[0] = occ
                        if occ >= refresh_at:  # dense from here on
                            refresh = True
                            dense = True
                            frame_out[1] = 1.0
                            if kind == ENC_THRESHOLD:  # (a quantize encoder's state is exact already)
                                out2[:, :] = a2
                                enc_nnz[s] = -1
                            lst[o] = iota
                            nlst[o] = oh * ow
            elif op == OP_MAC:
                mi = steps[s, A0 + 11]
                enc = steps[s, A0 + 10]
                nnz[mi] = steps[s, A0 + 13] if enc_nnz[enc] < 0 else enc_nnz[enc]
                # a dense frame, or a delta so dense that this layer's dense kernel is faster
                run_dense = dense or delta_fraction(steps, kernels, s, na, ah * aw, nnz[mi]) >= fallback_at[mi]
                nt, m = _mac_step(steps, tensors, scratch, wbuf, fbuf, ibuf, ubuf, s, a, kernels[mi], la, na, run_dense, dense)
                lst[o] = iota if dense else opix
                nlst[o] = nt
                macs[mi] = m
                ran_dense[mi] = run_dense
            elif op == OP_ACTIVATION:
                n = oh * ow if dense else na
                pix = _vec(ibuf, iota, n) if dense else la
                _activation_pixels(a2, out2, steps[s, A0], params[s, 0], params[s, 1], params[s, 2], pix, n)
                lst[o] = iota if dense else lst[a]
                nlst[o] = n
            elif op == OP_AFFINE:
                n = oh * ow if dense else na
                pix = _vec(ibuf, iota, n) if dense else la
                _affine_pixels(a2, out2, _vec(wbuf, steps[s, A0], oc), _vec(wbuf, steps[s, A0 + 1], oc), pix, n)
                lst[o] = iota if dense else lst[a]
                nlst[o] = n
            elif op == OP_MERGE or op == OP_CONCAT:
                nin = steps[s, F_NIN]
                first = steps[s, F_IN0]
                # The changed output pixels: all of them in a dense frame or when a broadcast
                # (1, 1, C) input changed, else the union of the full-size inputs' lists.
                every = dense
                cur = -1
                n = 0
                for k in range(nin):
                    b = inputs[first + k]
                    if tensors[b, T_H] * tensors[b, T_W] != oh * ow:
                        every = every or nlst[b] > 0
                    elif cur < 0:
                        cur = lst[b]
                        n = nlst[b]
                    else:
                        target = opix if cur != opix else scratch[X_UNION]
                        n = _union(_vec(ibuf, cur, oh * ow), n, _vec(ibuf, lst[b], oh * ow), nlst[b], _vec(ibuf, target, oh * ow))
                        cur = target
                if every:
                    cur = iota
                    n = oh * ow
                elif cur == scratch[X_UNION]:  # the shared scratch is not a tensor's list: move it home
                    _vec(ibuf, opix, n)[:] = _vec(ibuf, cur, n)
                    cur = opix
                pix = _vec(ibuf, cur, oh * ow)
                if op == OP_MERGE:
                    kind = steps[s, A0]
                    b = inputs[first + 1]
                    bh, bw = tensors[b, T_H], tensors[b, T_W]
                    b2 = _mat(fbuf, tensors[b, T_VAL], bh * bw, oc)
                    _merge_pixels(kind, a2, 1 if ah * aw == oh * ow else 0, b2, 1 if bh * bw == oh * ow else 0, out2, pix, n)
                    for k in range(2, nin):
                        b = inputs[first + k]
                        bh, bw = tensors[b, T_H], tensors[b, T_W]
                        b2 = _mat(fbuf, tensors[b, T_VAL], bh * bw, oc)
                        _merge_pixels(kind, out2, 1, b2, 1 if bh * bw == oh * ow else 0, out2, pix, n)
                    if steps[s, A0 + 1] != 0:
                        _divide_pixels(out2, nin, pix, n)
                else:
                    c0 = 0
                    for k in range(nin):
                        b = inputs[first + k]
                        bc = tensors[b, T_C]
                        _copy_channels(_mat(fbuf, tensors[b, T_VAL], oh * ow, bc), out2, c0, pix, n)
                        c0 += bc
                lst[o] = cur
                nlst[o] = n
            elif op == OP_PAD:
                pix = _vec(ibuf, iota, ah * aw) if dense else la
                n = ah * aw if dense else na
                _pad_pixels(a2, out2, aw, ow, steps[s, A0], steps[s, A0 + 1], pix, n, _vec(ibuf, opix, oh * ow))
                lst[o] = opix
                nlst[o] = n
            elif op == OP_POOL:
                is_max = steps[s, A0] != 0
                pkh, pkw, pst, ppt, ppl = steps[s, A0 + 1], steps[s, A0 + 2], steps[s, A0 + 3], steps[s, A0 + 4], steps[s, A0 + 5]
                if dense:
                    n = oh * ow
                    cur = iota
                else:
                    n = _pool_touch(la, na, aw, pkh, pkw, pst, ppt, ppl, oh, ow, _vec(ibuf, opix, oh * ow),
                                    _vec(ubuf, scratch[X_MARK], oh * ow))  # fmt: skip
                    cur = opix
                _pool_pixels(a2, out2, ah, aw, pkh, pkw, pst, ppt, ppl, ow, is_max, _vec(ibuf, cur, oh * ow), n)
                lst[o] = cur
                nlst[o] = n
            elif op == OP_GLOBAL_POOL:
                if dense or na > 0:
                    _global_pool(a2, out2, steps[s, A0] != 0)
                    nlst[o] = 1
                else:
                    nlst[o] = 0
                lst[o] = iota
            else:  # OP_FLATTEN: the output is the input's buffer seen as a vector
                lst[o] = iota
                nlst[o] = 1 if (dense or na > 0) else 0
        if profile:
            t1 = now_ns()
            ns[s] = t1 - t0
            t0 = t1
    return -1
