"""Statistics of ``streaming.bench``: per-frame times and speedups, whole-run and paired by block.

The benchmark times contenders in interleaved blocks of the same frames (block ``b`` of every contender,
then block ``b + 1``, the order flipped every block). A load spike on this shared machine lands in
a few blocks of whichever contender ran then; the ratio of whole-run medians absorbs it only if it
hit both sides alike. The paired figure does not need that: for every block, the other contender's
median over the block divided by the delta engine's median over the same frames, run next to it;
then the median of those per-block ratios (and their quartiles).
"""

from __future__ import annotations

import numpy as np

#: speedup key -> the contenders it compares against (vs_keras: whichever of the two is faster)
SPEEDUPS = {
    "vs_dense_engine": ("dense_engine",),
    "vs_keras": ("keras", "keras_nojit"),
    "vs_tflite": ("tflite",),
    "vs_tflite_int8": ("tflite_int8",),
    "vs_onnxruntime": ("onnxruntime",),
}


def ms_stats(ms) -> dict[str, float]:
    """``{median, mean, p90}`` of per-frame milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timed frames")
    return {"median": float(np.median(a)), "mean": float(a.mean()), "p90": float(np.percentile(a, 90))}


def paired_ratios(base_blocks: list[list[float]], other_blocks: list[list[float]]) -> np.ndarray:
    """Per block: median of ``other``'s frame times / median of ``base``'s (blocks empty on either side skipped)."""
    if len(base_blocks) != len(other_blocks):
        raise ValueError(f"{len(base_blocks)} blocks against {len(other_blocks)}")
    return np.array([np.median(o) / np.median(b) for b, o in zip(base_blocks, other_blocks) if len(b) and len(o)])


def speedups(blocks: dict[str, list[list[float]]], base: str = "delta_engine") -> dict[str, dict]:
    """Every ``SPEEDUPS`` entry whose contender ran: how many times faster ``base`` was.

    ``of_medians``: the other's median ms per frame / ``base``'s, over the whole run; ``paired``: the
    median of the per-block ratios (``paired_iqr`` their quartiles, ``blocks`` how many).
    """
    medians = {name: ms_stats(np.concatenate(b))["median"] for name, b in blocks.items()}
    out = {}
    for key, candidates in SPEEDUPS.items():
        ran = [c for c in candidates if c in blocks]
        if not ran:
            continue
        other = min(ran, key=medians.get)
        r = paired_ratios(blocks[base], blocks[other])
        entry = {
            "of_medians": medians[other] / medians[base],
            "paired": float(np.median(r)),
            "paired_iqr": [float(np.percentile(r, 25)), float(np.percentile(r, 75))],
            "blocks": int(r.size),
        }
        if len(candidates) > 1:
            entry["against"] = other
        out[key] = entry
    return out
