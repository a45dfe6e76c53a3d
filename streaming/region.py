"""Spatial priors for region-weighted thresholds.

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

Per-worker load statistics of the parallel kernels are in :mod:`streaming.workers`.

NumPy, OpenCV and numba only: no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "motion_prior",
    "roi_prior",
    "pixel_scales",
    "layer_pixel_scales",
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
