"""Tiny real video files and fake dataset trees for tests (real cv2 files, no mocks).

* :func:`write_video` - write uint8 RGB frames to a file (MJPG .avi by default).
* :func:`index_frames` / :func:`frame_index` - frames whose grey level encodes their index,
  so a test can tell which source frames a decoded clip came from (robust to JPEG).
* :func:`make_fake_ucf101` - the official UCF101 layout (``UCF-101/`` + ``ucfTrainTestlist/``)
  with the ``HandstandPushups``/``HandStandPushups`` quirk and chosen broken files.
* :func:`make_class_folders` - a ``ROOT/<class>/<video>`` tree.
* :func:`corrupt_file` - turn a good video into a garbage, truncated, empty or zero-frame one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.video import write_video  # noqa: F401  (re-exported for tests)

#: grey level of frame i is INDEX_BASE + INDEX_STEP * i (MJPEG keeps flat frames within ~2)
INDEX_BASE = 8
INDEX_STEP = 6

#: the class whose folder/file spelling on disk differs from classInd.txt in real UCF101
QUIRK_LIST_NAME = "HandstandPushups"
QUIRK_DISK_NAME = "HandStandPushups"

BAD_KINDS = ("garbage", "truncated", "empty", "zero_frames", "missing")


def solid_frames(n: int, size: tuple[int, int], rgb: Sequence[int]) -> np.ndarray:
    """``n`` frames of one RGB colour, ``(n, H, W, 3)`` uint8."""
    out = np.empty((n, size[0], size[1], 3), np.uint8)
    out[...] = np.asarray(rgb, np.uint8)
    return out


def index_frames(n: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """``n`` flat grey frames, frame ``i`` at level ``INDEX_BASE + INDEX_STEP * i`` (n <= 41)."""
    if INDEX_BASE + INDEX_STEP * (n - 1) > 255:
        raise ValueError(f"at most {(255 - INDEX_BASE) // INDEX_STEP + 1} index frames, got {n}")
    levels = INDEX_BASE + INDEX_STEP * np.arange(n)
    return np.broadcast_to(levels[:, None, None, None], (n, size[0], size[1], 3)).astype(np.uint8)


def frame_index(frame: np.ndarray) -> int:
    """Inverse of :func:`index_frames` for one decoded frame."""
    return int(round((float(np.mean(frame)) - INDEX_BASE) / INDEX_STEP))


def corrupt_file(path: str | os.PathLike, kind: str, size: tuple[int, int] = (32, 32)) -> None:
    """Damage the video at ``path`` in place (``kind`` in :data:`BAD_KINDS`).

    ``garbage``: random bytes; ``truncated``: the first 30% of the file (the header still
    promises every frame); ``empty``: zero bytes; ``zero_frames``: a valid container with no
    frame; ``missing``: delete the file.
    """
    path = Path(path)
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.3)])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_frames":
        write_video(path, [], size=size)
    elif kind == "missing":
        path.unlink(missing_ok=True)
    else:
        raise ValueError(f"unknown corruption kind {kind!r}; expected one of {BAD_KINDS}")


@dataclass
class FakeUCF101:
    """What :func:`make_fake_ucf101` wrote."""

    root: Path
    videos_dir: Path
    lists_dir: Path
    classes: list[str]
    #: split -> list of list-style relative paths ("Class/v_Class_g01_c01.avi")
    train: dict[int, list[str]] = field(default_factory=dict)
    test: dict[int, list[str]] = field(default_factory=dict)
    #: list-style relative path -> corruption kind
    bad: dict[str, str] = field(default_factory=dict)
    #: list-style relative path -> RGB colour of its frames
    colors: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def disk_path(self, rel: str) -> Path:
        """Where a list entry lives on disk (applies the HandStandPushups spelling)."""
        return self.videos_dir / rel.replace(QUIRK_LIST_NAME, QUIRK_DISK_NAME)


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct, JPEG-stable RGB colour per class index."""
    palette = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (220, 200, 40), (200, 40, 200), (40, 200, 200)]
    return palette[label % len(palette)]


