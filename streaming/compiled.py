"""One numba call per frame: the engine's delta steps compiled into a single loop.

A Python loop over ~70 steps costs several microseconds of dispatch per step, which is
as much as a whole frame takes in an optimized dense runtime. ``CompiledFrame`` packs
the engine's step list into integer tables and its buffers into numba typed lists (views
of the very arrays the Python runners use, so both paths share state), and runs a whole
non-keyframe frame inside one ``njit`` function that calls the same ``ops`` kernels.

Keyframes (dense passes) and profiling (per-layer timing) still go through the Python
runners; ``tests/test_compiled.py`` checks that both paths give the same results.
"""

from __future__ import annotations

import warnings

import numpy as np
from numba import njit, typed, types
from numba.core.errors import NumbaTypeSafetyWarning

from ops.conv import _conv2d_elem, _conv2d_elem_par, _conv2d_pix, _conv2d_pix_par, _pointwise_elem, _pointwise_elem_par, _pointwise_pix, _pointwise_pix_par
from ops.depthwise import _depthwise, _depthwise_par
from ops.elementwise import (
    _activation_pixels,
    _add_pixels,
    _affine_pixels,
    _copy_channels,
    _frame_to_float_changed,
    _global_pool,
    _pad_pixels,
    _pool_pixels,
    _pool_touch,
    _union,
)
from ops.encode import _encode_quantize_rows, _encode_threshold_rows
from ops.region import _encode_threshold_rows_scaled

# opcodes
OP_INPUT, OP_ENCODE, OP_MAC, OP_ACT, OP_AFFINE, OP_ADD, OP_CONCAT, OP_PAD, OP_POOL, OP_GPOOL, OP_FLATTEN = range(11)
# MAC kernels
K_CONV_E, K_CONV_P, K_PW_E, K_PW_P, K_DW = range(5)
NF = 24  # int fields per step

# step table fields
F_OP, F_IN0, F_NIN, F_OUT = 0, 1, 2, 3
# tensor table fields
T_VAL, T_H, T_W, T_C, T_PIX, T_ALL = range(6)


