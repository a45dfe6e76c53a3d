"""Video files <-> uint8 RGB arrays with OpenCV: probing, clip sampling, decoding, writing.

No TensorFlow here: this module is used by data tools, the synthetic dataset generator
and the streaming runtime, which must not pay for a TensorFlow import.

Conventions
-----------
* Frames are ``uint8`` RGB, shaped ``(T, H, W, 3)`` (OpenCV's BGR is converted at the
  boundary, in both directions).
* ``size`` is always ``(height, width)``, like array shapes (OpenCV's ``(width, height)``
  is converted at the boundary).
* A clip is ``frames`` frames taken every ``stride`` frames from ``start``: it spans
  ``(frames - 1) * stride + 1`` source frames.
* A video shorter than that span is *looped* by default (``pad="loop"``: frame indices
  wrap modulo the length, so every clip frame is a real frame of the action) or padded by
  repeating its last frame (``pad="last"``).
* Every failure to get frames out of a file (cannot open, zero frames, fewer decodable
  frames than the container promises) raises :class:`VideoError`, so the data pipeline
  can skip and count bad files with one ``except``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: file extensions treated as videos when scanning folders (compared lower-case)
VIDEO_EXTENSIONS: tuple[str, ...] = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg")

#: a container whose decodable frame count falls short of its header count by more than
#: this fraction is "truncated"; a smaller shortfall is a header estimate that is off (common
#: for mp4/webm, whose counts come from duration * fps) and is tolerated
TRUNCATION_TOLERANCE = 0.1

PAD_MODES = ("loop", "last")


class VideoError(RuntimeError):
    """A video file could not be opened or decoded (missing, corrupt, truncated, no frames)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says. ``frames`` may be 0 when the container does not know."""

    frames: int
    fps: float
    height: int
    width: int


def is_video_file(path: str | os.PathLike) -> bool:
    """True when the file name ends in one of :data:`VIDEO_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"video file {path!r} does not exist")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open video {path!r} (corrupt file or unsupported codec)")
    return cap


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read the container header of ``path`` without decoding any frame.

    Raises
    ------
    VideoError
        The file is missing or OpenCV cannot open it.
    """
    cap = _open(path)
    try:
        return VideoInfo(
            frames=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
            fps=float(cap.get(cv2.CAP_PROP_FPS)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        )
    finally:
        cap.release()


def clip_span(frames: int, stride: int) -> int:
    """Number of source frames covered by a clip: ``(frames - 1) * stride + 1``."""
    return (frames - 1) * stride + 1


def clip_indices(
    num_frames: int,
    frames: int,
    stride: int = 1,
    start: int | None = None,
    rng: np.random.Generator | None = None,
    pad: str = "loop",
) -> np.ndarray:
    """Source frame indices of one clip, shape ``(frames,)`` int64, all in ``[0, num_frames)``.

    Parameters
    ----------
    num_frames
        Length of the video in frames (>= 1).
    frames, stride
        Clip length and step between clip frames.
    start
        First source frame. ``None`` picks it: uniformly at random in
        ``[0, num_frames - span]`` when ``rng`` is given (training), otherwise the centered
        start ``(num_frames - span) // 2`` (evaluation: the same clip every time).
        Both give 0 for a video shorter than the span.
    rng
        Random generator for the training start; ignored when ``start`` is given.
    pad
        What to do with indices past the end of a short video: ``"loop"`` wraps them
        modulo ``num_frames``; ``"last"`` repeats the last frame.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frames < 1 or stride < 1:
        raise ValueError(f"frames and stride must be >= 1, got frames={frames}, stride={stride}")
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    room = max(num_frames - clip_span(frames, stride), 0)
    if start is None:
        start = int(rng.integers(0, room + 1)) if rng is not None else room // 2
    elif not 0 <= start < num_frames:
        raise ValueError(f"start={start} is outside the video's frames [0, {num_frames})")
    idx = start + stride * np.arange(frames, dtype=np.int64)
    return idx % num_frames if pad == "loop" else np.minimum(idx, num_frames - 1)


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize one ``(H, W, C)`` frame to ``size=(height, width)`` with ``cv2.INTER_AREA``.

    INTER_AREA averages source pixels when shrinking (no aliasing of textures and noise);
    ``None`` or an equal size returns the frame unchanged.
    """
    if size is None or tuple(frame.shape[:2]) == tuple(size):
        return frame
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be (height, width) >= 1, got {size!r}")
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def _to_rgb(frame_bgr: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    # resize before the colour conversion: converting fewer pixels is cheaper
    return cv2.cvtColor(resize_frame(frame_bgr, size), cv2.COLOR_BGR2RGB)


class _ShortRead(Exception):
    """Decoding stopped at frame ``decoded`` (internal)."""

    def __init__(self, decoded: int):
        super().__init__(decoded)
        self.decoded = decoded


def _decode_needed(cap: cv2.VideoCapture, needed: set[int], size) -> dict[int, np.ndarray]:
    """Decode sequentially up to ``max(needed)``; frames not needed are only ``grab()``-ed.

    Sequential decoding (no seeking) is exact for every codec; ``CAP_PROP_POS_FRAMES``
    seeking lands on key frames and is unreliable for inter-frame codecs. ``grab()``
    skips the colour conversion and the copy into a numpy array.
    """
    out: dict[int, np.ndarray] = {}
    for i in range(max(needed) + 1):
        if i in needed:
            ok, frame = cap.read()
            if ok and frame is not None:
                out[i] = _to_rgb(frame, size)
                continue
        elif cap.grab():
            continue
        raise _ShortRead(i)
    return out


def _decode_all(cap: cv2.VideoCapture, size) -> list[np.ndarray]:
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            return frames
        frames.append(_to_rgb(frame, size))


def read_clip(
    path: str | os.PathLike,
    frames: int,
    stride: int = 1,
    size: tuple[int, int] | None = None,
    start: int | None = None,
    rng: np.random.Generator | None = None,
    pad: str = "loop",
) -> np.ndarray:
    """Decode one clip of ``frames`` frames, every ``stride``-th frame, as uint8 RGB.

    Only the frames up to the last one needed are decoded, sequentially. See
    :func:`clip_indices` for ``start`` / ``rng`` / ``pad`` (random start for training when
    ``rng`` is given, centered start for evaluation otherwise, looping of short videos).

    Parameters
    ----------
    path
        Video file.
    frames, stride
        Clip length and temporal step.
    size
        ``(height, width)`` to resize every frame to (``cv2.INTER_AREA``), or ``None``.
    start, rng, pad
        Clip placement, see :func:`clip_indices`.

    Returns
    -------
    np.ndarray
        ``(frames, H, W, 3)`` uint8, RGB.

    Raises
    ------
    VideoError
        Missing or unopenable file, no decodable frame, or a truncated file (decoding stops
        more than :data:`TRUNCATION_TOLERANCE` short of the header's frame count before
        reaching the needed frames).
    """
    return _read_clip(os.fspath(path), frames, stride, size, start, rng, pad, known_frames=None)


def _read_clip(path, frames, stride, size, start, rng, pad, known_frames) -> np.ndarray:
    cap = _open(path)
    try:
        n = known_frames if known_frames is not None else int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            # the container does not know its length (some streams/webm): decode everything
            allf = _decode_all(cap, size)
            if not allf:
                raise VideoError(f"video {path!r} has no decodable frame")
            idx = clip_indices(len(allf), frames, stride, start, rng, pad)
            return np.stack([allf[i] for i in idx])
        idx = clip_indices(n, frames, stride, start, rng, pad)
        try:
            got = _decode_needed(cap, set(idx.tolist()), size)
        except _ShortRead as short:
            k = short.decoded
            if k == 0:
                raise VideoError(f"video {path!r} has no decodable frame (header says {n})") from None
            if known_frames is not None or k < (1.0 - TRUNCATION_TOLERANCE) * n:
                raise VideoError(
                    f"video {path!r} is truncated or corrupt: the header says {n} frames "
                    f"but decoding stopped at frame {k}"
                ) from None
            # the header over-counts a little (estimated length): redo with the true length
            if start is not None:
                start = min(start, k - 1)
            cap.release()
            return _read_clip(path, frames, stride, size, start, rng, pad, known_frames=k)
        return np.stack([got[i] for i in idx.tolist()])
    finally:
        cap.release()


def read_video(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    max_frames: int | None = None,
) -> np.ndarray:
    """Decode a whole video (or its first ``max_frames`` frames) as ``(T, H, W, 3)`` uint8 RGB.

    Raises
    ------
    VideoError
        Missing or unopenable file, no decodable frame, or truncated (decoding stops more than
        :data:`TRUNCATION_TOLERANCE` short of the header's frame count).
    """
    path = os.fspath(path)
    cap = _open(path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        out = []
        while max_frames is None or len(out) < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            out.append(_to_rgb(frame, size))
    finally:
        cap.release()
    if not out:
        raise VideoError(f"video {path!r} has no decodable frame")
    expected = n if max_frames is None else min(n, max_frames)
    if len(out) < (1.0 - TRUNCATION_TOLERANCE) * expected:
        raise VideoError(
            f"video {path!r} is truncated or corrupt: the header says {n} frames "
            f"but decoding stopped at frame {len(out)}"
        )
    return np.stack(out)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 25.0,
    fourcc: str = "MJPG",
    quality: int = 90,
    size: tuple[int, int] | None = None,
) -> Path:
    """Write uint8 RGB frames ``(T, H, W, 3)`` to ``path`` and return the path.

    ``fourcc="MJPG"`` (the default, used for every ``.avi`` this project writes) goes
    through OpenCV's built-in MJPEG writer: byte-for-byte deterministic, no FFmpeg needed,
    and ``quality`` (0-100) is honoured. Other codecs use OpenCV's default backend.
    ``size=(height, width)`` is only needed to write a container with zero frames.

    Raises
    ------
    VideoError
        OpenCV cannot open a writer for this path/codec.
    ValueError
        Frames are not uint8 ``(H, W, 3)`` of one size, or there are none and no ``size``.
    """
    path = Path(path)
    frames = list(frames)
    if frames:
        h, w = frames[0].shape[:2]
    elif size is not None:
        h, w = size
    else:
        raise ValueError(f"no frames to write to {str(path)!r}; pass size=(height, width) for an empty video")
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.shape != (h, w, 3):
            raise ValueError(f"frame {i} is {f.dtype} {f.shape}; expected uint8 {(h, w, 3)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    code = cv2.VideoWriter_fourcc(*fourcc)
    writer = None
    if fourcc == "MJPG":
        writer = cv2.VideoWriter(os.fspath(path), cv2.CAP_OPENCV_MJPEG, code, float(fps), (w, h))
        if writer.isOpened():
            writer.set(cv2.VIDEOWRITER_PROP_QUALITY, float(quality))
    if writer is None or not writer.isOpened():
        writer = cv2.VideoWriter(os.fspath(path), code, float(fps), (w, h))
    if not writer.isOpened():
        raise VideoError(f"cannot open a video writer for {str(path)!r} with fourcc {fourcc!r}")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
