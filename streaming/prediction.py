"""What a stream shows as its prediction: the softmax of the mean logits of the last frames.

One definition, used by ``streaming.live`` (the window and its JSON lines) and by
``training.evaluate --streaming`` (which scores exactly what a live run would show).

The default window is three times the clip length the model was trained on (12 frames for
the default 4-frame clips). Chosen on the embedded dataset's *validation* split
(``python scripts/window_choice.py``, 2026-12-01, docs/evaluation.md): with the training clip
length itself (4 consecutive frames, while training clips span 7 frames at stride 2) the
streaming accuracy at a video's last frame was 0.887 against 0.921 for clips; 7-8 frames gave
0.938-0.944, and 12 was the smallest window reaching the best value (0.963; 16 and 32 the
same) for both a 4-frame and an 8-frame model. Longer windows react later to a change of
action (12 frames are 0.48 s at 25 fps); ``--window`` overrides it.
"""

from __future__ import annotations

from collections import deque

import numpy as np

#: when the model does not say how many frames it was trained on
DEFAULT_WINDOW = 12
#: the default window is this many training clips long
CLIPS_PER_WINDOW = 3


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax of a logit vector (float64, numerically safe)."""
    z = np.asarray(x, np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def default_window(info: dict) -> int:
    """The smoothing window a model implies: ``CLIPS_PER_WINDOW`` times its training clip length."""
    try:
        frames = int(info.get("frames") or 0)
        return CLIPS_PER_WINDOW * frames if frames > 0 else DEFAULT_WINDOW
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

    @property
    def frames(self) -> int:
        """Frames the current prediction averages (up to ``window``)."""
        return len(self._ring)

    def update(self, logits: np.ndarray) -> np.ndarray:
        self._ring.append(np.asarray(logits))
        return softmax(np.mean(self._ring, axis=0))

    def run(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities after every frame of a ``(frames, classes)`` logit array, from a reset."""
        self.reset()
        return np.stack([self.update(row) for row in np.asarray(logits)])