# Not cached on disk: numba's cache is keyed on this file alone and would happily reuse a
# compiled frame loop whose inlined ops kernels have changed since (a crash, not a
# slowdown). Compiling it takes a few seconds once per process.
@njit(cache=False, nogil=True)
def _run(S, P, INL, T, F, I, U, frame, lst, nlst, nnz, macs):
    """Execute one delta frame. Returns the index of a step that met non-finite values, or -1."""
    for s in range(S.shape[0]):
        op = S[s, F_OP]
        o = S[s, F_OUT]
        oh, ow, oc = T[o, T_H], T[o, T_W], T[o, T_C]
        oval = F[T[o, T_VAL]]
        if op == OP_INPUT:
            n = _frame_to_float_changed(frame, U[S[s, 6]].reshape((oh * ow, oc)), oval.reshape((oh * ow, oc)),
                                        F[S[s, 4]], F[S[s, 5]], I[T[o, T_PIX]], False)
            lst[o] = T[o, T_PIX]
            nlst[o] = n
            continue
        a = INL[S[s, F_IN0]]
        ah, aw, ac = T[a, T_H], T[a, T_W], T[a, T_C]
        aval = F[T[a, T_VAL]]
        if op == OP_ENCODE:
            x = aval.reshape((ah * aw, ac))
            state = oval.reshape((oh * ow, oc))
            rows = F[S[s, 6]].reshape((ah * aw, ac))
            if S[s, 4] == 0:
                n, z, bad = _encode_threshold_rows(x, F[S[s, 5]], state, I[lst[a]], nlst[a], I[T[o, T_PIX]], rows)
            elif S[s, 4] == 2:  # region-weighted threshold (DeltaEngine.set_region)
                n, z, bad = _encode_threshold_rows_scaled(x, F[S[s, 5]], F[S[s, 8]], state, I[lst[a]], nlst[a], I[T[o, T_PIX]], rows)
            else:
                n, z, bad = _encode_quantize_rows(x, F[S[s, 5]], state, I[lst[a]], nlst[a], I[T[o, T_PIX]], rows)
            if bad > 0:
                return s
            S[s, 7] = z  # this frame's nnz, read by the MAC step(s) it feeds
            lst[o] = T[o, T_PIX]
            nlst[o] = n
        elif op == OP_MAC:
            kind = S[s, 4]
            kh, kw, cin, cout = S[s, 6], S[s, 7], S[s, 8], S[s, 9]
            wflat = F[S[s, 5]]
            rows = F[S[S[s, 18], 6]].reshape((ah * aw, ac))
            act = I[lst[a]]
            na = nlst[a]
            acc = oval.reshape((oh, ow, oc))
            touched = I[T[o, T_PIX]]
            mark = U[S[s, 13]]
            stride, pt, pl = S[s, 10], S[s, 11], S[s, 12]
            nzbuf = I[S[s, 14]].reshape((S[s, 15], cin))
            par = S[s, 20] != 0
            if kind == K_CONV_E:
                w = wflat.reshape((kh, kw, cin, cout))
                if par:
                    nt, m = _conv2d_elem_par(act, na, rows, aw, w, stride, pt, pl, acc, touched, mark, nzbuf)
                else:
                    nt, m = _conv2d_elem(act, na, rows, aw, w, stride, pt, pl, acc, touched, mark, nzbuf)
            elif kind == K_CONV_P:
                w = wflat.reshape((kh, kw, cin, cout))
                gather = F[S[s, 16]].reshape((ah * aw, cin))
                prod = F[S[s, 17]].reshape((ah * aw, cout))
                if par:
                    nt, m = _conv2d_pix_par(act, na, rows, aw, w, stride, pt, pl, acc, touched, mark, gather, prod)
                else:
                    nt, m = _conv2d_pix(act, na, rows, aw, w, stride, pt, pl, acc, touched, mark, gather, prod)
            elif kind == K_PW_E:
                w = wflat.reshape((cin, cout))
                if par:
                    nt, m = _pointwise_elem_par(act, na, rows, w, acc, touched, nzbuf)
                else:
                    nt, m = _pointwise_elem(act, na, rows, w, acc, touched, nzbuf)
            elif kind == K_PW_P:
                w = wflat.reshape((cin, cout))
                prod = F[S[s, 17]].reshape((ah * aw, cout))
                if par:
                    nt, m = _pointwise_pix_par(act, na, rows, w, acc, touched, prod)
                else:
                    nt, m = _pointwise_pix(act, na, rows, w, acc, touched, prod)
            else:
                w = wflat.reshape((kh, kw, cin, cout))
                if par:
                    nt, m = _depthwise_par(act, na, rows, aw, w, stride, pt, pl, acc, touched, mark, nzbuf)
                else:
                    nt, m = _depthwise(act, na, rows, aw, w, stride, pt, pl, acc, touched, mark, nzbuf)
            mi = S[s, 19]
            macs[mi] = m
            nnz[mi] = S[S[s, 18], 7]
            lst[o] = T[o, T_PIX]
            nlst[o] = nt
        elif op == OP_ACT:
            _activation_pixels(aval.reshape((ah * aw, ac)), oval.reshape((oh * ow, oc)), S[s, 4], P[s, 0], P[s, 1], P[s, 2], I[lst[a]], nlst[a])
            lst[o] = lst[a]
            nlst[o] = nlst[a]
        elif op == OP_AFFINE:
            _affine_pixels(aval.reshape((ah * aw, ac)), oval.reshape((oh * ow, oc)), F[S[s, 4]], F[S[s, 5]], I[lst[a]], nlst[a])
            lst[o] = lst[a]
            nlst[o] = nlst[a]
        elif op == OP_ADD or op == OP_CONCAT:
            cur = lst[a]
            n = nlst[a]
            for k in range(1, S[s, F_NIN]):
                b = INL[S[s, F_IN0] + k]
                target = T[o, T_PIX] if cur != T[o, T_PIX] else S[s, 4]
                n = _union(I[cur], n, I[lst[b]], nlst[b], I[target])
                cur = target
            out2 = oval.reshape((oh * ow, oc))
            if op == OP_ADD:
                b = INL[S[s, F_IN0] + 1]
                _add_pixels(aval.reshape((ah * aw, ac)), F[T[b, T_VAL]].reshape((oh * ow, oc)), out2, I[cur], n)
                for k in range(2, S[s, F_NIN]):
                    b = INL[S[s, F_IN0] + k]
                    _add_pixels(out2, F[T[b, T_VAL]].reshape((oh * ow, oc)), out2, I[cur], n)
            else:
                c0 = 0
                for k in range(S[s, F_NIN]):
                    b = INL[S[s, F_IN0] + k]
                    _copy_channels(F[T[b, T_VAL]].reshape((T[b, T_H] * T[b, T_W], T[b, T_C])), out2, c0, I[cur], n)
                    c0 += T[b, T_C]
            lst[o] = cur
            nlst[o] = n
        elif op == OP_PAD:
            n = _pad_pixels(aval.reshape((ah * aw, ac)), oval.reshape((oh * ow, oc)), aw, ow, S[s, 4], S[s, 5], I[lst[a]], nlst[a], I[T[o, T_PIX]])
            lst[o] = T[o, T_PIX]
            nlst[o] = n
        elif op == OP_POOL:
            n = _pool_touch(I[lst[a]], nlst[a], aw, S[s, 5], S[s, 6], S[s, 7], S[s, 8], S[s, 9], oh, ow, I[T[o, T_PIX]], U[S[s, 10]])
            _pool_pixels(aval.reshape((ah * aw, ac)), oval.reshape((oh * ow, oc)), ah, aw, S[s, 5], S[s, 6], S[s, 7], S[s, 8], S[s, 9], ow, S[s, 4] != 0, I[T[o, T_PIX]], n)
            lst[o] = T[o, T_PIX]
            nlst[o] = n
        elif op == OP_GPOOL:
            if nlst[a] > 0:
                _global_pool(aval.reshape((ah * aw, ac)), oval.reshape((1, oc)), S[s, 4] != 0)
                nlst[o] = 1
            else:
                nlst[o] = 0
            lst[o] = T[o, T_ALL]
        else:  # OP_FLATTEN
            lst[o] = T[o, T_ALL]
            nlst[o] = 1 if nlst[a] > 0 else 0
    return -1


