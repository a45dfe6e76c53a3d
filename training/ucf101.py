"""Where the videos are: UCF101 (official layout), class-folder trees and TFDS names.

Everything is turned into one :class:`DatasetIndex` (class names + ``(path, label)``
lists for training and validation) by :func:`load_dataset_index`. TensorFlow Datasets
sources carry only their name and class names here (TFDS yields decoded examples, not
files); ``training.pipeline.make_train_val_datasets`` builds the data for both kinds.

Accepted ``data`` strings
-------------------------
``"tfds:NAME"``
    A TensorFlow Datasets name, e.g. ``tfds:ucf101/ucf101_1_256``. The bare name
    ``tfds:ucf101`` means ``ucf101/ucf101_1_256`` for split 1 and ``ucf101/ucf101_N``
    for split N = 2, 3 (the configs TFDS provides).
``"embedded"``
    The built-in synthetic action dataset (generated once, cached; see
    ``training.synthetic``). Write ``./embedded`` for a folder of that name.
A UCF101 root, any of
    * ``ROOT/UCF-101/<Class>/*.avi`` with ``ROOT/ucfTrainTestlist/`` (the two official
      archives extracted side by side; ``UCF101/`` is accepted for ``UCF-101/``);
    * ``ROOT`` = the folder holding the class folders, with ``ucfTrainTestlist/`` inside
      it or beside it (in its parent).
    ``ucfTrainTestlist`` must hold ``classInd.txt``, ``trainlist0N.txt`` and
    ``testlist0N.txt``. Labels are 0-based (``classInd.txt`` is 1-based). The official test
    list of the split is used as the validation set (UCF101 has no separate validation
    split). List entries are matched to files case-insensitively, which also finds the
    ``HandstandPushups`` class stored on disk as ``HandStandPushups``. Listed files that
    do not exist are skipped, counted in :attr:`DatasetIndex.missing` and warned about.
A class-folder root
    ``ROOT/<class>/<videos>`` (videos: :data:`training.video.VIDEO_EXTENSIONS`, searched
    recursively inside each class folder). Classes are the folder names sorted; the
    train/val split is a deterministic hash of ``(seed, class, file path inside the class
    folder)``, so it does not depend on where ROOT is or on which other files exist.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from training.video import VIDEO_EXTENSIONS, is_video_file

VIDEO_DIR_NAMES = ("UCF-101", "UCF101")
LISTS_DIR_NAME = "ucfTrainTestlist"
UCF101_SPLITS = (1, 2, 3)
KINDS = ("ucf101", "folders", "tfds")


class DataError(ValueError):
    """The data source is missing, malformed or not one of the accepted layouts."""


@dataclass
class DatasetIndex:
    """One data source, resolved.

    Attributes
    ----------
    class_names
        Class ``i`` is ``class_names[i]``.
    train, val
        ``(absolute video path, 0-based label)``; empty for ``kind == "tfds"``.
    kind
        ``"ucf101"``, ``"folders"`` or ``"tfds"``.
    tfds_name
        The TFDS name (``kind == "tfds"`` only), e.g. ``"ucf101/ucf101_1_256"``.
    tfds_splits
        ``(train split, validation split)`` names for TFDS, e.g. ``("train", "test")``.
    root
        The folder the videos were found under (``None`` for TFDS).
    split
        The UCF101 split number used (1-3), else ``None``.
    missing
        Listed video paths that do not exist and were skipped (UCF101 layout only).
    """

    class_names: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    kind: str
    tfds_name: str | None = None
    tfds_splits: tuple[str, str] | None = None
    root: Path | None = None
    split: int | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        """One line for logs."""
        if self.kind == "tfds":
            return f"tfds {self.tfds_name} ({self.num_classes} classes, splits {self.tfds_splits})"
        extra = f", {len(self.missing)} listed videos missing" if self.missing else ""
        where = f"{self.kind} at {self.root}" + (f" split {self.split}" if self.split else "")
        return f"{where}: {self.num_classes} classes, {len(self.train)} train / {len(self.val)} val videos{extra}"


# --------------------------------------------------------------------------- UCF101


def find_ucf101_layout(root: str | os.PathLike) -> tuple[Path, Path] | None:
    """``(videos_dir, lists_dir)`` when ``root`` is one of the accepted UCF101 layouts, else None."""
    root = Path(root)
    inside = root / LISTS_DIR_NAME
    if inside.is_dir():
        for name in VIDEO_DIR_NAMES:  # the two official archives extracted into ROOT
            if (root / name).is_dir():
                return root / name, inside
        if _has_subdirs(root):  # ROOT holds the class folders and the lists
            return root, inside
    beside = root.parent / LISTS_DIR_NAME
    if beside.is_dir() and root.name != LISTS_DIR_NAME and _has_subdirs(root):
        return root, beside  # ROOT is e.g. .../UCF-101 itself
    return None


def _has_subdirs(path: Path) -> bool:
    return any(p.is_dir() and p.name != LISTS_DIR_NAME and not p.name.startswith(".") for p in path.iterdir())


def read_class_index(path: str | os.PathLike) -> list[str]:
    """Class names from ``classInd.txt`` (lines ``"<1-based index> <Name>"``), index order.

    Raises
    ------
    DataError
        Missing file, a malformed line, or indices that are not exactly ``1..N``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"UCF101 class index {str(path)!r} does not exist")
    entries: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{lineno}: expected '<index> <ClassName>', got {line!r}")
        entries[int(parts[0])] = parts[1]
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise DataError(f"{path}: class indices must be 1..N without gaps, got {sorted(entries)}")
    if not entries:
        raise DataError(f"{path}: no classes")
    return [entries[i] for i in range(1, len(entries) + 1)]


