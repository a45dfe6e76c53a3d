"""training.frame_cache: training clips sampled from the decoded-once frames equal decoded clips."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import corrupt_file, write_video
from training import frame_cache
from training.frame_cache import FrameCache
from training.pipeline import SkipCounter, make_clip_dataset
from training.video import read_clip

T, STRIDE, SIZE = 4, 2, (20, 24)


@pytest.fixture()
def videos(tmp_path):
    """Six noisy videos of different lengths (different frames differ), one corrupt."""
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate((12, 9, 5, 12, 16, 12)):
        p = tmp_path / "videos" / f"v{i}.avi"
        write_video(p, rng.integers(0, 256, (n, 30, 34, 3), dtype=np.uint8))
        paths.append(str(p))
    corrupt_file(paths[3], "truncated")
    return paths


def _clips(ds):
    return [(c.numpy(), y.numpy()) for c, y in ds]


def test_training_clips_from_the_cache_equal_decoded_clips_every_epoch(videos, tmp_path):
    entries = [(p, i % 3) for i, p in enumerate(videos)]
    common = dict(frames=T, stride=STRIDE, size=SIZE, batch_size=2, training=True, seed=7)
    skipped = {k: SkipCounter() for k in ("files", "cache")}
    decoded = make_clip_dataset(entries, skipped=skipped["files"], **common)
    cached = make_clip_dataset(entries, skipped=skipped["cache"], frame_cache=tmp_path / "cache", **common)
    starts = set()
    for _ in range(3):  # fresh random starts every epoch, the same ones on both paths
        a, b = _clips(decoded), _clips(cached)
        assert len(a) == len(b) == 3  # 5 decodable videos: batches of 2, 2, 1
        for (ca, ya), (cb, yb) in zip(a, b):
            np.testing.assert_array_equal(ca, cb)
            np.testing.assert_array_equal(ya, yb)
            starts.update(c[0].tobytes() for c in ca)
    assert len(starts) > 5, "clips should start at different frames in different epochs"
    assert skipped["files"].paths == skipped["cache"].paths == [videos[3]]


def test_clip_matches_read_clip_for_centered_and_seeded_starts(videos, tmp_path):
    cache = FrameCache.load(videos, SIZE, tmp_path / "cache")
    assert cache.lengths.tolist() == [12, 9, 5, 0, 16, 12]
    assert cache.nbytes == (12 + 9 + 5 + 16 + 12) * SIZE[0] * SIZE[1] * 3
    for p in (videos[0], videos[2], videos[4]):  # videos[2] is shorter than a clip's span: looped
        for seed in (None, 1, 2):
            rng = lambda: np.random.default_rng(seed) if seed is not None else None  # noqa: E731
            np.testing.assert_array_equal(cache.clip(p, T, STRIDE, rng(), "loop"), read_clip(p, T, STRIDE, SIZE, rng=rng()))
    with pytest.raises(frame_cache.VideoError, match="truncated"):
        cache.clip(videos[3], T, STRIDE, None, "loop")
    with pytest.raises(frame_cache.VideoError, match="not in the frame cache"):
        cache.clip("elsewhere.avi", T, STRIDE, None, "loop")


def test_the_cache_is_built_once_and_rebuilt_when_a_video_changes(videos, tmp_path, monkeypatch):
    FrameCache.load(videos, SIZE, tmp_path / "cache")
    calls = []
    real = frame_cache.read_video
    monkeypatch.setattr(frame_cache, "read_video", lambda *a, **k: calls.append(a) or real(*a, **k))
    FrameCache.load(videos, SIZE, tmp_path / "cache")
    assert calls == [], "a complete cache is opened, not rebuilt"
    write_video(videos[0], np.zeros((7, 30, 34, 3), np.uint8))  # new content, new size and mtime
    cache = FrameCache.load(videos, SIZE, tmp_path / "cache")
    assert len(calls) == len(videos) and cache.lengths[0] == 7
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2  # one cache per content; the old one is never read back


def test_an_interrupted_build_leaves_nothing_that_counts_as_a_cache(videos, tmp_path, monkeypatch):
    real = frame_cache.read_video

    def interrupted(path, size):
        if path == videos[4]:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(frame_cache, "read_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        FrameCache.load(videos, SIZE, tmp_path / "cache", workers=1)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(frame_cache, "read_video", real)
    assert FrameCache.load(videos, SIZE, tmp_path / "cache").lengths[4] == 16
