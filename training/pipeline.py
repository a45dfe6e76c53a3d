"""tf.data pipelines: ``(clips uint8 (B, T, H, W, 3), labels int32 (B,))`` for Keras.

Two sources, one element spec:

* :func:`make_clip_dataset` - video files (UCF101 layout, class folders, the embedded
  dataset). Files are decoded with OpenCV (``training.video.read_clip``) inside
  ``tf.numpy_function`` mapped with ``num_parallel_calls=AUTOTUNE``; OpenCV releases the
  GIL while decoding, so parallel calls keep every core busy.
* :func:`make_tfds_dataset` - TensorFlow Datasets video datasets (``ucf101``): the
  encoded frames are kept encoded (``SkipDecoding``) and only the sampled clip frames are
  decoded, instead of the whole video TFDS would otherwise decode.

:func:`make_subset_dataset` builds one subset (train / val / test) of a ``DatasetIndex``,
:func:`make_train_val_datasets` the two that training uses.

Clips are uint8 (the model rescales with a ``Rescaling`` layer) with static shape
``(None, T, H, W, 3)``. Training clips start at a random frame (seeded, different every
epoch) and are shuffled; evaluation clips are the centered clip of every video, the same
every epoch.

Corrupt files never stop training: a file that cannot be decoded yields no clip and is
recorded in a :class:`SkipCounter` (thread-safe; ``count`` = distinct bad files) that the
training loop logs.

Caching: evaluation clips are fixed, so they are cached (in memory, or in ``cache``
files) after the first epoch; by default only when they fit in ``cache_limit_bytes``.
Training clips are never cached (their random start changes every epoch), but their
videos can be: ``frame_cache`` decodes every training video once into a memory-mapped uint8
file at the clip size (``training.frame_cache``) and samples the clips from it, the same
clips as decoding them each epoch, without OpenCV competing with the training step for
the cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from training.ucf101 import DatasetIndex, resolve_tfds_name
from training.video import PAD_MODES, VideoError, clip_span, read_clip

AUTOTUNE = tf.data.AUTOTUNE

#: default ceiling for caching evaluation clips in memory ("auto" cache)
CACHE_LIMIT_BYTES = 1 << 30


class SkipCounter:
    """Thread-safe record of videos that could not be decoded and were skipped.

    Attributes
    ----------
    count
        Number of distinct skipped files (a bad file skipped every epoch counts once).
    events
        Number of skips, all epochs together.
    paths
        The distinct skipped files, in the order first seen.
    reasons
        ``{path: first error message}``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}
        self._events = 0

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            self._events += 1
            self._reasons.setdefault(path, reason)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._reasons)

    @property
    def events(self) -> int:
        with self._lock:
            return self._events

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return list(self._reasons)

    @property
    def reasons(self) -> dict[str, str]:
        with self._lock:
            return dict(self._reasons)

    def reset(self) -> None:
        with self._lock:
            self._reasons.clear()
            self._events = 0

    def summary(self, limit: int = 3) -> str:
        """One line for logs, e.g. ``"2 videos skipped (undecodable): a.avi, b.avi"``."""
        paths = self.paths
        if not paths:
            return "0 videos skipped"
        shown = ", ".join(os.path.basename(p) for p in paths[:limit]) + (", ..." if len(paths) > limit else "")
        return f"{len(paths)} videos skipped (undecodable): {shown}"

    def __repr__(self) -> str:
        return f"SkipCounter(count={self.count}, events={self.events})"


def _check_clip_args(frames: int, stride: int, size: Sequence[int], batch_size: int, pad: str) -> tuple[int, int]:
    if frames < 1 or stride < 1 or batch_size < 1:
        raise ValueError(f"frames, stride, batch_size must be >= 1; got {frames}, {stride}, {batch_size}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width), got {size!r}")
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    return int(size[0]), int(size[1])


def _seeds(training: bool, seed: int) -> tf.data.Dataset:
    """Per-element seeds: fresh every epoch in training (deterministic given ``seed``)."""
    if training:
        return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()


# named functions, not lambdas: AutoGraph cannot parse several lambdas on one line


def _decoded(clip, label, ok):
    return ok


def _drop_flag(clip, label, ok):
    return clip, label


def _flatten(path_label, seed):
    return path_label[0], path_label[1], seed


