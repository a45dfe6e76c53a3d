"""What a stream shows as its prediction: the softmax of the mean logits of the last frames.

One definition, used by ``streaming.live`` (the window and its JSON lines) and by
``training.evaluate --streaming`` (which scores exactly what a live run would show). The
model was trained on the mean of per-frame logits over ``info["frames"]`` frames, so that is
the default window.
"""

from __future__ import annotations

from collections import deque

import numpy as np

#: when the model does not say how many frames it was trained on
DEFAULT_WINDOW = 8


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax of a logit vector (float64, numerically safe)."""
    z = np.asarray(x, np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def default_window(info: dict) -> int:
    """The smoothing window a model implies: the clip length it was trained on."""
    try:
        return max(1, int(info.get("frames") or DEFAULT_WINDOW))
    except (TypeError, ValueError):
        return DEFAULT_WINDOW


class SmoothedPrediction:
    """Running prediction over a stream: ``update(logits)`` returns this frame's probabilities."""

    def __init__(self, window: int):
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.window = int(window)
        self._ring: deque = deque(maxlen=self.window)

    def reset(self) -> None:
        """A new stream: forget the frames seen so far."""
        self._ring.clear()

    def update(self, logits: np.ndarray) -> np.ndarray:
        self._ring.append(np.asarray(logits))
        return softmax(np.mean(self._ring, axis=0))

    def run(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities after every frame of a ``(frames, classes)`` logit array, from a reset."""
        self.reset()
        return np.stack([self.update(row) for row in np.asarray(logits)])
