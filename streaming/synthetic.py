"""Deterministic synthetic video: a static camera looking at a textured scene with moving objects.

Used for demos and tests, where a real camera or file is not at hand. The scene
is what delta inference is built for: a static, textured background, a few
moving objects and a little sensor noise, so most pixels barely change between
frames and a few change a lot.

``SyntheticVideo(...).frame(i)`` depends only on the parameters and ``i``, never
on which frames were generated before, so frames can be produced in any order
and the same seed always gives the same video.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

MOTIONS = ("bounce", "circle", "pan", "none")


def _triangle(p: float, lo: float, hi: float) -> float:
    """Fold ``p`` into ``[lo, hi]`` by reflecting at the ends (closed-form bouncing)."""
    span = hi - lo
    if span <= 0:
        return lo
    m = (p - lo) % (2 * span)
    return lo + (m if m <= span else 2 * span - m)


class SyntheticVideo:
    """Frame generator for a synthetic static-camera scene.

    Parameters
    ----------
    width, height : int
        Frame size in pixels.
    fps : float
        Nominal frame rate; speeds below are in pixels per second.
    seed : int
        Seeds the background, the objects' colours, sizes, paths and the noise.
    motion : {"bounce", "circle", "pan", "none"}
        ``bounce``: objects move in straight lines and bounce off the borders.
        ``circle``: objects orbit the frame centre. ``pan``: the objects bounce
        and the whole background slowly pans (every pixel changes: a hard case
        for delta inference). ``none``: static scene, only sensor noise changes.
    noise : float
        Standard deviation of the per-frame Gaussian sensor noise, in 8-bit levels.
    objects : int
        Number of moving objects.
    """

    def __init__(self, width: int = 320, height: int = 240, fps: float = 30.0, *, seed: int = 0,
                 motion: str = "bounce", noise: float = 2.0, objects: int = 1):
        if width < 8 or height < 8:
            raise ValueError(f"synthetic frame size must be at least 8x8, got {width}x{height}")
        if motion not in MOTIONS:
            raise ValueError(f"unknown synthetic motion {motion!r}; expected one of {', '.join(MOTIONS)}")
        if fps <= 0 or noise < 0 or objects < 0:
            raise ValueError("synthetic fps must be > 0, noise >= 0 and objects >= 0")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.seed, self.motion, self.noise, self.objects = int(seed), motion, float(noise), int(objects)
        rng = np.random.default_rng(self.seed)
        # a margin around the visible frame lets "pan" move a window over a larger scene
        self._margin = max(4, min(width, height) // 8) if motion == "pan" else 0
        self._bg = self._background(rng, width + 2 * self._margin, height + 2 * self._margin)
        short = min(width, height)
        self._objs = []
        for _ in range(self.objects):
            r = float(rng.uniform(0.07, 0.13) * short)
            speed = float(rng.uniform(0.25, 0.5) * short)   # px/s: crosses the frame in a few seconds
            angle = float(rng.uniform(0, 2 * math.pi))
            self._objs.append({
                "r": r,
                "x0": float(rng.uniform(r, width - r)), "y0": float(rng.uniform(r, height - r)),
                "vx": speed * math.cos(angle), "vy": speed * math.sin(angle),
                "orbit": float(rng.uniform(0.2, 0.35) * short), "phase": angle,
                "color": tuple(int(c) for c in rng.integers(0, 256, 3)),
                "accent": tuple(int(c) for c in rng.integers(0, 256, 3)),
            })

    @staticmethod
    def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
        """Smooth colour blobs plus fine texture plus a few flat 'furniture' rectangles."""
        coarse = cv2.resize(rng.random((h // 24 + 2, w // 24 + 2, 3), dtype=np.float32), (w, h),
                            interpolation=cv2.INTER_CUBIC)
        fine = cv2.resize(rng.random((h // 3 + 2, w // 3 + 2, 3), dtype=np.float32), (w, h),
                          interpolation=cv2.INTER_LINEAR)
        bg = np.clip((0.75 * coarse + 0.25 * fine) * 200 + 25, 0, 255).astype(np.uint8)
        for _ in range(5):
            x0, y0 = int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4))
            x1, y1 = x0 + int(rng.integers(4, max(5, w // 3))), y0 + int(rng.integers(4, max(5, h // 3)))
            cv2.rectangle(bg, (x0, y0), (x1, y1), tuple(int(c) for c in rng.integers(20, 236, 3)), -1)
        return bg

    def _object_center(self, o: dict, t: float) -> tuple[float, float]:
        if self.motion == "none":
            return o["x0"], o["y0"]
        if self.motion == "circle":
            a = o["phase"] + t * (o["r"] + o["orbit"]) / max(o["orbit"], 1.0)  # ~1 rad/s
            return (self.width / 2 + o["orbit"] * math.cos(a), self.height / 2 + o["orbit"] * math.sin(a))
        r = o["r"]
        return (_triangle(o["x0"] + o["vx"] * t, r, self.width - r),
                _triangle(o["y0"] + o["vy"] * t, r, self.height - r))

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as an RGB uint8 array of shape (height, width, 3), C-contiguous."""
        t = i / self.fps
        if self._margin:
            m = self._margin
            ox = int(round(_triangle(m + 0.1 * self.width * t, 0, 2 * m)))
            oy = int(round(_triangle(m + 0.05 * self.height * t, 0, 2 * m)))
            img = self._bg[oy:oy + self.height, ox:ox + self.width].copy()
        else:
            img = self._bg.copy()
        # fixed-point (shift=4) drawing gives sub-pixel motion, so slow objects still move every frame
        s = 16
        for o in self._objs:
            cx, cy = self._object_center(o, t)
            c = (int(round(cx * s)), int(round(cy * s)))
            cv2.circle(img, c, int(round(o["r"] * s)), o["color"], -1, cv2.LINE_AA, 4)
            cv2.circle(img, c, int(round(o["r"] * 0.45 * s)), o["accent"], -1, cv2.LINE_AA, 4)
        if self.noise > 0:
            # seeded by (seed, i): frame i's noise does not depend on the frames generated before it
            rng = np.random.default_rng((self.seed, i))
            n = rng.standard_normal(img.shape, dtype=np.float32) * self.noise
            img = np.clip(img.astype(np.float32) + n, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(img)