class CompiledFrame:
    """The engine's steps as tables + typed lists of (views of) its buffers."""

    def __init__(self, engine):
        from streaming.engine import (
            _ActivationRunner,
            _AddRunner,
            _AffineRunner,
            _ConcatRunner,
            _EncodeRunner,
            _FlattenRunner,
            _GlobalPoolRunner,
            _InputRunner,
            _MacRunner,
            _PadRunner,
            _PoolRunner,
        )

        self.engine = engine
        F = typed.List.empty_list(types.float32[::1])
        I = typed.List.empty_list(types.int32[::1])
        U = typed.List.empty_list(types.uint8[::1])
        index = {}

        def reg(lst, arr, kind):
            key = (kind, arr.__array_interface__["data"][0], arr.size)
            if key not in index:
                if not arr.flags.c_contiguous:
                    raise ValueError("CompiledFrame needs C-contiguous buffers (views are shared with the Python path)")
                with warnings.catch_warnings():
                    # Weights may be read-only (shared between engines, or loaded from a
                    # bundle); typed lists only hold writable arrays, and the frame loop
                    # never writes them.
                    warnings.simplefilter("ignore", NumbaTypeSafetyWarning)
                    lst.append(arr.reshape(-1))
                index[key] = len(lst) - 1
            return index[key]

        f = lambda a: reg(F, a, "f")  # noqa: E731
        i = lambda a: reg(I, a, "i")  # noqa: E731
        u = lambda a: reg(U, a, "u")  # noqa: E731

        names = list(engine.tensors)
        tid = {n: k for k, n in enumerate(names)}
        T = np.zeros((len(names), 6), np.int64)
        for n, t in engine.tensors.items():
            k = tid[n]
            T[k] = (f(t.value), t.shape[0], t.shape[1], t.shape[2], i(t.pix), i(t.all))
        steps = engine._steps
        S = np.full((len(steps), NF), -1, np.int64)
        P = np.zeros((len(steps), 4), np.float64)
        inl = []
        enc_index = {}
        for s, r in enumerate(steps):
            row = S[s]
            row[F_OUT] = tid[r.out.name]
            if isinstance(r, (_AddRunner, _ConcatRunner)):
                srcs = r.srcs
            elif isinstance(r, _InputRunner):
                srcs = []
            else:
                srcs = [r.src]
            row[F_IN0] = len(inl)
            row[F_NIN] = len(srcs)
            inl.extend(tid[x.name] for x in srcs)
            if isinstance(r, _InputRunner):
                row[F_OP], row[4], row[5], row[6] = OP_INPUT, f(r.scale), f(r.offset), u(r.prev)
            elif isinstance(r, _EncodeRunner):
                row[F_OP], row[4], row[5], row[6] = OP_ENCODE, int(r.quantize), f(r.param), f(r.rows)
                if r.scale is not None:
                    row[8] = f(r.scale)
                enc_index[id(r)] = s
            elif isinstance(r, _MacRunner):
                kh, kw, cin, cout = r.kernel.shape
                if r.depthwise:
                    kind = K_DW
                elif r.pointwise:
                    kind = K_PW_P if r.granularity == "pixel" else K_PW_E
                else:
                    kind = K_CONV_P if r.granularity == "pixel" else K_CONV_E
                row[F_OP], row[4], row[5] = OP_MAC, kind, f(r.kernel)
                row[6:13] = (kh, kw, cin, cout, r.stride, r.pad_top, r.pad_left)
                row[13], row[14], row[15] = u(r.mark), i(r.nzbuf), r.nzbuf.shape[0]
                if r.gather is not None:
                    row[16] = f(r.gather)
                if r.prod is not None:
                    row[17] = f(r.prod)
                row[18], row[19], row[20] = enc_index[id(r.enc)], r.mac_index, int(r.parallel)
            elif isinstance(r, _ActivationRunner):
                row[F_OP], row[4] = OP_ACT, r.code
                P[s, :3] = r.a
            elif isinstance(r, _ConcatRunner):
                row[F_OP], row[4] = OP_CONCAT, i(r.tmp)
            elif isinstance(r, _AddRunner):
                row[F_OP], row[4] = OP_ADD, i(r.tmp)
            elif isinstance(r, _AffineRunner):
                row[F_OP], row[4], row[5] = OP_AFFINE, f(r.scale), f(r.offset)
            elif isinstance(r, _PadRunner):
                row[F_OP], row[4], row[5] = OP_PAD, r.top, r.left
            elif isinstance(r, _PoolRunner):
                row[F_OP] = OP_POOL
                row[4:11] = (int(r.is_max), r.kh, r.kw, r.stride, r.pad_top, r.pad_left, u(r.mark))
            elif isinstance(r, _GlobalPoolRunner):
                row[F_OP], row[4] = OP_GPOOL, int(r.is_max)
            elif isinstance(r, _FlattenRunner):
                row[F_OP] = OP_FLATTEN
            else:
                raise TypeError(f"no compiled form for {type(r).__name__}")
        self.S, self.P, self.T = S, P, T
        self.tensor_index = tid
        self.INL = np.asarray(inl if inl else [0], np.int64)
        self.F, self.I, self.U = F, I, U
        self.lst = np.zeros(len(names), np.int64)
        self.nlst = np.zeros(len(names), np.int64)
        self.step_names = [getattr(r, "name", r.out.name) for r in steps]
        self._encoders = [(s, r) for s, r in enumerate(steps) if isinstance(r, _EncodeRunner)]
        self.refresh_encoders()

    def changed_count(self, tensor) -> int:
        """Entries of ``tensor.pix`` listed by the last compiled frame (its ``n``)."""
        return int(self.nlst[self.tensor_index[tensor.name]])

    def refresh_encoders(self) -> None:
        """Re-read each encoder's kind (0 threshold, 1 quantize, 2 region-weighted threshold)."""
        for s, r in self._encoders:
            self.S[s, 4] = 2 if r.scaled else int(r.quantize)

    def run(self, frame: np.ndarray, nnz: np.ndarray, macs: np.ndarray) -> int:
        """Run one delta frame; fills per-MAC-layer ``nnz`` and ``macs``; returns -1 or a bad step."""
        return _run(self.S, self.P, self.INL, self.T, self.F, self.I, self.U, frame.reshape(-1, frame.shape[2]),
                    self.lst, self.nlst, nnz, macs)