class _CaseInsensitiveTree:
    """Resolve ``Class/file.avi`` under ``videos_dir`` ignoring case (lazy, one scan per folder).

    Needed for real UCF101, whose lists say ``HandstandPushups/v_HandstandPushups_...`` while
    the archive stores ``HandStandPushups/v_HandStandPushups_...``.
    """

    def __init__(self, videos_dir: Path):
        self.videos_dir = videos_dir
        self._dirs = {p.name.lower(): p for p in videos_dir.iterdir() if p.is_dir()}
        self._files: dict[str, dict[str, Path]] = {}

    def resolve(self, rel: str) -> Path | None:
        exact = self.videos_dir / rel
        if exact.is_file():
            return exact
        parts = rel.replace("\\", "/").split("/")
        if len(parts) != 2:
            return None
        folder = self._dirs.get(parts[0].lower())
        if folder is None:
            return None
        if folder.name not in self._files:
            self._files[folder.name] = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
        return self._files[folder.name].get(parts[1].lower())


def load_ucf101(root: str | os.PathLike, split: int = 1) -> DatasetIndex:
    """Index UCF101 (official layout, see the module docstring) for ``split`` 1-3.

    ``train`` is ``trainlist0{split}.txt``, ``val`` is ``testlist0{split}.txt``; labels are the
    0-based position in ``classInd.txt`` of the entry's class folder.

    Raises
    ------
    DataError
        Not a UCF101 layout, a missing/malformed list file, an unknown class in a list,
        a train label that disagrees with its folder, or a split outside 1-3.
    """
    if split not in UCF101_SPLITS:
        raise DataError(f"UCF101 split must be one of {UCF101_SPLITS}, got {split!r}")
    layout = find_ucf101_layout(root)
    if layout is None:
        raise DataError(
            f"{str(root)!r} is not a UCF101 root: expected '{root}/UCF-101/<Class>/*.avi' with "
            f"'{root}/{LISTS_DIR_NAME}/', or a folder of class folders with '{LISTS_DIR_NAME}/' "
            "inside or beside it"
        )
    videos_dir, lists_dir = layout
    class_names = read_class_index(lists_dir / "classInd.txt")
    label_of = {c.lower(): i for i, c in enumerate(class_names)}
    tree = _CaseInsensitiveTree(videos_dir)
    missing: list[str] = []

    def read_list(name: str) -> list[tuple[str, int]]:
        path = lists_dir / name
        if not path.is_file():
            raise DataError(f"UCF101 split file {str(path)!r} does not exist")
        out = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            rel = parts[0]
            folder = rel.replace("\\", "/").split("/")[0]
            label = label_of.get(folder.lower())
            if label is None:
                raise DataError(f"{path}:{lineno}: class folder {folder!r} is not in classInd.txt")
            if len(parts) > 1 and (not parts[1].isdigit() or int(parts[1]) - 1 != label):
                raise DataError(
                    f"{path}:{lineno}: label {parts[1]!r} disagrees with classInd.txt, which gives "
                    f"{folder!r} the index {label + 1}"
                )
            found = tree.resolve(rel)
            if found is None:
                missing.append(str(videos_dir / rel))
                continue
            out.append((str(found.resolve()), label))
        if not out:
            raise DataError(f"{path}: none of the listed videos exist under {str(videos_dir)!r}")
        return out

    train = read_list(f"trainlist0{split}.txt")
    val = read_list(f"testlist0{split}.txt")
    if missing:
        warnings.warn(
            f"UCF101 split {split}: {len(missing)} listed videos do not exist under "
            f"{str(videos_dir)!r} and are skipped (first: {missing[0]!r})",
            stacklevel=2,
        )
    return DatasetIndex(class_names, train, val, "ucf101", root=videos_dir, split=split, missing=missing)


# --------------------------------------------------------------------------- class folders


