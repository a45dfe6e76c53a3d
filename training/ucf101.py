"""Where the videos are: UCF101 (official layout), class-folder trees and TFDS names.

Everything is turned into one :class:`DatasetIndex` (class names + ``(path, label)``
lists for training, validation and test) by :func:`load_dataset_index`.

Three splits, disjoint by video and by *group* (UCF101's ``gXX``: clips of one group share
actor, background and viewpoint, so a group in two splits leaks near-duplicates):
``train`` is what the model learns from, ``val`` is what every choice is made on
(checkpoints, hyper-parameters, calibration targets), ``test`` is only ever reported. TensorFlow Datasets
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
    ``testlist0N.txt``. Labels are 0-based (``classInd.txt`` is 1-based). ``test`` is the
    official test list of the split; ``val`` is carved from the official train list by whole
    groups (group numbers chosen by a fixed hash of the split number, the same groups in
    every class, so no group straddles train and val; see :func:`carve_val_groups`). List entries are matched to files case-insensitively, which also finds the
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
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from training.video import VIDEO_EXTENSIONS, is_video_file

VIDEO_DIR_NAMES = ("UCF-101", "UCF101")
LISTS_DIR_NAME = "ucfTrainTestlist"
UCF101_SPLITS = (1, 2, 3)
KINDS = ("ucf101", "folders", "tfds")
SUBSETS = ("train", "val", "test")
#: fraction of the groups (or videos, where there are no groups) held out for validation / test
VAL_FRACTION = 0.2
TEST_FRACTION = 0.2
_GROUP = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


class DataError(ValueError):
    """The data source is missing, malformed or not one of the accepted layouts."""


@dataclass
class DatasetIndex:
    """One data source, resolved.

    Attributes
    ----------
    class_names
        Class ``i`` is ``class_names[i]``.
    train, val, test
        ``(absolute video path, 0-based label)``; empty for ``kind == "tfds"``.
    kind
        ``"ucf101"``, ``"folders"`` or ``"tfds"``.
    tfds_name
        The TFDS name (``kind == "tfds"`` only), e.g. ``"ucf101/ucf101_1_256"``.
    tfds_splits
        ``(train, validation, test)`` split specs for TFDS, e.g.
        ``("train[:80%]", "train[80%:]", "test")``.
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
    test: list[tuple[str, int]] = field(default_factory=list)

    def subset(self, name: str) -> list[tuple[str, int]]:
        """The ``(path, label)`` list of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {name!r}")
        return getattr(self, name)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        """One line for logs."""
        if self.kind == "tfds":
            return f"tfds {self.tfds_name} ({self.num_classes} classes, splits {self.tfds_splits})"
        extra = f", {len(self.missing)} listed videos missing" if self.missing else ""
        where = f"{self.kind} at {self.root}" + (f" split {self.split}" if self.split else "")
        return (f"{where}: {self.num_classes} classes, {len(self.train)} train / {len(self.val)} val / "
                f"{len(self.test)} test videos{extra}")


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


def load_ucf101(root: str | os.PathLike, split: int = 1, val_fraction: float = VAL_FRACTION) -> DatasetIndex:
    """Index UCF101 (official layout, see the module docstring) for ``split`` 1-3.

    ``test`` is ``testlist0{split}.txt``; ``train`` and ``val`` are ``trainlist0{split}.txt``
    divided by whole groups (:func:`carve_val_groups`); labels are the 0-based position in
    ``classInd.txt`` of the entry's class folder.

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

    listed_train = read_list(f"trainlist0{split}.txt")
    test = read_list(f"testlist0{split}.txt")
    train, val = carve_val_groups(listed_train, f"ucf101-split{split}", val_fraction)
    if missing:
        warnings.warn(
            f"UCF101 split {split}: {len(missing)} listed videos do not exist under "
            f"{str(videos_dir)!r} and are skipped (first: {missing[0]!r})",
            stacklevel=2,
        )
    return DatasetIndex(class_names, train, val, "ucf101", root=videos_dir, split=split, missing=missing, test=test)


def group_of(path: str) -> int | None:
    """The UCF101 group number of a video file name (``v_Class_g08_c02.avi`` -> 8), or None."""
    m = _GROUP.search(Path(path).name)
    return int(m.group(1)) if m else None


