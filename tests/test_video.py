"""training.video: real cv2 files in and out, clip placement, broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fakes import corrupt_file, frame_index, index_frames, solid_frames, write_video
from training.video import (
    VideoError,
    clip_indices,
    clip_span,
    is_video_file,
    probe,
    read_clip,
    read_video,
)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A 30-frame video whose frame i has grey level 8 + 6 i."""
    path = tmp_path_factory.mktemp("video") / "indexed.avi"
    write_video(path, index_frames(30, (32, 32)))
    return path


def test_red_frame_comes_back_red_rgb(tmp_path):
    # OpenCV works in BGR; writing and reading must both convert, or red turns blue
    path = write_video(tmp_path / "red.avi", solid_frames(3, (24, 40), (255, 0, 0)))
    clip = read_clip(path, frames=2)
    assert clip.shape == (2, 24, 40, 3) and clip.dtype == np.uint8
    r, g, b = clip[..., 0].mean(), clip[..., 1].mean(), clip[..., 2].mean()
    assert r > 240 and g < 15 and b < 15


def test_probe_reads_the_header(indexed):
    info = probe(indexed)
    assert (info.frames, info.height, info.width) == (30, 32, 32)
    assert info.fps == pytest.approx(25.0)


def test_read_video_decodes_every_frame_in_order(indexed):
    video = read_video(indexed)
    assert video.shape == (30, 32, 32, 3)
    assert [frame_index(f) for f in video] == list(range(30))


def test_resize_uses_the_requested_height_and_width(indexed):
    clip = read_clip(indexed, frames=3, size=(20, 12))
    assert clip.shape == (3, 20, 12, 3)
    # INTER_AREA of a flat frame is the same flat frame
    assert [frame_index(f) for f in clip] == [frame_index(f) for f in read_clip(indexed, frames=3)]


def test_eval_clip_is_centered_and_fixed(indexed):
    # span = (4 - 1) * 2 + 1 = 7; centered start = (30 - 7) // 2 = 11
    clip = read_clip(indexed, frames=4, stride=2)
    assert [frame_index(f) for f in clip] == [11, 13, 15, 17]
    assert np.array_equal(clip, read_clip(indexed, frames=4, stride=2))


def test_explicit_start(indexed):
    clip = read_clip(indexed, frames=3, stride=3, start=2)
    assert [frame_index(f) for f in clip] == [2, 5, 8]


def test_random_start_stays_in_range_and_follows_the_seed(indexed):
    starts = []
    rng = np.random.default_rng(7)
    for _ in range(12):
        idx = [frame_index(f) for f in read_clip(indexed, frames=4, stride=2, rng=rng)]
        assert idx == list(range(idx[0], idx[0] + 7, 2))  # contiguous with the stride
        starts.append(idx[0])
    assert min(starts) >= 0 and max(starts) <= 30 - 7
    assert len(set(starts)) > 3  # actually random
    again = [clip_indices(30, 4, 2, rng=r)[0] for r in [np.random.default_rng(7)] * 12]
    assert again == starts  # same seed, same starts (same draws as read_clip makes)


def test_clip_indices_short_video_loops_or_repeats_last():
    assert clip_indices(5, 4, 2).tolist() == [0, 2, 4, 1]  # loop: wraps modulo the length
    assert clip_indices(5, 4, 2, pad="last").tolist() == [0, 2, 4, 4]
    assert clip_indices(5, 4, 2, rng=np.random.default_rng(0)).tolist() == [0, 2, 4, 1]
    assert clip_span(4, 2) == 7


def test_clip_indices_rejects_bad_arguments():
    with pytest.raises(ValueError, match="start=9"):
        clip_indices(5, 2, 1, start=9)
    with pytest.raises(ValueError, match="pad"):
        clip_indices(5, 2, 1, pad="mirror")
    with pytest.raises(ValueError, match="frames and stride"):
        clip_indices(5, 0, 1)


def test_short_video_is_looped_when_read(tmp_path):
    path = write_video(tmp_path / "short.avi", index_frames(5))
    assert [frame_index(f) for f in read_clip(path, frames=4, stride=2)] == [0, 2, 4, 1]
    assert [frame_index(f) for f in read_clip(path, frames=4, stride=2, pad="last")] == [0, 2, 4, 4]


@pytest.mark.parametrize(
    "kind, message",
    [("garbage", "cannot open"), ("empty", "cannot open"), ("zero_frames", "no decodable frame"), ("missing", "does not exist")],
)
def test_unreadable_files_raise_video_error_naming_the_file(tmp_path, kind, message):
    path = write_video(tmp_path / f"{kind}.avi", index_frames(10))
    corrupt_file(path, kind)
    with pytest.raises(VideoError, match=f"{kind}.avi.*{message}|{message}.*{kind}.avi"):
        read_clip(path, frames=2)
    with pytest.raises(VideoError):
        read_video(path)


def test_truncated_file_raises_when_the_clip_is_past_the_cut(tmp_path, indexed):
    path = tmp_path / "truncated.avi"
    path.write_bytes(indexed.read_bytes())
    corrupt_file(path, "truncated")  # keeps ~30% of the bytes; the header still says 30 frames
    assert probe(path).frames == 30
    with pytest.raises(VideoError, match="truncated"):
        read_clip(path, frames=4, stride=2, start=20)
    with pytest.raises(VideoError, match="truncated"):
        read_video(path)


def test_truncated_file_prefix_is_still_usable(tmp_path, indexed):
    # decoding is sequential and stops at the last needed frame: a clip before the cut is fine
    path = tmp_path / "truncated.avi"
    path.write_bytes(indexed.read_bytes())
    corrupt_file(path, "truncated")
    assert [frame_index(f) for f in read_clip(path, frames=3, start=0)] == [0, 1, 2]


def _cut_to_decodable(src: Path, dst: Path, frames: int) -> None:
    """Cut bytes off the end of ``src`` until exactly ``frames`` frames decode (header unchanged)."""
    data = src.read_bytes()
    for cut in range(100, len(data), 100):
        dst.write_bytes(data[:-cut])
        cap = cv2.VideoCapture(str(dst))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        if n == frames:
            return
    raise AssertionError(f"could not cut {src} to {frames} decodable frames")


def test_small_header_overcount_is_tolerated_large_is_not(tmp_path, indexed):
    # headers estimated from duration may promise a frame or two too many: read what is there
    near = tmp_path / "near.avi"
    _cut_to_decodable(indexed, near, 28)  # 28 of 30: within the 10% tolerance
    assert probe(near).frames == 30
    clip = read_clip(near, frames=3, stride=2, start=25)
    assert [frame_index(f) for f in clip] == [25, 27, 1]  # 29 wraps around the true length 28
    assert len(read_video(near)) == 28
    far = tmp_path / "far.avi"
    _cut_to_decodable(indexed, far, 20)
    with pytest.raises(VideoError, match="header says 30 frames but decoding stopped at frame 20"):
        read_clip(far, frames=3, stride=2, start=25)


def test_write_video_validates_frames(tmp_path):
    with pytest.raises(ValueError, match="expected uint8"):
        write_video(tmp_path / "x.avi", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="size"):
        write_video(tmp_path / "x.avi", [])


def test_is_video_file():
    assert is_video_file("a/b/v_X_g01_c01.AVI") and is_video_file("clip.webm")
    assert not is_video_file("notes.txt")
