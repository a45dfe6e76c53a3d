"""deltanet.tf_workarounds: the oneDNN 1x1 stride-2 backward-weights crash (uxlfoundation/oneDNN#6035)
is found before training starts, and training.distill stops with one line instead of a segfault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras

from deltanet import tf_workarounds as tw

ROOT = Path(__file__).resolve().parents[1]


def _model(cin, stride=2, kernel=1):
    inp = keras.Input((12, 12, cin))
    x = keras.layers.Conv2D(16, kernel, strides=stride, name="shortcut")(inp)
    inner = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)), name="inner")
    outer_in = keras.Input((12, 12, cin))
    return keras.Model(outer_in, inner(outer_in), name="wrapper")  # nested: found inside too


def test_hazards_are_the_1x1_strided_convs_on_few_channels(monkeypatch):
    assert tw.strided_pointwise_hazards(_model(8)) == ["shortcut"]
    assert tw.strided_pointwise_hazards(_model(3)) == ["shortcut"]
    assert tw.strided_pointwise_hazards(_model(16)) == []  # a whole channel block
    assert tw.strided_pointwise_hazards(_model(8, stride=1)) == []
    assert tw.strided_pointwise_hazards(_model(8, kernel=3)) == []
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    try:
        tw.check_training(_model(8))
        raise AssertionError("no error")
    except RuntimeError as e:
        assert "TF_ENABLE_ONEDNN_OPTS=0" in str(e) and "shortcut" in str(e) and "\n" not in str(e)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    tw.check_training(_model(8))  # TensorFlow's own kernels: nothing to stop


def test_distill_stops_with_one_line_before_any_work(tmp_path):
    model = _model(8).layers[-1]  # the per-frame model
    path = tmp_path / "pre.keras"
    model.save(path)
    import numpy as np
    from fakes import write_video

    frames = np.random.default_rng(0).integers(0, 255, (6, 12, 12, 3), dtype=np.uint8)
    videos = [tmp_path / f"{n}.avi" for n in "ab"]
    for v in videos:
        write_video(v, frames, fps=10)
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    r = subprocess.run([sys.executable, "-m", "training.distill", "--model", str(path), "--videos", *map(str, videos),
                        "--out", str(tmp_path / "out.keras")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(env, PYTHONPATH=str(ROOT)))  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "oneDNN" in last and "TF_ENABLE_ONEDNN_OPTS=0" in last, r.stderr[-2000:]
    assert not (tmp_path / "out.keras").exists()
