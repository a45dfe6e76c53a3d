"""Spatial priors for region-weighted thresholds, and per-worker load statistics.

Region-weighted thresholds (after VASparse, arXiv 2501.06553)
-------------------------------------------------------------
A threshold-mode encoder fires an element when ``|x - ref| > theta[c]``. With a cheap
spatial prior ``P(x, y)`` in ``[0, 1]`` the threshold becomes
``theta[c] * s(x, y)`` with ``s = 1 / (1 + lambda * P)``: where the prior is high (motion,
a user's region of interest) small changes are transmitted, elsewhere the background
keeps its full threshold. The encoder is :func:`ops.region._encode_threshold_pixels_scaled`
(same contract as ``ops.encode._encode_threshold_pixels`` plus a ``(H*W,)`` float32
``pixel_scale``); this module makes the priors and the per-layer scales:

* :func:`motion_prior` -- absolute frame difference (channel mean), box-blurred,
  normalised to ``[0, 1]``;
* :func:`roi_prior` -- 1 inside user boxes, 0 outside;
* :func:`pixel_scales` -- the ``(h*w,)`` scale of one layer's resolution (the prior is
  area-resized to ``(h, w)``), and :func:`layer_pixel_scales` for every encoder of a plan.

Per-worker load (from Sigma-MoE-Tiny's progressive sparsification, arXiv 2512.16248)
------------------------------------------------------------------------------------
The parallel Conv2D/depthwise kernels split the *output rows* into at most ``PAR_BLOCKS``
blocks holding about the same number of active input pixels (``ops.conv._split_row``),
pointwise/Dense kernels split the active pixels (or, for one pixel, the output
channels); numba's static schedule then gives each of the ``threads`` workers a
contiguous run of blocks (with ``PAR_BLOCKS`` equal to the thread count: one block each). When the changes cluster in one part of the frame, some workers
get much more work than others. :func:`worker_loads` reproduces that split exactly (it
calls the kernels' own helpers) and :func:`load_stats` reports ``max / mean`` per worker.

NumPy, OpenCV and numba only: no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ops.config import CHANNEL_BLOCK, PAR_BLOCKS, njit_exact
from ops.conv import _block, _row_span, _split_row, _taps

__all__ = [
    "motion_prior",
    "roi_prior",
    "pixel_scales",
    "layer_pixel_scales",
    "worker_loads",
    "load_stats",
    "engine_worker_stats",
]


# --------------------------------------------------------------------------------------
# priors
# --------------------------------------------------------------------------------------


def _box_blur(a: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return a
    import cv2

    return cv2.blur(a, (k, k), borderType=cv2.BORDER_REFLECT)


def motion_prior(
    frame: np.ndarray,
    prev_frame: np.ndarray | None,
    *,
    blur: int = 5,
    scale: float | None = None,
    floor: float = 16.0,
) -> np.ndarray:
    """Motion magnitude of a frame: ``|frame - prev_frame|`` averaged over channels, blurred, in ``[0, 1]``.

    Args:
        frame: ``(H, W)`` or ``(H, W, C)`` array (uint8 or float, same scale as ``prev_frame``).
        prev_frame: the previous frame, same shape; ``None`` (first frame) gives zeros.
        blur: box-filter size in pixels (spreads the prior over the moving object); ``<= 1``
            for none. Defaults to 5.
        scale: the difference that maps to 1 (larger values are clipped). ``None``
            normalises by the frame's largest blurred difference, but never by less than
            ``floor``, so sensor noise on a static frame is not blown up to 1.
        floor: the smallest normaliser when ``scale`` is None. Defaults to 16 (gray levels).

    Returns:
        float32 ``(H, W)`` in ``[0, 1]``.
    """
    f = np.asarray(frame, np.float32)
    if f.ndim not in (2, 3):
        raise ValueError(f"frame must be (H, W) or (H, W, C), got shape {f.shape}")
    if prev_frame is None:
        return np.zeros(f.shape[:2], np.float32)
    p = np.asarray(prev_frame, np.float32)
    if p.shape != f.shape:
        raise ValueError(f"prev_frame shape {p.shape} differs from frame shape {f.shape}")
    diff = np.abs(f - p)
    if diff.ndim == 3:
        diff = diff.mean(axis=2)
    if not np.all(np.isfinite(diff)):
        raise ValueError("frame or prev_frame contains NaN or Inf")
    diff = _box_blur(np.ascontiguousarray(diff, np.float32), int(blur))
    if scale is None:
        norm = max(float(diff.max()), float(floor))
    else:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        norm = float(scale)
    return np.clip(diff / np.float32(norm), 0.0, 1.0).astype(np.float32)


def roi_prior(shape: Sequence[int], boxes: Iterable[Sequence[float]], weights: Sequence[float] | None = None) -> np.ndarray:
    """A region-of-interest prior: ``weight`` inside each box, 0 outside (max where boxes overlap).

    Args:
        shape: ``(H, W)`` (extra trailing entries are ignored).
        boxes: ``(x0, y0, x1, y1)`` in pixels, half-open (``x0 <= x < x1``); clipped to the frame.
        weights: one value in ``[0, 1]`` per box. Defaults to 1 each.

    Returns:
        float32 ``(H, W)`` in ``[0, 1]``.
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"shape must be positive, got {tuple(shape)}")
    boxes = [tuple(b) for b in boxes]
    weights = [1.0] * len(boxes) if weights is None else [float(v) for v in weights]
    if len(weights) != len(boxes):
        raise ValueError(f"got {len(weights)} weights for {len(boxes)} boxes")
    prior = np.zeros((h, w), np.float32)
    for box, v in zip(boxes, weights):
        if len(box) != 4:
            raise ValueError(f"a box is (x0, y0, x1, y1), got {box!r}")
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"box weights must be in [0, 1], got {v}")
        x0, y0, x1, y1 = (int(round(float(c))) for c in box)
        x0, x1 = max(0, x0), min(w, x1)
        y0, y1 = max(0, y0), min(h, y1)
        if x1 > x0 and y1 > y0:
            np.maximum(prior[y0:y1, x0:x1], v, out=prior[y0:y1, x0:x1])
    return prior