def _unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (stable across runs and platforms)."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def load_class_folders(root: str | os.PathLike, seed: int = 0, val_fraction: float = 0.2) -> DatasetIndex:
    """Index ``ROOT/<class>/<videos>`` and split it deterministically.

    A video goes to validation when the hash of ``(seed, class, its path inside the class
    folder)`` falls below ``val_fraction``. Every class keeps at least one training video
    (the highest hash; a class of one video is training only), and when ``val_fraction > 0``
    every class with >= 2 videos gets at least one validation video (the lowest hash).

    Raises
    ------
    DataError
        ``root`` is not a folder, or no sub-folder holds a video file.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"class-folder root {str(root)!r} is not a directory")
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    classes: list[tuple[str, list[Path]]] = []
    empty = []
    for d in class_dirs:
        vids = sorted(p for p in d.rglob("*") if p.is_file() and is_video_file(p) and not p.name.startswith("."))
        (classes.append((d.name, vids)) if vids else empty.append(d.name))
    if not classes:
        raise DataError(
            f"no videos under {str(root)!r}: expected '{root}/<class>/<video>' with extensions "
            f"{', '.join(VIDEO_EXTENSIONS)} (or a UCF101 root with '{LISTS_DIR_NAME}/', or 'tfds:NAME')"
        )
    if empty:
        warnings.warn(f"class folders without videos ignored under {str(root)!r}: {empty}", stacklevel=2)
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    for label, (name, vids) in enumerate(classes):
        keyed = sorted((_unit_hash(seed, name, v.relative_to(root / name).as_posix()), str(v.resolve())) for v in vids)
        is_val = [h < val_fraction for h, _ in keyed]
        if val_fraction > 0 and len(keyed) >= 2:
            is_val[0] = True  # lowest hash: at least one validation video
        is_val[-1] = False  # highest hash: at least one training video (a lone video trains)
        for (_, path), v in zip(keyed, is_val):
            (val if v else train).append((path, label))
    # keyed order is by hash; list by path so the index reads naturally and diffs stably
    return DatasetIndex([n for n, _ in classes], sorted(train), sorted(val), "folders", root=root.resolve())


# --------------------------------------------------------------------------- TFDS


def resolve_tfds_name(name: str, split: int = 1) -> str:
    """Map the bare ``ucf101`` to its config for ``split``; other names pass through."""
    if name == "ucf101":
        if split not in UCF101_SPLITS:
            raise DataError(f"UCF101 split must be one of {UCF101_SPLITS}, got {split!r}")
        return "ucf101/ucf101_1_256" if split == 1 else f"ucf101/ucf101_{split}"
    return name


def load_tfds_index(name: str, split: int = 1, data_dir: str | None = None) -> DatasetIndex:
    """Class names and split names of a TFDS video dataset, without downloading anything.

    The builder's ``info`` is defined in code (class names included), so this works before
    the data is prepared. The validation split is ``"validation"`` when the prepared
    dataset has one, else ``"test"`` (UCF101 has only ``train``/``test``).

    Raises
    ------
    DataError
        Unknown dataset name, or a dataset without a ``label`` ClassLabel feature.
    """
    import tensorflow_datasets as tfds  # heavy: only for TFDS sources

    full = resolve_tfds_name(name, split)
    try:
        builder = tfds.builder(full, data_dir=data_dir)
    except Exception as e:  # tfds raises several types (DatasetNotFoundError, ValueError, ...)
        raise DataError(f"unknown TFDS dataset {full!r}: {e}") from e
    features = builder.info.features
    names = getattr(features["label"], "names", None) if "label" in features.keys() else None
    if not names:
        raise DataError(f"TFDS dataset {full!r} has no 'label' ClassLabel feature with class names")
    splits = set(builder.info.splits.keys())
    val_split = "validation" if "validation" in splits else "test"
    return DatasetIndex(list(names), [], [], "tfds", tfds_name=full, tfds_splits=("train", val_split))


# --------------------------------------------------------------------------- entry point


def load_dataset_index(data: str, split: int = 1, seed: int = 0, val_fraction: float = 0.2) -> DatasetIndex:
    """Classify ``data`` and index it (see the module docstring for what is accepted).

    Parameters
    ----------
    data
        ``"tfds:NAME"``, ``"embedded"``, a UCF101 root or a class-folder root.
    split
        UCF101 split (1-3); also picks the TFDS ``ucf101`` config for the bare name.
    seed, val_fraction
        Train/val split of class-folder trees (ignored by the others, which have fixed splits).

    Raises
    ------
    DataError
        The path does not exist or is not one of the accepted layouts.
    """
    data = str(data)
    if data.startswith("tfds:"):
        name = data[len("tfds:") :].strip()
        if not name:
            raise DataError(f"empty TFDS name in {data!r}; expected 'tfds:NAME', e.g. 'tfds:ucf101/ucf101_1_256'")
        return load_tfds_index(name, split)
    if data == "embedded":
        from training.synthetic import make_embedded_dataset

        return load_ucf101(make_embedded_dataset(), split)
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(
            f"data path {data!r} does not exist; expected 'tfds:NAME', 'embedded', a UCF101 root "
            f"(with '{LISTS_DIR_NAME}/') or a folder of class folders of videos"
        )
    if not root.is_dir():
        raise DataError(f"data path {data!r} is a file; expected a folder (UCF101 root or class folders)")
    if find_ucf101_layout(root) is not None:
        return load_ucf101(root, split)
    return load_class_folders(root, seed=seed, val_fraction=val_fraction)