def make_fake_ucf101(
    root: str | os.PathLike,
    classes: Sequence[str] = ("ApplyEyeMakeup", QUIRK_LIST_NAME, "YoYo"),
    groups: Sequence[int] = (1, 2, 3),
    clips: int = 2,
    frames: int = 12,
    size: tuple[int, int] = (32, 32),
    corrupt: Mapping[str, str] | None = None,
    quirk: bool = True,
) -> FakeUCF101:
    """Write a small tree in the official UCF101 layout and return what is where.

    ``ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (solid frames of the class colour) and
    ``ROOT/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt`` for N = 1..3, where
    split N tests on the groups ``g`` with ``(g - 1) % 3 == N - 1`` and trains on the rest.
    With ``quirk`` the class ``HandstandPushups`` is stored on disk as ``HandStandPushups``
    (folder and file names), exactly like the real dataset.

    ``corrupt`` maps list-style relative paths (``"YoYo/v_YoYo_g01_c01.avi"``) to a kind of
    :data:`BAD_KINDS`; those files are still listed in the split files.
    """
    root = Path(root)
    videos_dir, lists_dir = root / "UCF-101", root / "ucfTrainTestlist"
    lists_dir.mkdir(parents=True, exist_ok=True)
    fake = FakeUCF101(root, videos_dir, lists_dir, list(classes))
    rels: list[tuple[str, int, int]] = []  # (rel, label, group)
    for label, cls in enumerate(classes):
        for g in groups:
            for c in range(1, clips + 1):
                rel = f"{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi"
                rels.append((rel, label, g))
                fake.colors[rel] = class_color(label)
                disk_rel = rel.replace(QUIRK_LIST_NAME, QUIRK_DISK_NAME) if quirk else rel
                write_video(videos_dir / disk_rel, solid_frames(frames, size, class_color(label)))
    for rel, kind in (corrupt or {}).items():
        if rel not in fake.colors:
            raise ValueError(f"corrupt names {rel!r}, which is not one of the generated videos")
        disk_rel = rel.replace(QUIRK_LIST_NAME, QUIRK_DISK_NAME) if quirk else rel
        corrupt_file(videos_dir / disk_rel, kind, size)
        fake.bad[rel] = kind
    (lists_dir / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for split in (1, 2, 3):
        test = [(r, lab) for r, lab, g in rels if (g - 1) % 3 == split - 1]
        train = [(r, lab) for r, lab, g in rels if (g - 1) % 3 != split - 1]
        fake.train[split] = [r for r, _ in train]
        fake.test[split] = [r for r, _ in test]
        # the real files use CRLF line ends; keep that so the parser is tested on it
        (lists_dir / f"trainlist0{split}.txt").write_bytes(
            "".join(f"{r} {lab + 1}\r\n" for r, lab in train).encode()
        )
        (lists_dir / f"testlist0{split}.txt").write_bytes("".join(f"{r}\r\n" for r, _ in test).encode())
    return fake


def make_class_folders(
    root: str | os.PathLike,
    classes: Mapping[str, int],
    frames: int = 6,
    size: tuple[int, int] = (16, 16),
    ext: str = ".avi",
) -> dict[str, list[Path]]:
    """Write ``ROOT/<class>/<class>_NNN<ext>`` for ``classes = {name: number of videos}``.

    Videos are solid frames of the class colour (class index in sorted order). Returns
    ``{class: [paths]}``.
    """
    root = Path(root)
    out: dict[str, list[Path]] = {}
    for label, name in enumerate(sorted(classes)):
        out[name] = [
            write_video(root / name / f"{name}_{i:03d}{ext}", solid_frames(frames, size, class_color(label)))
            for i in range(classes[name])
        ]
    return out