def pixel_scales(prior: np.ndarray, lam: float, shape_hw: Sequence[int]) -> np.ndarray:
    """Per-pixel threshold factors ``1 / (1 + lam * P)`` at one layer's resolution.

    Args:
        prior: float ``(H0, W0)`` prior in ``[0, 1]`` (values outside are clipped).
        lam: strength ``lambda >= 0`` (0: all ones, i.e. the plain encoder).
        shape_hw: the layer's ``(h, w)``; the prior is resized with ``cv2.INTER_AREA``
            (area average when shrinking) when its size differs.

    Returns:
        float32 ``(h*w,)``, C-contiguous, in ``(0, 1]``: the ``pixel_scale`` of
        :func:`ops.region.encode_threshold_pixels_scaled` (flat index ``y*w + x``).
    """
    lam = float(lam)
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    prior = np.asarray(prior, np.float32)
    if prior.ndim != 2 or prior.size == 0:
        raise ValueError(f"prior must be a non-empty (H, W) array, got shape {prior.shape}")
    if not np.all(np.isfinite(prior)):
        raise ValueError("prior contains NaN or Inf")
    h, w = int(shape_hw[0]), int(shape_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"shape_hw must be positive, got {tuple(shape_hw)}")
    if prior.shape != (h, w):
        import cv2

        prior = cv2.resize(np.ascontiguousarray(prior), (w, h), interpolation=cv2.INTER_AREA)
    p = np.clip(prior, 0.0, 1.0)
    return np.ascontiguousarray((1.0 / (1.0 + lam * p)).reshape(h * w), np.float32)


def layer_pixel_scales(prior: np.ndarray, lam: float, shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """:func:`pixel_scales` for several layers: ``{name: (h, w[, c])}`` -> ``{name: (h*w,) float32}``.

    Layers of equal resolution share one array. For an engine plan, pass the shapes of its
    encode steps: ``{s["name"]: plan.tensors[s["output"]] for s in plan.steps if s["op"] == "encode"}``.
    """
    cache: dict[tuple[int, int], np.ndarray] = {}
    out = {}
    for name, shape in shapes.items():
        key = (int(shape[0]), int(shape[1]))
        if key not in cache:
            cache[key] = pixel_scales(prior, lam, key)
        out[name] = cache[key]
    return out


# --------------------------------------------------------------------------------------
# per-worker load of the parallel kernels
# --------------------------------------------------------------------------------------

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
    """``ops.conv._n_blocks`` with an explicit block budget."""
    chunks = (n + align - 1) // align
    return max(1, min(par_blocks, chunks))


def _blocks_to_workers(values: np.ndarray, threads: int) -> np.ndarray:
    """Sum per-block values into ``threads`` workers the way numba's static schedule
    (``gufunc_scheduler.cpp``, ``create_schedule``, default chunk size) assigns a
    ``prange`` of ``nb`` iterations: one iteration each when ``nb <= threads``, else
    contiguous runs, worker ``i`` taking ``ceil(remaining / (threads - i))``."""
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
            (``ops.conv.conv_geometry``); pointwise layers need none of them.
        cout: outputs per tap: Conv2D/pointwise ``Cout``, depthwise the depth multiplier.
        granularity: ``"element"`` (default) or ``"pixel"`` (the ``*_pix_par`` kernels;
            Conv2D then splits each tap's pixels in blocks of 8, one parallel region per tap,
            pointwise splits the pixels in blocks of 8; work = rows x ``cin`` x ``cout``).
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
    if granularity not in ("element", "pixel"):
        raise ValueError(f"granularity must be 'element' or 'pixel', got {granularity!r}")
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
    if kind in ("conv", "depthwise") and not (kind == "conv" and granularity == "pixel"):
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
            their defaults). For ``streaming.engine.DeltaEngine``'s Python runners these are
            ``src.lst``, ``src.n``, ``count_nonzero(enc.rows[:src.n], axis=1)``, ``in_w``,
            ``out.shape``, ``kernel.shape``, ``stride``, ``pad_top``, ``pad_left``.
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