def _cache(ds: tf.data.Dataset, cache, nbytes: int, cache_limit_bytes: int, key: dict) -> tf.data.Dataset:
    """Apply the evaluation cache policy (see the module docstring)."""
    if cache is None or cache == "auto":
        return ds.cache() if nbytes <= cache_limit_bytes else ds
    if cache is False:
        return ds
    if cache is True or cache == "memory":
        return ds.cache()
    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    # the file name is keyed by everything that determines the clips, so a cache written for
    # other videos or another clip geometry is never read back
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return ds.cache(str(folder / f"clips-{digest}"))


def make_clip_dataset(
    index_entries: Sequence[tuple[str, int]],
    *,
    frames: int,
    stride: int,
    size: Sequence[int],
    batch_size: int,
    training: bool,
    seed: int = 0,
    class_count: int | None = None,
    skipped: SkipCounter | None = None,
    pad: str = "loop",
    cache: bool | str | os.PathLike | None = "auto",
    cache_limit_bytes: int = CACHE_LIMIT_BYTES,
    drop_remainder: bool = False,
    num_parallel_calls: int = AUTOTUNE,
    frame_cache: bool | str | os.PathLike = False,
) -> tf.data.Dataset:
    """Clips from video files, batched: ``(uint8 (B, T, H, W, 3), int32 (B,))``.

    Parameters
    ----------
    index_entries
        ``(video path, 0-based label)`` pairs, e.g. ``DatasetIndex.train``.
    frames, stride
        Clip length and temporal step (the model's ``T`` and frame stride).
    size
        ``(height, width)`` of the clips.
    batch_size
        Clips per batch (the last batch may be smaller unless ``drop_remainder``).
    training
        True: shuffle every epoch and start clips at random frames (seeded by ``seed``).
        False: fixed order, centered clips, cached (see ``cache``).
    seed
        Randomness of the shuffle and the clip starts.
    class_count
        When given, labels outside ``[0, class_count)`` raise ``ValueError``.
    skipped
        Receives the videos that fail to decode. When None a new counter is made; either
        way it is also reachable as ``dataset.skipped``.
    pad
        Short videos: ``"loop"`` or ``"last"`` (see ``training.video.clip_indices``).
    cache
        Evaluation only (ignored in training): ``"auto"``/None caches in memory when the
        clips fit in ``cache_limit_bytes``; True or ``"memory"`` always in memory; a folder
        caches in files there; False never.
    num_parallel_calls
        Parallel decoders (AUTOTUNE: one per core; tf.data's autotuning is off, see ``_finish``).
    frame_cache
        Training only (ignored in evaluation, whose clips are cached anyway): True decodes
        every video once into ``training.frame_cache.default_folder()``, a folder puts the
        cache there; clips are then sampled from the memory-mapped frames. False decodes
        every clip from its file.

    Returns
    -------
    tf.data.Dataset
        Element spec ``(TensorSpec((None, T, H, W, 3), uint8), TensorSpec((None,), int32))``.
    """
    h, w = _check_clip_args(frames, stride, size, batch_size, pad)
    entries = [(os.fspath(p), int(label)) for p, label in index_entries]
    if not entries:
        raise ValueError("no videos to make a clip dataset from (index_entries is empty)")
    labels = np.array([label for _, label in entries], np.int32)
    if class_count is not None and (labels.min() < 0 or labels.max() >= class_count):
        bad = next((p, lab) for p, lab in entries if not 0 <= lab < class_count)
        raise ValueError(f"label {bad[1]} of {bad[0]!r} is outside [0, {class_count})")
    counter = skipped if skipped is not None else SkipCounter()
    shape = (frames, h, w, 3)
    cached = None
    if training and frame_cache is not False:
        from training.frame_cache import FrameCache

        cached = FrameCache.load([p for p, _ in entries], (h, w), None if frame_cache is True else frame_cache)

    def load(path: bytes, seed_: np.int64):
        p = os.fsdecode(path)
        rng = np.random.default_rng(int(seed_) & 0xFFFFFFFFFFFFFFFF) if training else None
        try:
            if cached is not None:
                return cached.clip(p, frames, stride, rng, pad), np.True_
            return read_clip(p, frames, stride, (h, w), rng=rng, pad=pad), np.True_
        except (VideoError, cv2.error, OSError) as e:  # a bad file must never stop training
            counter.add(p, str(e))
            return np.zeros(shape, np.uint8), np.False_

    def decode(path, label, seed_):
        clip, ok = tf.numpy_function(load, [path, seed_], [tf.uint8, tf.bool], name="read_clip")
        clip.set_shape(shape)
        ok.set_shape(())
        return clip, label, ok

    ds = tf.data.Dataset.from_tensor_slices(([p for p, _ in entries], labels))
    if training:
        # shuffling paths (not clips) is free, so the buffer can hold the whole list
        ds = ds.shuffle(len(entries), seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, _seeds(training, seed)).map(_flatten)
    ds = ds.map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.filter(_decoded).map(_drop_flag)
    if not training:
        key = dict(entries=entries, frames=frames, stride=stride, size=[h, w], pad=pad)
        ds = _cache(ds, cache, len(entries) * int(np.prod(shape)), cache_limit_bytes, key)
    return _finish(ds, batch_size, drop_remainder, counter)


