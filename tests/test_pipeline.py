"""training.pipeline: tf.data clips from real files and from mocked TFDS, skipping bad videos."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fakes import class_color, frame_index, index_frames, make_fake_ucf101, write_video
from training.pipeline import SkipCounter, make_clip_dataset, make_tfds_dataset, make_train_val_datasets
from training.ucf101 import load_dataset_index, load_ucf101
from training.video import clip_indices

T, STRIDE, SIZE = 4, 2, (16, 20)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_ucf101(
        tmp_path_factory.mktemp("ucf") / "root",
        classes=("ApplyEyeMakeup", "HandstandPushups", "YoYo"),
        groups=(1, 2, 3),
        clips=2,
        frames=12,
        size=(24, 24),
        corrupt={"YoYo/v_YoYo_g02_c01.avi": "truncated", "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c02.avi": "zero_frames"},
    )


@pytest.fixture(scope="module")
def index(fake):
    return load_ucf101(fake.root, split=1)  # test groups: g01 (clean); training g02, g03, one of them val


def _all(ds):
    clips, labels = zip(*[(c.numpy(), y.numpy()) for c, y in ds])
    return np.concatenate(clips), np.concatenate(labels)


def test_element_spec_is_static_uint8_clips_and_int32_labels(index):
    ds = make_clip_dataset(index.test, frames=T, stride=STRIDE, size=SIZE, batch_size=4, training=False)
    clip_spec, label_spec = ds.element_spec
    assert clip_spec.shape.as_list() == [None, T, *SIZE, 3] and clip_spec.dtype == tf.uint8
    assert label_spec.shape.as_list() == [None] and label_spec.dtype == tf.int32
    clips, labels = _all(ds)
    assert clips.shape == (len(index.test), T, *SIZE, 3) and labels.dtype == np.int32
    assert ds.options().autotune.enabled is False  # its thread stalled every few epochs (pipeline._finish)


def test_clip_content_matches_its_label(index):
    # each fake class is one solid colour: a clip whose label points at the wrong class fails
    clips, labels = _all(make_clip_dataset(index.test, frames=T, stride=STRIDE, size=SIZE, batch_size=3, training=False))
    for clip, label in zip(clips, labels):
        assert np.abs(clip.reshape(-1, 3).mean(0) - class_color(int(label))).max() < 8


def test_corrupt_files_are_skipped_and_counted_not_fatal(index, fake):
    skipped = SkipCounter()
    listed = index.train + index.val  # the official training list (g02, g03), with both broken files
    ds = make_clip_dataset(listed, frames=T, stride=STRIDE, size=SIZE, batch_size=4, training=True, seed=1, skipped=skipped)
    assert ds.skipped is skipped
    for epoch in range(2):
        clips, labels = _all(ds)
        assert len(labels) == len(listed) - 2  # the truncated and the zero-frame video
    assert skipped.count == 2 and skipped.events == 4  # two files, counted once each, skipped each epoch
    assert {p.split("/")[-1] for p in skipped.paths} == {"v_YoYo_g02_c01.avi", "v_ApplyEyeMakeup_g03_c02.avi"}
    assert all(path in reason for path, reason in skipped.reasons.items())  # messages name the file
    assert "2 videos skipped" in skipped.summary()


def test_training_shuffles_and_resamples_starts_deterministically(tmp_path):
    paths = [(str(write_video(tmp_path / f"v{i}.avi", index_frames(30, (8, 8)))), i % 2) for i in range(6)]

    def epochs(seed):
        ds = make_clip_dataset(paths, frames=T, stride=STRIDE, size=(8, 8), batch_size=6, training=True, seed=seed)
        return [[frame_index(c[0]) for c in next(iter(ds))[0].numpy()] for _ in range(3)]

    first = epochs(5)
    assert first == epochs(5)  # same seed: same clips
    assert len({tuple(e) for e in first}) > 1  # new random starts every epoch
    assert all(0 <= s <= 30 - 7 for e in first for s in e)


def test_eval_clips_are_fixed_centered_and_in_order(tmp_path):
    paths = [(str(write_video(tmp_path / f"v{i}.avi", index_frames(20 + i, (8, 8)))), i) for i in range(3)]
    ds = make_clip_dataset(paths, frames=T, stride=STRIDE, size=(8, 8), batch_size=2, training=False)
    clips, labels = _all(ds)
    assert labels.tolist() == [0, 1, 2]
    assert [frame_index(c[0]) for c in clips] == [(20 + i - 7) // 2 for i in range(3)]
    again, _ = _all(ds)  # second epoch comes from the in-memory cache
    assert np.array_equal(clips, again)


def test_eval_file_cache_and_no_cache(tmp_path):
    paths = [(str(write_video(tmp_path / "v.avi", index_frames(12, (8, 8)))), 0)]
    cached = make_clip_dataset(paths, frames=T, stride=1, size=(8, 8), batch_size=1, training=False, cache=tmp_path / "cache")
    first, _ = _all(cached)
    assert any((tmp_path / "cache").iterdir())  # the cache files were written
    uncached = make_clip_dataset(paths, frames=T, stride=1, size=(8, 8), batch_size=1, training=False, cache=False)
    assert np.array_equal(first, _all(uncached)[0])


def test_argument_errors(index):
    with pytest.raises(ValueError, match="empty"):
        make_clip_dataset([], frames=T, stride=1, size=SIZE, batch_size=1, training=False)
    with pytest.raises(ValueError, match="outside \\[0, 2\\)"):
        make_clip_dataset(index.test, frames=T, stride=1, size=SIZE, batch_size=1, training=False, class_count=2)
    with pytest.raises(ValueError, match="size must be"):
        make_clip_dataset(index.test, frames=T, stride=1, size=(16,), batch_size=1, training=False)


def test_train_val_from_an_index(fake):
    idx = load_dataset_index(str(fake.root), split=2)
    skipped = SkipCounter()
    train, val = make_train_val_datasets(idx, frames=T, stride=STRIDE, size=SIZE, batch_size=4, skipped=skipped)
    assert train.element_spec == val.element_spec
    n_val = len(_all(val)[1])
    assert 0 < n_val <= len(idx.val)
    assert len(_all(train)[1]) + n_val == len(idx.train) + len(idx.val) - skipped.count


def test_skip_counter_is_thread_safe():
    counter = SkipCounter()
    threads = [threading.Thread(target=lambda i=i: [counter.add(f"f{i % 7}", "bad") for _ in range(200)]) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.count == 7 and counter.events == 1600
    counter.reset()
    assert counter.count == 0 and counter.summary() == "0 videos skipped"


# --------------------------------------------------------------------------- TFDS (mocked, offline)


def test_mocked_tfds_ucf101_is_what_we_expect(no_network):
    # what the mock yields (and what our pipeline is written against): encoded frames + label
    with tfds.testing.mock_data(num_examples=2):
        ds = tfds.load("ucf101/ucf101_1_256", split="train", decoders={"video": tfds.decode.SkipDecoding()})
        example = next(iter(ds))
    assert example["video"].dtype == tf.string and example["video"].shape.rank == 1
    assert example["label"].dtype == tf.int64


@pytest.mark.parametrize("training", [True, False])
def test_tfds_clips_have_the_same_spec_as_file_clips(no_network, training):
    with tfds.testing.mock_data(num_examples=5):
        ds = make_tfds_dataset(
            "ucf101/ucf101_1_256", "train" if training else "test",
            frames=T, stride=STRIDE, size=SIZE, batch_size=2, training=training, seed=3, class_count=101,
        )
        batches = list(ds)
    clip_spec, label_spec = ds.element_spec
    assert clip_spec.shape.as_list() == [None, T, *SIZE, 3] and clip_spec.dtype == tf.uint8
    assert label_spec.dtype == tf.int32
    clips = np.concatenate([c.numpy() for c, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert clips.shape == (5, T, *SIZE, 3)
    assert labels.min() >= 0 and labels.max() < 101
    assert 90 < clips.mean() < 165 and clips.std() > 1  # decoded random mock frames, not a zero fill
    assert ds.skipped.count == 0
    assert ds.options().autotune.enabled is False


def test_tfds_eval_clip_is_the_centered_clip_of_the_video(no_network):
    with tfds.testing.mock_data(num_examples=2):
        ds = make_tfds_dataset("ucf101/ucf101_1_256", "test", frames=T, stride=STRIDE, size=SIZE, batch_size=2, training=False)
        (clips, labels), = list(ds)
        # the same mocked examples, frames still encoded (the mock is deterministic per decoding mode)
        raw, info = tfds.load("ucf101/ucf101_1_256", split="test", with_info=True, decoders={"video": tfds.decode.SkipDecoding()})
        raw = list(raw)
    frame_feature = info.features["video"].feature
    for clip, label, example in zip(clips.numpy(), labels.numpy(), raw):
        encoded = example["video"].numpy()
        idx = clip_indices(len(encoded), T, STRIDE)  # centered, as for files
        frames = tf.stack([frame_feature.decode_example(encoded[i]) for i in idx])
        want = tf.cast(tf.round(tf.image.resize(frames, SIZE, method="area")), tf.uint8).numpy()
        assert label == int(example["label"])
        assert np.array_equal(clip, want)


def test_tfds_through_the_index(no_network):
    index = load_dataset_index("tfds:ucf101/ucf101_1_256")
    with tfds.testing.mock_data(num_examples=3):
        train, val = make_train_val_datasets(index, frames=T, stride=1, size=SIZE, batch_size=3)
        (clips, labels), = list(val)
    assert clips.shape == (3, T, *SIZE, 3) and train.element_spec == val.element_spec
    with pytest.raises(ValueError, match="class_count=7"):
        with tfds.testing.mock_data(num_examples=1):
            make_tfds_dataset("ucf101/ucf101_1_256", "train", frames=T, stride=1, size=SIZE, batch_size=1, training=False, class_count=7)
