"""``--crop x,y,w,h`` (``streaming.preprocess.Crop``) and ``--rescale`` on the command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from streaming.preprocess import Crop, crop_image, to_model_input

ROOT = Path(__file__).resolve().parents[1]


def _frame(h: int = 48, w: int = 64) -> np.ndarray:
    """Every pixel says where it is: R = x, G = y."""
    yy, xx = np.mgrid[:h, :w]
    return np.stack([xx, yy, np.full_like(xx, 7)], axis=-1).astype(np.uint8)


def test_pixel_crop_cuts_the_right_pixels():
    crop = Crop.parse("10,5,20,12")
    out = crop(_frame())
    assert out.shape == (12, 20, 3) and out.flags.c_contiguous
    assert out[0, 0, 0] == 10 and out[0, 0, 1] == 5 and out[-1, -1, 0] == 29 and out[-1, -1, 1] == 16
    assert crop.spec() == "10,5,20,12" and crop.size(64, 48) == (20, 12)


def test_fractional_crop():
    crop = Crop.parse("0.25,0.5,0.5,0.5")
    assert crop.fractional and crop.box(64, 48) == (16, 24, 48, 48)
    out = crop(_frame())
    assert out[0, 0, 0] == 16 and out[0, 0, 1] == 24 and out.shape == (24, 32, 3)
    assert Crop.parse(crop.spec()) == crop


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,0,4", "-1,0,4,4", "0.5,0.5,0.75,0.2", "0.1,0.1,1.5,0.5", "1,,2,3", "nan,0,0.5,0.5"])
def test_bad_crop_values(text):
    with pytest.raises(ValueError):
        Crop.parse(text)


def test_crop_must_fit_the_frame():
    with pytest.raises(ValueError, match="does not fit in the 64x48 frame"):
        Crop.parse("50,0,20,10").box(64, 48)
    with pytest.raises(ValueError, match="less than one pixel"):
        Crop.parse("0.5,0.5,0.001,0.001").box(64, 48)


def test_crop_before_resize():
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    crop = Crop.parse("8,4,32,32")
    got = to_model_input(crop_image(frame, crop), (16, 16, 3))
    expected = cv2.resize(frame[4:36, 8:40], (16, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(got, expected)
    assert crop_image(frame, None) is frame


def test_bench_reads_cropped_frames(tmp_path):
    from streaming.bench import read_frames
    from training.video import read_video, write_video

    frames = np.random.default_rng(1).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / "v.avi", list(frames))
    decoded = read_video(path)
    got = read_frames(str(path), 5, (16, 16, 1), Crop.parse("8,4,32,32"))
    expected = np.stack([cv2.cvtColor(cv2.resize(f[4:36, 8:40], (16, 16), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
                         for f in decoded])[..., None]
    np.testing.assert_array_equal(got, expected)


def _cli(module: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module, extra", [
    ("streaming.live", ["--headless"]),
    ("streaming.report", ["--out", "unused"]),
    ("streaming.bench", []),
])
@pytest.mark.parametrize("crop", ["1,2,3", "0,0,-4,4", "0.2,0.2,0.9,0.5", "x"])
def test_bad_crop_one_line_exit_2(module, extra, crop):
    r = _cli(module, "--model", "m.keras", "--source", "synthetic:", "--crop", crop, *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--crop" in lines[0]


@pytest.mark.parametrize("rescale", ["1", "0,1", "a,b", "1/0,1", "inf,0"])
def test_bad_rescale_one_line_exit_2(rescale):
    r = _cli("training.fit", "--arch", "model.h5", "--rescale", rescale)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rescale" in lines[0]


def test_live_crop_outside_the_source_is_one_line(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"never loaded: the crop is checked against the source first")
    r = _cli("streaming.live", "--model", str(tmp_path / "m.keras"), "--source", "synthetic:64x48", "--headless",
             "--crop", "40,0,40,10")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["python -m streaming.live: error: --crop: crop 40,0,40,10 does not fit in the 64x48 frame"]


def test_crop_in_help_with_default():
    r = _cli("streaming.bench", "--help")
    assert "--crop x,y,w,h" in r.stdout and "default: the whole frame" in r.stdout
