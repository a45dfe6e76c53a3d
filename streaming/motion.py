"""Global camera motion, frame by frame: phase correlation on a downscaled gray frame.

``CameraTracker.update(frame)`` takes a model-input frame (uint8 ``(H, W, C)``, what
``DeltaEngine.prepare`` returns) and says how far the scene moved, how sure it is, whether the
frame is a scene cut, and the accumulated **integer** placement of the frame in world
coordinates (what ``streaming.canvas`` pastes the frame at).

Why it is built this way:

* ``cv2.phaseCorrelate`` with a Hanning window on the frame downscaled 2x (an exact 2x2 mean;
  frames under 96 px are used as they are):
  one FFT pair, ~0.1-0.2 ms at 112x112, and its peak response is a confidence for free. The
  sub-pixel estimate at half resolution is good to ~0.3 input pixels (measured on a real frame).
* Shifts are measured against an **anchor** (the frame at which the placement last changed),
  not the previous frame: on a static camera the estimate stays near 0 instead of summing
  per-frame noise into a random walk, so the placement never moves (the engine then takes the
  plain path: bit-identical output). A slow pan still accumulates: the shift against the
  anchor grows until it passes the deadband.
* The coarse estimate is refined at full resolution by a truncated absolute difference (robust
  to a bright foreground object), which must clearly beat "no shift" to count as camera motion.
* A low response means "no reliable global motion" (a moving foreground object, noise, a
  non-rigid scene): the placement stays and the anchor is renewed. A frame that no shift
  aligns with the anchor (most pixels still differ) is a scene cut: ``refresh``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ops import shift_search


#: a shift is camera motion only if it lowers the frame difference to this fraction of standing still's
MIN_GAIN = 0.75
#: integer steps the refinement may walk from the coarse estimate
WALK = 2
#: gray levels at which a pixel's difference stops counting more (robust to foreground objects)
TRUNCATE = 24.0


@dataclass(frozen=True)
class Motion:
    """The camera motion of one frame.

    ``dx, dy``: the scene's estimated shift since the previous frame, in model-input pixels
    (positive: content moved right / down). ``confidence``: phase-correlation response against
    the anchor (0: none, ~1: a clean shift). ``refresh``: a scene cut (or the tracker's first
    frame after a cut). ``offset_x, offset_y``: the accumulated integer shift of the content
    since the stream (or the last refresh) began.
    """

    dx: float
    dy: float
    confidence: float
    refresh: bool
    offset_x: int
    offset_y: int

    @property
    def moved(self) -> bool:
        """Whether the integer placement differs from the start (camera motion was detected)."""
        return self.offset_x != 0 or self.offset_y != 0


class CameraTracker:
    """Estimate global integer-pixel camera translation on a stream of model-input frames.

    Args:
        shape: the frames' ``(H, W)`` or ``(H, W, C)`` (the model's input).
        min_confidence: phase-correlation response below which no motion is taken (the
            placement stays, the anchor is renewed). Defaults to 0.2.
        deadband: the shift against the anchor, in input pixels, needed to move the placement
            (rounded to whole pixels); above 0.5 so that noise around half a pixel does not
            toggle it. Defaults to 0.6.
        cut_level: mean truncated gray difference (0..``TRUNCATE``) to the anchor that remains
            *after* the best alignment and makes the frame a scene cut. Defaults to 16 (two thirds
            of ``TRUNCATE``; moving real clips stay under ~13 at 112x112, a real cut reads ~24).
    """

    def __init__(self, shape, *, min_confidence: float = 0.2, deadband: float = 0.6, cut_level: float = 16.0):
        h, w = int(shape[0]), int(shape[1])
        if h < 8 or w < 8:
            raise ValueError(f"frames must be at least 8x8 for motion estimation, got {(h, w)}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        if not deadband >= 0.5:
            raise ValueError(f"deadband must be >= 0.5 (pixels), got {deadband!r}")
        if not 0 < cut_level <= TRUNCATE:
            raise ValueError(f"cut_level must be in (0, {TRUNCATE:g}], got {cut_level!r}")
        self.shape = (h, w)
        self.min_confidence = float(min_confidence)
        self.deadband = float(deadband)
        self.cut_level = float(cut_level)
        # half resolution (an exact 2x2 mean) where the frame is large enough to keep its detail
        self._factor = 2 if min(h, w) >= 96 else 1
        self._small = (w // self._factor, h // self._factor)
        self._window = cv2.createHanningWindow(self._small, cv2.CV_32F)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next frame is the new origin."""
        # Plain Python numbers, not small NumPy arrays: a 2-vector op costs ~1 us in NumPy, and
        # the tracker's budget is 0.2 ms per frame (the arithmetic is the same IEEE doubles).
        self._anchor = None  # (half-resolution, full-resolution) gray of the anchor frame
        self._residual = (0.0, 0.0)  # the anchor's true position minus its integer placement
        self._offset = (0, 0)
        self._position = (0.0, 0.0)  # the previous frame's true (float) position

    def _gray(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frame in gray at the estimation's resolution (float32) and at full resolution (uint8)."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[:2] != self.shape or frame.dtype != np.uint8:
            frame = np.asarray(frame)
            raise ValueError(f"expected a uint8 frame of size {self.shape}, got {frame.dtype} {frame.shape}")
        g = np.ascontiguousarray(frame[:, :, 0]) if frame.shape[2] == 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        small = g if self._factor == 1 else cv2.resize(g, self._small, interpolation=cv2.INTER_AREA)
        return small.astype(np.float32), g  # uint8 at full resolution: the refinement's costs are cheaper

    def update(self, frame: np.ndarray) -> Motion:
        """One frame (uint8, the model's input size); returns its ``Motion``."""
        grays = self._gray(frame)
        if self._anchor is None:
            self._anchor = grays
            return Motion(0.0, 0.0, 1.0, False, 0, 0)
        (sx, sy), response = cv2.phaseCorrelate(self._anchor[0], grays[0], self._window)
        response = float(min(max(response, 0.0), 1.0))
        shift, left = refine_shift(self._anchor[1], grays[1], self._factor * sx, self._factor * sy)
        if shift is None:  # the coarse estimate led nowhere: look around "no shift" instead
            shift, left = refine_shift(self._anchor[1], grays[1], 0.0, 0.0)
        if left > self.cut_level:  # no shift explains the frame: a scene cut
            self.reset()
            self._anchor = grays
            return Motion(0.0, 0.0, response, True, 0, 0)
        ox, oy = self._offset
        if shift is None or response < self.min_confidence:
            # no reliable global motion: keep the placement, measure from this frame on
            self._anchor = grays
            self._residual = (0.0, 0.0)
            return self._motion(float(ox), float(oy), response)
        # the anchor's placement to this frame, input pixels
        tx, ty = shift[0] + self._residual[0], shift[1] + self._residual[1]
        if max(abs(tx), abs(ty)) >= self.deadband:
            step_x, step_y = round(tx), round(ty)  # half to even, as np.rint
            self._offset = ox, oy = ox + step_x, oy + step_y
            self._residual = (tx - step_x, ty - step_y)
            self._anchor = grays
            return self._motion(ox + self._residual[0], oy + self._residual[1], response)
        return self._motion(ox + tx, oy + ty, response)

    def _motion(self, x: float, y: float, response: float) -> Motion:
        px, py = self._position
        self._position = (x, y)
        return Motion(x - px, y - py, response, False, self._offset[0], self._offset[1])


def refine_shift(anchor: np.ndarray, frame: np.ndarray, sx: float, sy: float) -> tuple[tuple[float, float] | None, float]:
    """Refine a coarse shift estimate at full resolution.

    Returns ``(shift, left)``: the integer shift of least truncated absolute difference next to
    ``(sx, sy)`` (if clearly better than no shift, else 0), plus an equiangular (V) fit of the
    neighbours on each axis for the fraction (``frame(x) ~ anchor(x - shift)``); ``left`` is the
    mean truncated difference that remains at that integer shift (0..``TRUNCATE``).
    ``shift`` is ``None`` if it leaves too little overlap to compare, or if the walk to the minimum
    leaves it (``left`` is then ``TRUNCATE``, or the difference at ``(sx, sy)``).

    Half-resolution phase correlation is biased towards whole half-pixels (a 1 px pan reads as
    0.7..1.4 px); the refinement makes a pure integer pan exact. The walk runs compiled
    (``ops.shift_search``): one call instead of a Python round trip per candidate shift.
    """
    return shift_search.refine_shift(anchor, frame, sx, sy, WALK, TRUNCATE, MIN_GAIN)
