"""Choosing the delta MAC granularity per layer by measurement (the issue's "from measured density").

Element-wise scatter wins when few channels of an active pixel changed; pixel-wise gather +
dense product wins when active pixels change in most channels. Which one holds depends on
the layer and the video, so it is measured: run the same frames both ways and keep, for
each MAC layer, the faster median time (its encoder included).
"""

from __future__ import annotations

import numpy as np

from streaming.engine import GRANULARITIES, KERNEL_CHOICES, DeltaEngine
from streaming.plan import Plan


def measure_layer_ms(plan: Plan, frames: np.ndarray, granularity: str, threads: int | None = None, repeats: int = 2) -> np.ndarray:
    """Median per-MAC-layer milliseconds over ``frames`` (after the first) at one granularity."""
    # profile=True: the compiled frame loop does not time layers (its layer_ms is NaN)
    engine = DeltaEngine(plan, granularity=granularity, threads=threads, profile=True)
    engine.warmup()
    per_frame = []
    for _ in range(repeats):
        engine.reset()
        for f in frames:
            _, s = engine.step(f)
            if not s.keyframe:
                per_frame.append(s.layer_ms)
    return np.median(np.stack(per_frame), axis=0)


def tune_granularity(plan: Plan, frames: np.ndarray, threads: int | None = None) -> dict[str, str]:
    """``{mac layer name: kernel choice}``, whichever measured fastest on ``frames``.

    With ``threads > 1`` the parallel variants compete too: a parallel region costs
    microseconds to open, which only large layers pay back.
    """
    if len(frames) < 2:
        raise ValueError("tune_granularity needs at least 2 frames")
    choices = KERNEL_CHOICES if threads and threads > 1 else GRANULARITIES
    times = {g: measure_layer_ms(plan, frames, g, threads) for g in choices}
    names = [s["name"] for s in plan.mac_steps()]
    return {n: min(choices, key=lambda g: times[g][i]) for i, n in enumerate(names)}
