"""Drawing the live view: the video, scaled for display, with the prediction and its cost on top.

Pure OpenCV drawing on NumPy images (no window code here, so it runs headless and in tests).
The canvas is the video itself; two translucent panels sit on it:

* top left: the top-k labels of the smoothed clip prediction, with probability bars;
* bottom strip: this frame's MAC density and saved MACs (executed vs dense), fps, latency
  (frame in -> logits, and the engine's own time), dropped frames, the frame number, a
  keyframe marker, the estimated camera motion (``--motion global``), and a sparkline of recent MAC densities (keyframes left out; its top
  label is the scale).

:func:`panel_rects` gives both panels' rectangles for a canvas size (tests use it to look
for the overlay in a screenshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
GREY = (200, 200, 200)
GREEN = (90, 220, 90)      # BGR
AMBER = (40, 190, 250)
PANEL_ALPHA = 0.6
MIN_DISPLAY_WIDTH = 640


@dataclass
class OverlayInfo:
    """What one displayed frame says. Densities are fractions (0..1)."""

    top: Sequence[tuple[str, float]]   # smoothed (label, probability), best first
    mac_density: float                 # this frame: executed / dense MACs
    executed_macs: int
    dense_macs: int
    latency_ms: float                  # frame in -> logits out (resize included)
    engine_ms: float                   # the engine's own step time
    fps: float | None                  # frames shown per second, recent average
    frame: int
    dropped: int = 0
    keyframe: bool = False
    window: int = 1                    # frames the prediction is averaged over
    history: Sequence[float] = field(default_factory=list)  # recent non-keyframe MAC densities, oldest first
    camera: tuple[float, float] | None = None  # estimated camera motion (dx, dy) px/frame (--motion global), else None


def display_size(frame_wh: tuple[int, int], *, size: tuple[int, int] | None = None, scale: float | None = None) -> tuple[int, int]:
    """The canvas ``(W, H)``: ``size`` if given, else ``scale`` x the frame, else the frame
    scaled up (by an integer factor) to at least ``MIN_DISPLAY_WIDTH`` pixels wide so the
    text fits."""
    w, h = frame_wh
    if size is not None:
        return int(size[0]), int(size[1])
    if scale is None:
        scale = max(1, -(-MIN_DISPLAY_WIDTH // w))
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def _metrics(width: int) -> tuple[float, int, int]:
    """Font scale, thickness and line height for a canvas width."""
    fs = float(np.clip(width / 1100.0, 0.4, 1.0))
    th = 1 if fs < 0.75 else 2
    line = int(round(30 * fs)) + 4
    return fs, th, line


def panel_rects(width: int, height: int, k: int = 3) -> dict[str, tuple[int, int, int, int]]:
    """``{"top": (x0, y0, x1, y1), "bottom": (...)}`` of the two panels on a ``width x height`` canvas."""
    fs, th, line = _metrics(width)
    pad = max(4, line // 4)
    top_w = min(width - 2 * pad, int(440 * fs) + 2 * pad)
    top = (pad, pad, pad + top_w, min(height, pad + (k + 1) * line + pad))
    bottom = (0, max(0, height - 2 * line - 2 * pad), width, height)
    return {"top": top, "bottom": bottom}


def _shade(img: np.ndarray, rect: tuple[int, int, int, int], alpha: float = PANEL_ALPHA) -> None:
    x0, y0, x1, y1 = rect
    roi = img[y0:y1, x0:x1]
    roi[...] = (roi.astype(np.float32) * (1.0 - alpha)).astype(np.uint8)


def _fit(text: str, max_w: int, fs: float, th: int) -> str:
    """Truncate ``text`` with '..' so it fits ``max_w`` pixels."""
    if cv2.getTextSize(text, FONT, fs, th)[0][0] <= max_w:
        return text
    while len(text) > 1 and cv2.getTextSize(text + "..", FONT, fs, th)[0][0] > max_w:
        text = text[:-1]
    return text + ".."


def _macs(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}"


def _ms(x: float) -> str:
    return f"{x:.2f} ms" if x < 10 else f"{x:.1f} ms" if x < 100 else f"{x:.0f} ms"


def _sparkline(img: np.ndarray, rect: tuple[int, int, int, int], values: Sequence[float]) -> None:
    x0, y0, x1, y1 = rect
    cv2.rectangle(img, (x0, y0), (x1, y1), (90, 90, 90), 1)
    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    if v.size < 2 or x1 - x0 < 4:
        return
    top = max(0.05, float(v.max()))
    xs = np.linspace(x0 + 1, x1 - 1, v.size)
    ys = y1 - 1 - np.clip(v / top, 0, 1) * (y1 - y0 - 2)
    pts = np.stack([xs, ys], 1).round().astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [pts], False, AMBER, 1, cv2.LINE_AA)
    label, fs = f"{top:.0%}", 0.35   # the scale, left of the box's top edge
    tw = cv2.getTextSize(label, FONT, fs, 1)[0][0]
    cv2.putText(img, label, (x0 - tw - 3, y0 + 9), FONT, fs, GREY, 1, cv2.LINE_AA)


def draw_overlay(canvas: np.ndarray, info: OverlayInfo) -> np.ndarray:
    """Draw ``info`` onto a BGR ``canvas`` in place; returns it."""
    h, w = canvas.shape[:2]
    fs, th, line = _metrics(w)
    pad = max(4, line // 4)
    rects = panel_rects(w, h, max(1, len(info.top)))

    # top-k panel
    tx0, ty0, tx1, ty1 = rects["top"]
    _shade(canvas, rects["top"])
    head = f"top-{len(info.top)}, mean of {info.window} frame{'s' if info.window != 1 else ''}"
    cv2.putText(canvas, _fit(head, tx1 - tx0 - 2 * pad, fs * 0.8, 1), (tx0 + pad, ty0 + line - pad), FONT, fs * 0.8, GREY, 1, cv2.LINE_AA)
    bar_w = (tx1 - tx0) // 3
    for i, (label, prob) in enumerate(info.top):
        y = ty0 + (i + 2) * line - pad
        bx0 = tx1 - pad - bar_w
        cv2.rectangle(canvas, (bx0, y - line + 2 * pad), (bx0 + int(bar_w * float(np.clip(prob, 0, 1))), y), GREEN if i == 0 else (150, 150, 150), -1)
        cv2.rectangle(canvas, (bx0, y - line + 2 * pad), (bx0 + bar_w, y), GREY, 1)
        text = _fit(f"{prob:6.1%}  {label}", bx0 - tx0 - 2 * pad, fs, th)
        cv2.putText(canvas, text, (tx0 + pad, y), FONT, fs, WHITE if i == 0 else GREY, th, cv2.LINE_AA)

    # bottom strip: cost of this frame
    bx0, by0, bx1, by1 = rects["bottom"]
    _shade(canvas, rects["bottom"])
    spark_w = min(w // 6, 200)
    text_w = w - spark_w - 3 * pad - 30   # room for the sparkline's scale label
    saved = max(0, info.dense_macs - info.executed_macs)
    l1 = (f"MAC density {info.mac_density:.1%}   saved {_macs(saved)} / {_macs(info.dense_macs)} MACs"
          + ("" if info.camera is None else f"   camera {info.camera[0]:+.1f},{info.camera[1]:+.1f} px")
          + ("   [keyframe]" if info.keyframe else ""))
    fps = "-- fps" if not info.fps else f"{info.fps:.0f} fps" if info.fps >= 100 else f"{info.fps:.1f} fps"
    l2 = f"{fps}   latency {_ms(info.latency_ms)} (engine {_ms(info.engine_ms)})   dropped {info.dropped}   #{info.frame}"
    cv2.putText(canvas, _fit(l1, text_w, fs, th), (pad, by0 + pad + line - pad), FONT, fs, WHITE, th, cv2.LINE_AA)
    cv2.putText(canvas, _fit(l2, text_w, fs, th), (pad, by0 + pad + 2 * line - pad), FONT, fs, GREY, th, cv2.LINE_AA)
    _sparkline(canvas, (w - spark_w - pad, by0 + pad, w - pad, by1 - pad), info.history)
    return canvas


def compose(frame_rgb: np.ndarray, info: OverlayInfo, size: tuple[int, int]) -> np.ndarray:
    """The displayed image: ``frame_rgb`` resized to ``size`` ``(W, H)``, as BGR, with the overlay."""
    h, w = frame_rgb.shape[:2]
    if (w, h) != tuple(size):
        interp = cv2.INTER_AREA if size[0] * size[1] < w * h else cv2.INTER_LINEAR
        frame_rgb = cv2.resize(frame_rgb, tuple(size), interpolation=interp)
    canvas = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    return draw_overlay(canvas, info)