def carve_val_groups(
    videos: list[tuple[str, int]], key: str, val_fraction: float = VAL_FRACTION
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Split ``videos`` into ``(train, val)`` by whole group numbers.

    ``round(val_fraction * groups)`` group numbers (at least one when there are two or more)
    go to validation: those with the lowest ``hash(key, group)``, so the choice is fixed for a
    given ``key`` (e.g. the UCF101 split) and does not depend on the training seed. A group
    number is the same group in every class (as UCF101's splits treat it), so it goes to one
    side in every class. Videos whose name carries no group go by a hash of their path.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    groups = sorted({g for p, _ in videos if (g := group_of(p)) is not None})
    n_val = int(round(val_fraction * len(groups)))
    if val_fraction > 0 and len(groups) >= 2:
        n_val = max(1, min(n_val, len(groups) - 1))
    val_groups = set(sorted(groups, key=lambda g: _unit_hash(key, "group", g))[:n_val])
    train, val = [], []
    for path, label in videos:
        g = group_of(path)
        held = g in val_groups if g is not None else _unit_hash(key, "video", Path(path).name) < val_fraction
        (val if held else train).append((path, label))
    return train, val


# --------------------------------------------------------------------------- class folders


def _unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (stable across runs and platforms)."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _quota_split(keys: list, fractions: tuple[float, float]) -> tuple[set, set]:
    """``(test keys, val keys)``: the lowest-hash ``round(f * n)`` keys for each fraction, in
    that order, keeping at least one key for training and, where there are enough keys
    (3 for both, 2 for validation only), at least one for each held-out part."""
    n = len(keys)
    test_f, val_f = fractions
    n_test = int(round(test_f * n))
    n_val = int(round(val_f * n))
    if test_f > 0 and n >= 3:
        n_test = max(1, n_test)
    if val_f > 0 and n >= 2:
        n_val = max(1, n_val)
    while n_test + n_val > n - 1 and (n_test or n_val):  # keep one for training
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return set(keys[:n_test]), set(keys[n_test:n_test + n_val])


def load_class_folders(
    root: str | os.PathLike, seed: int = 0, val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION
) -> DatasetIndex:
    """Index ``ROOT/<class>/<videos>`` and split it three ways, deterministically, by group.

    Videos named like UCF101 (``..._gXX_cYY...``) are split by group number across all classes
    (the ``round(test_fraction * groups)`` numbers with the lowest ``hash(seed, group)`` go to
    test, the next ``round(val_fraction * groups)`` to validation, the rest to training).
    Other videos are split per class the same way on ``hash(seed, class, path inside the
    class folder)``: every class keeps at least one training video, and a class of >= 2
    (>= 3) such videos gets at least one validation (and test) video.

    Raises
    ------
    DataError
        ``root`` is not a folder, or no sub-folder holds a video file.
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction!r}")
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
    fractions = (test_fraction, val_fraction)
    groups = sorted({g for _, vids in classes for v in vids if (g := group_of(v.name)) is not None},
                    key=lambda g: _unit_hash(seed, "group", g))
    test_groups, val_groups = _quota_split(groups, fractions)
    out: dict[str, list[tuple[str, int]]] = {s: [] for s in SUBSETS}
    for label, (name, vids) in enumerate(classes):
        loose = sorted((v for v in vids if group_of(v.name) is None),
                       key=lambda v: _unit_hash(seed, name, v.relative_to(root / name).as_posix()))
        test_loose, val_loose = _quota_split(loose, fractions)
        for v in vids:
            g = group_of(v.name)
            if g is not None:
                where = "test" if g in test_groups else "val" if g in val_groups else "train"
            else:
                where = "test" if v in test_loose else "val" if v in val_loose else "train"
            out[where].append((str(v.resolve()), label))
    return DatasetIndex([n for n, _ in classes], sorted(out["train"]), sorted(out["val"]), "folders",
                        root=root.resolve(), test=sorted(out["test"]))


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
    the data is prepared. ``test`` is the dataset's ``"test"`` split; validation is its
    ``"validation"`` split when it has one, else the last ``VAL_FRACTION`` of ``"train"``
    (``train[80%:]``; UCF101 has only ``train``/``test``). TFDS stores examples in an order
    shuffled by key hash, so that slice is a fixed pseudo-random fifth of the training
    videos; TFDS examples carry no file names, so it is *not* group-disjoint from training
    (validation accuracy is then optimistic; the test split is the official one).

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
    if "validation" in splits:
        parts = ("train", "validation", "test")
    else:
        cut = int(round(100 * (1 - VAL_FRACTION)))
        parts = (f"train[:{cut}%]", f"train[{cut}%:]", "test")
    return DatasetIndex(list(names), [], [], "tfds", tfds_name=full, tfds_splits=parts)


# --------------------------------------------------------------------------- entry point


def load_dataset_index(data: str, split: int = 1, seed: int = 0, val_fraction: float = VAL_FRACTION) -> DatasetIndex:
    """Classify ``data`` and index it (see the module docstring for what is accepted).

    Parameters
    ----------
    data
        ``"tfds:NAME"``, ``"embedded"``, a UCF101 root or a class-folder root.
    split
        UCF101 split (1-3); also picks the TFDS ``ucf101`` config for the bare name.
    seed, val_fraction
        The split of class-folder trees (UCF101 and TFDS splits are fixed). ``training.fit``
        leaves ``seed`` at 0, so every training seed sees the same test videos.

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
        return load_ucf101(root, split, val_fraction)
    return load_class_folders(root, seed=seed, val_fraction=val_fraction)
