"""Per-worker load of the parallel delta kernels (from Sigma-MoE-Tiny's progressive sparsification, arXiv 2512.16248).

The parallel Conv2D/depthwise kernels split the *output rows* into blocks holding about the
same number of active input pixels (``ops.blocks._split_row``), pointwise/Dense kernels split
the active pixels (or, for one pixel, the output channels). A ``DeltaEngine`` gives its
element-wise kernels one block per thread, and numba's default schedule runs ``prange``
iterations as equal contiguous chunks, one per thread (the numba documentation, "Scheduling"),
so each worker runs one block. (The pixel-wise kernels and the public ``ops`` functions use up
to ``PAR_BLOCKS`` blocks; with fewer threads each worker runs a contiguous run of them.) When
the changes cluster in one part of the frame, some workers get much more work than others.
:func:`worker_loads` reproduces that split exactly (it calls the kernels' own helpers),
:func:`load_stats` reports ``max / mean`` per worker and :func:`engine_frame_loads` does both
for every MAC layer of an engine's last frame.

NumPy and numba only: no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ops import interpreter as ip
from ops.config import CHANNEL_BLOCK, PAR_BLOCKS, njit_exact
from ops.blocks import _block, _row_span, _split_row
from ops.touch import _taps

__all__ = ["worker_loads", "load_stats", "engine_worker_stats", "engine_frame_loads"]

KINDS = ("conv", "depthwise", "pointwise")


@njit_exact
def _row_block_loads(active, n_active, nnz, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w, nb, per_tap, nz_out, work_out):
    """Per row block of the Conv2D/depthwise element-wise kernels: the non-zeros it reads
    (a pixel counts once per block that uses it) and its work (non-zeros x taps in range,
    x ``per_tap`` outputs per tap), exactly as ``_conv2d_elem_range`` loops."""
    for b in range(nb):
        r0 = _split_row(active, n_active, b, nb, in_w, pad_top, stride, out_h)
        r1 = _split_row(active, n_active, b + 1, nb, in_w, pad_top, stride, out_h)
        a0, a1 = _row_span(active, n_active, in_w, r0, r1, kh, stride, pad_top)
        nz = 0
        work = 0
        for a in range(a0, a1):
            p = active[a]
            iy = p // in_w
            ix = p - iy * in_w
            ky0, oy0, ty_lo, ty_hi = _taps(iy, pad_top, kh, stride, out_h)
            kx0, ox0, tx_lo, tx_hi = _taps(ix, pad_left, kw, stride, out_w)
            if ty_lo < oy0 - r1 + 1:
                ty_lo = oy0 - r1 + 1
            if ty_hi > oy0 - r0 + 1:
                ty_hi = oy0 - r0 + 1
            if ty_hi <= ty_lo or tx_hi <= tx_lo:
                continue
            nz += nnz[a]
            work += nnz[a] * (ty_hi - ty_lo) * (tx_hi - tx_lo) * per_tap
        nz_out[b] = nz
        work_out[b] = work


def _n_blocks(n: int, align: int, par_blocks: int) -> int:
    """``ops.blocks._n_blocks`` with an explicit block budget."""
    chunks = (n + align - 1) // align
    return max(1, min(par_blocks, chunks))


def _blocks_to_workers(values: np.ndarray, threads: int) -> np.ndarray:
    """Sum per-block values into ``threads`` workers as numba's default schedule shares a
    ``prange`` of ``nb`` iterations: one iteration each when ``nb <= threads`` (a
    ``DeltaEngine``'s element-wise kernels), else equal contiguous runs (worker ``i`` taking
    ``ceil(remaining / (threads - i))``)."""
    nb = len(values)
    out = np.zeros(threads, np.int64)
    if nb <= threads:
        out[:nb] = values
        return out
    cur = 0
    for i in range(threads):
        ilen = (nb - cur - 1) // (threads - i) + 1
        hi = nb if i == threads - 1 else cur + ilen
        out[i] = int(np.sum(values[cur:hi]))
        cur += ilen
    return out


def worker_loads(
    kind: str,
    active: np.ndarray,
    n_active: int,
    nnz: np.ndarray,
    *,
    threads: int,
    in_w: int = 1,
    out_h: int = 1,
    out_w: int = 1,
    kh: int = 1,
    kw: int = 1,
    stride: int = 1,
    pad_top: int = 0,
    pad_left: int = 0,
    cout: int = 1,
    cin: int = 1,
    granularity: str = "element",
    par_blocks: int = PAR_BLOCKS,
) -> dict[str, np.ndarray]:
    """How a parallel delta kernel shares one frame of one layer among ``threads`` workers.

    Args:
        kind: ``"conv"`` (Conv2D, not 1x1/stride 1), ``"depthwise"`` or ``"pointwise"``
            (1x1 stride-1 Conv2D, or Dense as one pixel).
        active: int32 ascending flat indices of the active input pixels (first ``n_active``).
        n_active: number of active pixels.
        nnz: int per active pixel: its non-zero delta channels (e.g.
            ``np.count_nonzero(rows[:n_active], axis=1)``).
        threads: number of workers (``numba.set_num_threads``).
        in_w, out_h, out_w, kh, kw, stride, pad_top, pad_left: the layer's geometry
            (``ops.geometry.conv_geometry``); pointwise layers need none of them.
        cout: outputs per tap: Conv2D/pointwise ``Cout``, depthwise the depth multiplier.
        granularity: ``"element"`` (default) or ``"pixel"`` (the ``*_pix_par`` kernels;
            Conv2D then splits each tap's pixels in blocks of 8, one parallel region per tap,
            pointwise splits the pixels in blocks of 8; work = rows x ``cin`` x ``cout``) or
            ``"patch"`` (``_conv2d_patch_par``: the touched outputs in blocks of 8, work =
            outputs x ``kh*kw*cin*cout``; pointwise: pixel-wise).
        cin: input channels (pixel-wise work only). Defaults to 1.
        par_blocks: the kernels' block budget (``ops.config.PAR_BLOCKS``).

    Returns:
        ``{"nonzeros": int64 (threads,), "work": int64 (threads,)}``: per worker the non-zero
        delta elements it reads and its multiply-adds (element-wise kernels: exactly the
        MACs the kernel counts; depthwise counts ``nnz`` per tap even for rows the kernel
        runs densely).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if granularity not in ("element", "pixel", "patch"):
        raise ValueError(f"granularity must be 'element', 'pixel' or 'patch', got {granularity!r}")
    if granularity == "patch" and kind != "conv":  # a 1x1 patch is the pixel (ops.pointwise)
        granularity = "pixel"
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    n = int(n_active)
    active = np.ascontiguousarray(np.asarray(active, np.int32)[:n])
    nnz = np.ascontiguousarray(np.asarray(nnz, np.int64)[:n])
    if nnz.shape[0] != n or active.shape[0] != n:
        raise ValueError(f"active and nnz need n_active={n} entries, got {active.shape[0]} and {nnz.shape[0]}")
    if n > 1 and not np.all(active[1:] > active[:-1]):
        raise ValueError("active must be strictly ascending")
    par_blocks = max(1, int(par_blocks))
    if kind == "conv" and granularity == "patch":  # the touched outputs in blocks of 8, each its patches
        iy, ix = active // in_w, active % in_w
        hit: dict[int, int] = {}  # touched output -> non-zeros in its patch
        for ky in range(kh):
            for kx in range(kw):
                ty, tx = iy + pad_top - ky, ix + pad_left - kx
                ok = (ty >= 0) & (tx >= 0) & (ty % stride == 0) & (tx % stride == 0)
                ok &= (ty // stride < out_h) & (tx // stride < out_w)
                for o, z in zip((ty[ok] // stride) * out_w + tx[ok] // stride, nnz[ok]):
                    hit[int(o)] = hit.get(int(o), 0) + int(z)
        touched = sorted(hit)
        m = len(touched)
        nb = _n_blocks(m, 8, par_blocks)
        nz_b = np.zeros(nb, np.int64)
        work_b = np.zeros(nb, np.int64)
        for b in range(nb):
            p0, p1 = _block(b, nb, m, 8)
            nz_b[b] = sum(hit[o] for o in touched[p0:p1])
            work_b[b] = (p1 - p0) * int(kh) * int(kw) * int(cin) * int(cout)
    elif kind in ("conv", "depthwise") and not (kind == "conv" and granularity == "pixel"):
        nb = _n_blocks(int(out_h), 1, par_blocks)
        nz_b = np.zeros(nb, np.int64)
        work_b = np.zeros(nb, np.int64)
        _row_block_loads(active, n, nnz, int(in_w), int(kh), int(kw), int(stride), int(pad_top), int(pad_left),
                         int(out_h), int(out_w), nb, int(cout), nz_b, work_b)  # fmt: skip
    elif kind == "conv":  # pixel-wise Conv2D: one parallel region per tap over its P pixels, blocks of 8
        nz_w = np.zeros(threads, np.int64)
        work_w = np.zeros(threads, np.int64)
        iy, ix = active // in_w, active % in_w
        for ky in range(kh):
            for kx in range(kw):
                ty = iy + pad_top - ky
                tx = ix + pad_left - kx
                ok = (ty >= 0) & (tx >= 0) & (ty % stride == 0) & (tx % stride == 0)
                ok &= (ty // stride < out_h) & (tx // stride < out_w)
                idx = np.flatnonzero(ok)
                m = idx.shape[0]
                if m == 0:
                    continue
                nb = _n_blocks(m, 8, par_blocks)
                nz_b = np.zeros(nb, np.int64)
                work_b = np.zeros(nb, np.int64)
                for b in range(nb):
                    p0, p1 = _block(b, nb, m, 8)
                    nz_b[b] = int(nnz[idx[p0:p1]].sum())
                    work_b[b] = (p1 - p0) * int(cin) * int(cout)
                nz_w += _blocks_to_workers(nz_b, threads)
                work_w += _blocks_to_workers(work_b, threads)
        return {"nonzeros": nz_w, "work": work_w}
    elif n == 1:  # Dense: one pixel, the output channels are split
        nb = _n_blocks(int(cout), CHANNEL_BLOCK, par_blocks)
        nz_b = np.zeros(nb, np.int64)
        work_b = np.zeros(nb, np.int64)
        for b in range(nb):
            c0, c1 = _block(b, nb, int(cout), CHANNEL_BLOCK)
            nz_b[b] = nnz[0]
            work_b[b] = int(nnz[0]) * (c1 - c0)
    else:  # pointwise: the active pixels are split (blocks of 1 element-wise, 8 pixel-wise)
        align = 8 if granularity == "pixel" else 1
        nb = _n_blocks(n, align, par_blocks)
        nz_b = np.zeros(nb, np.int64)
        work_b = np.zeros(nb, np.int64)
        for b in range(nb):
            a0, a1 = _block(b, nb, n, align)
            nz_b[b] = int(nnz[a0:a1].sum())
            work_b[b] = (a1 - a0) * int(cin) * int(cout) if align == 8 else nz_b[b] * int(cout)
    return {"nonzeros": _blocks_to_workers(nz_b, threads), "work": _blocks_to_workers(work_b, threads)}


def load_stats(loads: np.ndarray) -> dict[str, float]:
    """``max``, ``mean`` and ``imbalance = max / mean`` (1: perfectly even; ``threads``: one
    worker does everything) of per-worker loads. An all-zero load has imbalance 1."""
    loads = np.asarray(loads, np.float64)
    if loads.ndim != 1 or loads.size == 0:
        raise ValueError(f"loads must be a non-empty 1-D array, got shape {loads.shape}")
    mx, mean = float(loads.max()), float(loads.mean())
    return {"max": mx, "mean": mean, "imbalance": mx / mean if mean > 0 else 1.0}


def engine_worker_stats(layers: Iterable[Mapping], threads: int, *, key: str = "nonzeros") -> list[dict]:
    """:func:`worker_loads` + :func:`load_stats` for several layers of one frame.

    Args:
        layers: one mapping per MAC layer with ``name``, ``kind``, ``active``, ``n_active``,
            ``nnz`` and the geometry keywords of :func:`worker_loads` (missing ones take
            their defaults). For a ``DeltaEngine``, :func:`engine_frame_loads` reads them from
            ``engine.delta_of(i)`` and ``engine.program.mac_layers[i]``.
        threads: worker count.
        key: ``"nonzeros"`` or ``"work"``: which load the statistics summarise.

    Returns:
        One dict per layer: ``name``, ``max``, ``mean``, ``imbalance`` and ``loads`` (per worker).
    """
    geometry = ("in_w", "out_h", "out_w", "kh", "kw", "stride", "pad_top", "pad_left", "cout", "cin", "granularity", "par_blocks")
    out = []
    for rec in layers:
        kw = {k: rec[k] for k in geometry if k in rec}
        loads = worker_loads(rec["kind"], rec["active"], rec["n_active"], rec["nnz"], threads=threads, **kw)[key]
        out.append({"name": rec.get("name"), **load_stats(loads), "loads": loads})
    return out


def engine_frame_loads(engine) -> tuple[np.ndarray, np.ndarray]:
    """Per MAC layer of ``engine``'s last (delta) frame: max and mean non-zero deltas per worker."""
    threads = engine.threads or 1
    blocks = int(engine.program.scratch[ip.X_NZ_ROWS])  # the element-wise kernels' block budget
    layers = engine.program.mac_layers
    mx = np.zeros(len(layers))
    mean = np.zeros(len(layers))
    for i, m in enumerate(layers):
        active, rows = engine.delta_of(i)
        kh, kw, cin, cout = m.kernel_shape
        ho, wo, _ = m.out_shape
        granularity = "element" if m.op == "depthwise" else engine.granularity[m.name].split("-")[0]
        kind = "depthwise" if m.op == "depthwise" else ("pointwise" if kh == kw == 1 and m.stride == 1 else "conv")
        loads = worker_loads(
            kind, active, len(active), np.count_nonzero(rows, axis=1), threads=threads, in_w=m.in_shape[1], out_h=ho, out_w=wo,
            kh=kh, kw=kw, stride=m.stride, pad_top=m.pad_top, pad_left=m.pad_left, cout=cout, cin=cin,
            granularity=granularity, par_blocks=PAR_BLOCKS if granularity in ("pixel", "patch") else blocks,
        )["nonzeros"]  # fmt: skip
        st = load_stats(loads)
        mx[i], mean[i] = st["max"], st["mean"]
    return mx, mean
