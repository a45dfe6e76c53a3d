"""The Keras model's per-frame logits as a stream: the reference the engine is compared with.

A clip model computes a whole clip at once, which for a long stream means the whole stream
in memory (a 10,000-frame report once needed over 10 GB). The per-frame model with explicit
state (``deltanet.stream_model.stateful_frame_model``) computes the same logits one frame at a
time, carrying each delta layer's reference, so the memory is one frame's whatever the
length. Imports Keras (lazily): the engine's execution path never needs this module.
"""

from __future__ import annotations

import numpy as np


def step_stream_model(stream_model, frame: np.ndarray, states: dict) -> dict:
    """One frame ``(batch, H, W, C)`` float32 through a ``stateful_frame_model``: its outputs as numpy."""
    from deltanet.stream_model import FRAME_INPUT

    out = stream_model.predict_on_batch({FRAME_INPUT: frame, **states})   # compiled once, unlike a call
    return {k: np.asarray(v) for k, v in out.items()}


class KerasReference:
    """Per-frame logits of a Keras clip model, frame by frame, states carried (``step``/``reset``)."""

    def __init__(self, clip_model):
        from deltanet.stream_model import stateful_frame_model

        self.model = stateful_frame_model(clip_model)
        self.reset()

    def reset(self) -> None:
        """Start a new stream (every reference zero)."""
        from deltanet.stream_model import initial_states

        self.states = initial_states(self.model, batch=1)

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Logits ``(classes,)`` of one prepared frame ``(H, W, C)`` (uint8 or float, values 0..255)."""
        from deltanet.stream_model import LOGITS_OUTPUT

        out = step_stream_model(self.model, np.asarray(frame, np.float32)[None], self.states)
        self.states = {k: v for k, v in out.items() if k != LOGITS_OUTPUT}
        return out[LOGITS_OUTPUT][0]
