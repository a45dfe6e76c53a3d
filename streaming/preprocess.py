"""From a camera frame to a model input: region of interest, resizing, grayscale.

One definition, used by the engine (``DeltaEngine.prepare``), every CLI that feeds frames
(``streaming.live``/``report``/``bench``) and the training-side tools that read video for a
model (``training.distill``), so a model sees the same pixels in training and at run time:

1. :class:`Crop` (``--crop x,y,w,h``) cuts a fixed box out of the full frame;
2. :func:`to_model_input` resizes it to the model's ``(H, W)`` with ``cv2.INTER_AREA``, then
   converts RGB to one channel when the model takes one (:func:`rgb_to_gray`, OpenCV's
   BT.601 luma in fixed point).

NumPy and OpenCV only (no TensorFlow): it runs where a bundle runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: ``cv2.COLOR_RGB2GRAY`` on uint8 is ``(R*r + G*g + B*b + 2**14) >> 15`` with these weights
#: (BT.601 luma 0.299/0.587/0.114 in 15-bit fixed point; a test checks it against OpenCV); a
#: TensorFlow data pipeline uses the same integers to produce bit-identical grayscale frames.
GRAY_WEIGHTS_Q15 = (9798, 19235, 3735)


@dataclass(frozen=True)
class Crop:
    """A fixed region of interest ``x, y, w, h``: pixels of the full frame, or fractions of it.

    ``Crop.parse("262,45,115,115")`` is a pixel box (all four integers);
    ``Crop.parse("0.25,0,0.5,1.0")`` is in fractions of the frame's width and height (any
    value written with a decimal point or exponent; all four must be in ``[0, 1]``). Calling
    the crop on an ``(H, W, C)`` image returns the box, C-contiguous.
    """

    x: float
    y: float
    w: float
    h: float
    fractional: bool = False

    def __post_init__(self):
        values = (self.x, self.y, self.w, self.h)
        if not all(np.isfinite(v) for v in values):
            raise ValueError(f"crop values must be finite, got {self}")
        if self.x < 0 or self.y < 0 or self.w <= 0 or self.h <= 0:
            raise ValueError(f"crop needs x, y >= 0 and w, h > 0, got {self.spec()}")
        if self.fractional and (self.x + self.w > 1 + 1e-9 or self.y + self.h > 1 + 1e-9):
            raise ValueError(f"a fractional crop must lie inside the frame (x + w <= 1, y + h <= 1), got {self.spec()}")
        if not self.fractional and not all(float(v).is_integer() for v in values):
            raise ValueError(f"a pixel crop needs integers, got {self.spec()}")

    @classmethod
    def parse(cls, text: str) -> "Crop":
        """``"x,y,w,h"`` in pixels (integers) or fractions of the frame; ``ValueError`` if malformed."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 4 or not all(parts):
            raise ValueError(f"expected x,y,w,h (pixels, or fractions of the frame), got {text!r}")
        try:
            ints = [int(p) for p in parts]
        except ValueError:
            ints = None
        if ints is not None:
            return cls(*map(float, ints), fractional=False)
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected four numbers x,y,w,h, got {text!r}") from None
        return cls(*values, fractional=True)

    def spec(self) -> str:
        """The ``x,y,w,h`` text this crop parses from."""
        if self.fractional:
            return ",".join(f"{v:g}" for v in (self.x, self.y, self.w, self.h))
        return ",".join(str(int(v)) for v in (self.x, self.y, self.w, self.h))

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` in pixels of a ``width`` x ``height`` frame; ``ValueError`` if it does not fit."""
        if self.fractional:
            x0, x1 = round(self.x * width), round((self.x + self.w) * width)
            y0, y1 = round(self.y * height), round((self.y + self.h) * height)
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"crop {self.spec()} is less than one pixel of a {width}x{height} frame")
            return x0, y0, min(x1, width), min(y1, height)
        x0, y0, x1, y1 = int(self.x), int(self.y), int(self.x + self.w), int(self.y + self.h)
        if x1 > width or y1 > height:
            raise ValueError(f"crop {self.spec()} does not fit in the {width}x{height} frame")
        return x0, y0, x1, y1

    def size(self, width: int, height: int) -> tuple[int, int]:
        """``(w, h)`` in pixels of the cropped image of a ``width`` x ``height`` frame."""
        x0, y0, x1, y1 = self.box(width, height)
        return x1 - x0, y1 - y0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box(image.shape[1], image.shape[0])
        return np.ascontiguousarray(image[y0:y1, x0:x1])


def crop_image(image: np.ndarray, crop: Crop | None) -> np.ndarray:
    """``crop(image)``, or ``image`` itself when there is no crop."""
    return image if crop is None else crop(image)


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` -> uint8 ``(H, W, 1)``: OpenCV's ``COLOR_RGB2GRAY`` (see :data:`GRAY_WEIGHTS_Q15`)."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[:, :, None]


def to_model_input(frame: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """An RGB frame as a model's input ``(H, W, C)``: uint8, ``cv2.INTER_AREA``-resized, one channel if ``C == 1``.

    A frame that already has the input's shape is returned as it is (preparing twice changes
    nothing). Non-uint8 numeric frames are rounded and clipped to 0..255.

    Raises:
        ValueError: not an ``(H, W, 3)`` frame (or ``(H, W, 1)`` for a one-channel model),
            non-numeric, or containing NaN/Inf.
    """
    frame = np.asarray(frame)
    h, w, c = (int(s) for s in input_shape)
    if frame.ndim != 3 or frame.shape[2] not in ({3, c} if c == 1 else {c}):
        want = "an RGB frame (H, W, 3) or a gray one (H, W, 1)" if c == 1 else f"an RGB frame (H, W, {c})"
        raise ValueError(f"expected {want}, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        if not np.issubdtype(frame.dtype, np.number):
            raise ValueError(f"frame dtype must be numeric, got {frame.dtype}")
        if not np.all(np.isfinite(frame)):
            raise ValueError("frame contains NaN or Inf values")
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    if frame.shape[:2] != (h, w):
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, frame.shape[2])
    if frame.shape[2] != c:
        frame = rgb_to_gray(frame)
    return np.ascontiguousarray(frame)