def _finish(ds: tf.data.Dataset, batch_size: int, drop_remainder: bool, counter: SkipCounter) -> tf.data.Dataset:
    """Batch, prefetch, switch tf.data's autotuning thread off, attach the skip counter.

    Why no autotuning: each iterator's autotuner runs in a ``tf_data_model`` thread that the
    iterator's destructor waits for. While a training step keeps both cores busy, that wait
    took 3-10 s whenever Keras replaced an epoch's iterator (at the start of an epoch and
    before validation; 4 of epochs 1-7 in one run of the default fit, 2 of epochs 1-5 in another, ``scripts/epoch_gaps.py``
    with ``py-spy dump --native``: main thread in ``~LogicalThreadWrapper`` under
    ``RootDataset::Iterator::~Iterator``). Without it, 0 of 7 epochs stalled and AUTOTUNE
    parallelism is tf.data's fixed default, one parallel call per core (``min(16, cores)``):
    the pipeline delivers an epoch of the embedded data in ~0.3 s, 40x faster than the step
    consumes it, so tuning it buys nothing. docs/training_speed.md, session 9.
    """
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False
    return _with_counter(ds.with_options(options), counter)


def _with_counter(ds: tf.data.Dataset, counter: SkipCounter) -> tf.data.Dataset:
    # a plain attribute on the final dataset object, so callers that did not pass a counter
    # can still log skips; transformations (ds.take, ...) return new objects without it
    ds.skipped = counter
    return ds


