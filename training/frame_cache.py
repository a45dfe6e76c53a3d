"""Decode each training video once into a memory-mapped uint8 file; sample clips from it.

Training clips start at a random frame every epoch, so ``training.pipeline`` used to decode
every training video again every epoch (OpenCV, inside the tf.data pipeline), on the same
cores as the training step. A :class:`FrameCache` holds every frame of every video at the
training size, decoded and resized exactly as :func:`training.video.read_video` does
(``cv2.INTER_AREA``, RGB): one raw ``(frames, H, W, 3)`` uint8 file, memory-mapped, plus a
JSON index of each video's first frame and length. A clip is then ``frames[offset + idx]``,
a copy of a few hundred kilobytes, with ``idx`` from :func:`training.video.clip_indices`
and the same seeded generator as before, so the clips are the same as decoding them:
the pipeline's semantics do not change. (The one difference: a video whose container
over-counts its frames within ``TRUNCATION_TOLERANCE`` is sampled over its decoded length,
where ``read_clip`` uses the header's count when the clip happens to fit in the decoded part.)

The embedded training split (560 videos x 32 frames at 112x112) is 674 MB. Files are keyed
by everything that determines their content (paths, sizes and modification times of the
videos, the frame size, the format version), so a cache of other videos is never read
back; they are written under a temporary name and renamed, so an interrupted build leaves
nothing that could be taken as complete. Videos that cannot be decoded are recorded with
length 0 and their error; the pipeline skips and counts them as it does for files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from training.video import VideoError, clip_indices, read_video

FORMAT_VERSION = 1


def default_folder() -> Path:
    """``<cache>/frames`` (``$DELTANET_CACHE`` or ``~/.cache/deltanet``)."""
    from training.synthetic import cache_base

    return cache_base() / "frames"


def _key(paths: Sequence[str], size: tuple[int, int]) -> str:
    files = []
    for p in paths:
        try:
            st = os.stat(p)
            files.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([p, None, None])  # missing now: keyed as missing, recorded as an error
    blob = json.dumps(dict(version=FORMAT_VERSION, size=list(size), files=files), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class FrameCache:
    """Every frame of ``paths`` at ``size``, memory-mapped. Build or open with :meth:`load`.

    Attributes
    ----------
    frames
        ``np.memmap`` of shape ``(total frames, H, W, 3)``, uint8, read-only.
    offsets, lengths
        Per video (in ``paths`` order): its first row in ``frames`` and its frame count
        (0 when it could not be decoded; ``errors`` says why).
    """

    def __init__(self, data_path: Path, index: dict):
        self.paths: list[str] = index["paths"]
        self.size = tuple(index["size"])
        self.lengths = np.asarray(index["lengths"], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.errors: dict[str, str] = index["errors"]
        total = int(self.lengths.sum())
        shape = (total, *self.size, 3)
        # np.memmap cannot map an empty file: a cache where nothing decoded is an empty array
        self.frames = np.memmap(data_path, np.uint8, "r", shape=shape) if total else np.zeros(shape, np.uint8)
        self._row = {p: i for i, p in enumerate(self.paths)}

    @classmethod
    def load(
        cls,
        paths: Sequence[str | os.PathLike],
        size: Sequence[int],
        folder: str | os.PathLike | None = None,
        *,
        workers: int | None = None,
        progress: bool = True,
    ) -> FrameCache:
        """The cache of ``paths`` at ``size=(height, width)`` in ``folder``, built first if absent.

        ``folder`` defaults to :func:`default_folder`; ``workers`` decoding threads (default:
        the usable CPUs; OpenCV releases the GIL while decoding and resizing).
        """
        paths = [os.fspath(p) for p in paths]
        size = (int(size[0]), int(size[1]))
        folder = Path(folder) if folder is not None else default_folder()
        stem = folder / f"frames-{size[0]}x{size[1]}-{_key(paths, size)}"
        data_path, index_path = stem.with_suffix(".u8"), stem.with_suffix(".json")
        if not index_path.exists():  # the index is renamed into place last: it marks a complete cache
            _build(paths, size, data_path, index_path, workers, progress)
        return cls(data_path, json.loads(index_path.read_text()))

    def clip(self, path: str, frames: int, stride: int, rng: np.random.Generator | None, pad: str) -> np.ndarray:
        """One clip ``(frames, H, W, 3)`` of ``path``, as ``read_clip`` would decode it.

        Raises ``VideoError`` for a video that could not be decoded (or is not in the cache).
        """
        row = self._row.get(path)
        if row is None:
            raise VideoError(f"video {path!r} is not in the frame cache")
        n = int(self.lengths[row])
        if n == 0:
            raise VideoError(self.errors.get(path, f"video {path!r} has no decodable frame"))
        return np.asarray(self.frames[self.offsets[row] + clip_indices(n, frames, stride, rng=rng, pad=pad)])

    @property
    def nbytes(self) -> int:
        return int(self.frames.nbytes)


def _build(paths: list[str], size: tuple[int, int], data_path: Path, index_path: Path, workers, progress: bool) -> None:
    from tqdm import tqdm

    from training.synthetic import _cpus

    data_path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    tmp_data = data_path.with_name(f"{data_path.name}.{pid}.tmp")
    tmp_index = index_path.with_name(f"{index_path.name}.{pid}.tmp")

    def decode(path: str):
        try:
            return read_video(path, size), None
        except (VideoError, cv2.error, OSError) as e:
            return None, str(e)

    lengths, errors = [], {}
    try:
        with open(tmp_data, "wb") as out, ThreadPoolExecutor(workers or _cpus()) as pool, tqdm(
            total=len(paths), desc="frame cache", unit="video", file=sys.stderr, disable=not progress
        ) as bar:
            # pool.map keeps the order, so the file is written sequentially, one video after another
            for path, (video, error) in zip(paths, pool.map(decode, paths)):
                if video is None:
                    lengths.append(0)
                    errors[path] = error
                else:
                    out.write(np.ascontiguousarray(video).tobytes())
                    lengths.append(len(video))
                bar.update()
        tmp_index.write_text(json.dumps(dict(version=FORMAT_VERSION, size=list(size), paths=paths,
                                             lengths=lengths, errors=errors)))
        os.replace(tmp_data, data_path)
        os.replace(tmp_index, index_path)  # last: from here on the cache is complete
    finally:
        tmp_data.unlink(missing_ok=True)
        tmp_index.unlink(missing_ok=True)
