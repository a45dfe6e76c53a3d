"""Unlabeled footage for a model: decode videos as its inputs, split them by file, cut clips.

Frames go through ``streaming.preprocess`` (crop, ``cv2.INTER_AREA`` resize, grayscale for a
one-channel model), exactly as ``DeltaEngine.prepare`` and the CLIs prepare camera frames,
so a model distilled or calibrated here sees at run time the pixels it was tuned on.
No TensorFlow here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streaming.preprocess import Crop, crop_image, to_model_input
from training.video import VideoError, read_video


@dataclass
class Footage:
    """One video as model inputs: ``frames`` uint8 ``(T, H, W, C)``."""

    path: str
    frames: np.ndarray

    @property
    def name(self) -> str:
        return Path(self.path).name


def load_footage(
    paths: list[str | os.PathLike], input_shape: tuple[int, int, int], *, crop: Crop | None = None, max_frames: int | None = None
) -> list[Footage]:
    """Decode every video (whole, or its first ``max_frames``) as model inputs of ``input_shape``.

    Raises:
        VideoError: a missing or undecodable file (named), or a crop that does not fit its frames.
    """
    out = []
    for path in paths:
        video = read_video(path, max_frames=max_frames)
        try:
            frames = np.stack([to_model_input(crop_image(f, crop), input_shape) for f in video])
        except ValueError as e:
            raise VideoError(f"{path}: {e}") from e
        out.append(Footage(os.fspath(path), frames))
    return out


def split_by_file(paths: list[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(distil, val)``: whole files, shuffled with ``seed``; at least one file in each.

    Raises ``ValueError`` with fewer than two files.
    """
    paths = list(paths)
    if len(paths) < 2:
        raise ValueError(f"need at least 2 videos to split into distillation and validation files, got {len(paths)}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = min(len(paths) - 1, max(1, round(val_fraction * len(paths))))
    val = sorted(paths[i] for i in order[:n_val])
    return [p for p in paths if p not in val], val


def sample_clips(footage: list[Footage], n: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` clips of ``frames`` consecutive frames at random places (videos weighted by length).

    A video shorter than ``frames`` is looped. Returns uint8 ``(n, frames, H, W, C)``.
    """
    lengths = np.array([len(f.frames) for f in footage], np.float64)
    which = rng.choice(len(footage), size=n, p=lengths / lengths.sum())
    clips = []
    for v in which:
        video = footage[v].frames
        start = int(rng.integers(0, max(len(video) - frames, 0) + 1))
        clips.append(video[(start + np.arange(frames)) % len(video)])
    return np.stack(clips)


def windows(footage: list[Footage], frames: int) -> np.ndarray:
    """Every video cut into consecutive, non-overlapping clips of ``frames`` (a shorter tail is
    dropped, a video shorter than ``frames`` gives none): uint8 ``(clips, frames, H, W, C)``."""
    clips = [f.frames[i : i + frames] for f in footage for i in range(0, len(f.frames) - frames + 1, frames)]
    if not clips:
        raise ValueError(f"no video has {frames} frames")
    return np.stack(clips)