def make_tfds_dataset(
    name: str,
    split: str,
    *,
    frames: int,
    stride: int,
    size: Sequence[int],
    batch_size: int,
    training: bool,
    seed: int = 0,
    class_count: int | None = None,
    skipped: SkipCounter | None = None,
    pad: str = "loop",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    shuffle_buffer: int = 256,
    cache: bool | str | os.PathLike | None = False,
    drop_remainder: bool = False,
    num_parallel_calls: int = AUTOTUNE,
) -> tf.data.Dataset:
    """Clips from a TFDS video dataset (features ``video`` and ``label``), same spec as files.

    ``tfds.load(name, split=split, download=download)`` downloads and prepares the dataset
    on first use (UCF101 is ~6.5 GB). Frames stay JPEG/PNG-encoded until the clip's frames
    are picked; only those are decoded and resized (``tf.image.resize(method="area")``, the
    TensorFlow counterpart of ``cv2.INTER_AREA``). Clip sampling follows
    ``training.video.clip_indices``. Examples with zero frames are skipped and counted
    under their ``tfds_id``. Evaluation clips are not cached by default (``cache=False``:
    a full TFDS test split is large); pass True/"memory" or a folder to cache.

    ``class_count`` is checked against the builder's label count.
    """
    import tensorflow_datasets as tfds  # heavy: only for TFDS sources

    h, w = _check_clip_args(frames, stride, size, batch_size, pad)
    counter = skipped if skipped is not None else SkipCounter()
    ds, info = tfds.load(
        name,
        split=split,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        download=download,
        shuffle_files=training,
        with_info=True,
        decoders={"video": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=True),
    )
    n_classes = info.features["label"].num_classes
    if class_count is not None and class_count != n_classes:
        raise ValueError(f"class_count={class_count} but TFDS {name!r} has {n_classes} classes")
    span = clip_span(frames, stride)
    fallback_id = f"{name}:{split}"

    def note(ok: np.bool_, ident: bytes) -> np.bool_:
        if not ok:
            counter.add(ident.decode(errors="replace"), "TFDS example with zero frames")
        return np.bool_(ok)

    # decode frames exactly as TFDS would (its Image feature), falling back to TensorFlow's decoder
    frame_feature = getattr(info.features["video"], "feature", None)
    decode = getattr(frame_feature, "decode_example", None) or (
        lambda e: tf.io.decode_image(e, channels=3, expand_animations=False)
    )

    def decode_frame(encoded):
        img = decode(encoded)
        img = tf.image.resize(img, (h, w), method="area")
        return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)

    def to_clip(example, seed_):
        encoded = example["video"]  # (n,) encoded frames
        label = tf.cast(example["label"], tf.int32)
        ident = example["tfds_id"] if "tfds_id" in example else tf.constant(fallback_id)
        n = tf.shape(encoded, out_type=tf.int64)[0]
        ok = tf.numpy_function(note, [n > 0, ident], tf.bool, name="note_empty")
        ok.set_shape(())
        n1 = tf.maximum(n, 1)
        room = tf.maximum(n1 - span, 0)
        if training:
            start = tf.random.stateless_uniform(
                [], seed=tf.stack([seed_, tf.constant(0, tf.int64)]), minval=0, maxval=room + 1, dtype=tf.int64
            )
        else:
            start = room // 2
        idx = start + stride * tf.range(frames, dtype=tf.int64)
        idx = idx % n1 if pad == "loop" else tf.minimum(idx, n1 - 1)
        # an empty video gets an empty-safe stand-in; it is filtered out below
        encoded = tf.cond(n > 0, lambda: encoded, lambda: tf.constant([b""]))
        picked = tf.gather(encoded, idx)
        clip = tf.cond(
            n > 0,
            lambda: tf.map_fn(decode_frame, picked, fn_output_signature=tf.TensorSpec((h, w, 3), tf.uint8)),
            lambda: tf.zeros((frames, h, w, 3), tf.uint8),
        )
        clip.set_shape((frames, h, w, 3))
        return clip, label, ok

    ds = tf.data.Dataset.zip(ds, _seeds(training, seed))
    ds = ds.map(to_clip, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.filter(_decoded).map(_drop_flag)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    elif cache is not None and cache is not False:
        ds = _cache(ds, cache, 0, 0, dict(tfds=name, split=split, frames=frames, stride=stride, size=[h, w], pad=pad))
    return _finish(ds, batch_size, drop_remainder, counter)


def make_subset_dataset(
    index: DatasetIndex,
    subset: str,
    *,
    frames: int,
    stride: int,
    size: Sequence[int],
    batch_size: int,
    training: bool = False,
    seed: int = 0,
    skipped: SkipCounter | None = None,
    **kwargs,
) -> tf.data.Dataset:
    """The clips of one subset (``"train"``, ``"val"`` or ``"test"``) of any index kind.

    File-based kinds use :func:`make_clip_dataset` on ``index.subset(subset)``; ``"tfds"``
    uses :func:`make_tfds_dataset` on the matching entry of ``index.tfds_splits``. Extra
    keyword arguments go to the underlying function (e.g. ``pad``, ``cache``, ``data_dir``).
    """
    from training.ucf101 import SUBSETS

    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    common = dict(frames=frames, stride=stride, size=size, batch_size=batch_size, seed=seed, training=training,
                  class_count=index.num_classes, skipped=skipped, **kwargs)
    if index.kind == "tfds":
        common.pop("frame_cache", None)  # TFDS keeps its frames encoded in its own files
        name = resolve_tfds_name(index.tfds_name or "")
        splits = dict(zip(SUBSETS, index.tfds_splits or ("train[:80%]", "train[80%:]", "test")))
        return make_tfds_dataset(name, splits[subset], **common)
    videos = index.subset(subset)
    if not videos:
        raise ValueError(f"{index.describe()}: no {subset} videos")
    return make_clip_dataset(videos, **common)


def make_train_val_datasets(
    index: DatasetIndex,
    *,
    frames: int,
    stride: int,
    size: Sequence[int],
    batch_size: int,
    seed: int = 0,
    skipped: SkipCounter | None = None,
    **kwargs,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """``(train, val)`` datasets (:func:`make_subset_dataset`) sharing one ``skipped`` counter."""
    skipped = skipped if skipped is not None else SkipCounter()
    common = dict(frames=frames, stride=stride, size=size, batch_size=batch_size, seed=seed, skipped=skipped, **kwargs)
    return (
        make_subset_dataset(index, "train", training=True, **common),
        make_subset_dataset(index, "val", training=False, **common),
    )
