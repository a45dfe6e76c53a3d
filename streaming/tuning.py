"""Choosing the delta MAC kernel per layer by measurement (the issue's "from measured density").

Element-wise scatter wins when few channels of an active pixel changed; pixel-wise gather +
dense product wins when active pixels change in most channels. Which one holds depends on
the layer and the video, so it is measured: run the same frames with each kernel choice and
keep, for each MAC layer, the fastest median time (its encoder included). The kernel choice
is a per-frame parameter of the interpreter, so one profiled engine measures every choice.
"""

from __future__ import annotations

import numpy as np

from streaming.engine import GRANULARITIES, KERNEL_CHOICES, DeltaEngine
from streaming.plan import Plan


def measure_layer_ms(engine: DeltaEngine, frames: np.ndarray, granularity: str, repeats: int = 2) -> np.ndarray:
    """Median per-MAC-layer milliseconds over ``frames`` (after the first) at one kernel choice.

    ``engine`` must profile (``profile=True``); its kernel choice is changed to ``granularity``.
    """
    if not engine.profile:
        raise ValueError("measure_layer_ms needs an engine built with profile=True")
    engine.granularity = granularity
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
    engine = DeltaEngine(plan, threads=threads, profile=True)
    times = {g: measure_layer_ms(engine, frames, g) for g in choices}
    return {n: min(choices, key=lambda g: times[g][i]) for i, n in enumerate(engine.layer_names)}
