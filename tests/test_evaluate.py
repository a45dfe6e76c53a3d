"""``python -m training.evaluate`` end to end on a tiny generated dataset, and the one density:
the engine's per-layer densities equal the Keras model's (``deltanet.measure``) on the same frames."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deltanet
from streaming.prediction import SmoothedPrediction
from training.synthetic import make_embedded_dataset
from training.ucf101 import load_ucf101
from training.video import read_video

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 8 groups of one clip per class: 2 test groups, 1 val group, 5 train groups
    return make_embedded_dataset(tmp_path_factory.mktemp("emb") / "emb", num_classes=3, videos_per_class=8,
                                 clips_per_group=1, frames=12, size=48, progress=False)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny delta model trained for a few epochs on the train subset (trained, not random:
    thresholds and near-ties behave differently there)."""
    import keras

    from training.fit import FitConfig, compile_model
    from training.pipeline import make_subset_dataset

    index = load_ucf101(data)
    keras.utils.set_random_seed(0)
    model = deltanet.build_model(3, arch="tiny", size=SIZE, threshold=0.05,
                                 info={"class_names": index.class_names, "frames": 4, "stride": 2})
    compile_model(model, FitConfig(epochs=4), 4)
    ds = make_subset_dataset(index, "train", frames=4, stride=2, size=(SIZE, SIZE), batch_size=4, training=True)
    model.fit(ds, epochs=4, verbose=0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


def _evaluate(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "training.evaluate", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_evaluate_streaming_end_to_end(data, trained, tmp_path):
    out = tmp_path / "ev.json"
    r = _evaluate("--model", trained, "--data", data, "--subset", "test", "--streaming", "--json", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "streaming accuracy" in r.stdout
    res = json.loads(out.read_text())
    assert res["subset"] == "test" and res["videos"] == 6 and res["window"] == 12  # 3 x the 4-frame training clips
    assert res["tuning"] is None  # no MODEL.tuning.json beside the model: the untuned engine (--tuning auto)
    for key in ("accuracy", "mac_density"):
        assert 0.0 <= res["clip"][key] <= 1.0
    s = res["streaming"]
    for key in ("accuracy_last_frame", "accuracy_mean", "mac_density", "executed_mac_density", "top1_agreement_with_dense"):
        assert 0.0 <= s[key] <= 1.0, key
    assert 0.0 <= res["dense_streaming"]["accuracy_last_frame"] <= 1.0
    # the per-video CSV is what the JSON summarizes
    rows = list(csv.DictReader(open(f"{out.with_suffix('')}_videos.csv")))
    assert len(rows) == 6 and sum(int(r["frames"]) for r in rows) == s["frames"] == 6 * 12
    assert s["accuracy_last_frame"] == pytest.approx(np.mean([int(r["correct_last_frame"]) for r in rows]))
    assert s["accuracy_mean"] == pytest.approx(np.mean([float(r["accuracy_mean"]) for r in rows]), abs=1e-5)
    assert s["top1_agreement_with_dense"] == pytest.approx(np.mean([float(r["top1_agreement_with_dense"]) for r in rows]), abs=1e-5)
    assert res["accuracy_vs_frames"]["delta"][-1] == pytest.approx(s["accuracy_last_frame"], abs=1e-4)
    png = Path(f"{out.with_suffix('')}_accuracy_vs_frames.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    layers = list(csv.DictReader(open(f"{out.with_suffix('')}_layers.csv")))
    assert [la["name"] for la in layers] == [la["name"] for la in res["layers"]] and len(layers) >= 3
    # the dense figures are the per-frame Keras network, smoothed as streaming.live smooths
    model = deltanet.load_model(trained)
    dense = deltanet.per_frame_model(model)
    index = load_ucf101(data)
    for (path, label), row in zip(index.test, rows):
        assert Path(path).name == row["video"]
        frames = np.stack([_resize(f) for f in read_video(path)])
        probs = SmoothedPrediction(12).run(np.asarray(dense.predict_on_batch(frames)))
        assert int(np.argmax(probs[-1])) == int(row["dense_pred_last_frame"])


def _resize(frame):
    import cv2

    return cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def test_val_subset_and_max_videos(data, trained, tmp_path):
    out = tmp_path / "ev.json"
    r = _evaluate("--model", trained, "--data", data, "--subset", "val", "--streaming", "--max-videos", "2", "--json", out)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["subset"] == "val" and res["videos"] == 2
    assert len({Path(r["video"]).name.split("_")[1] for r in csv.DictReader(open(f"{out.with_suffix('')}_videos.csv"))}) == 2
    for layer in res["layers"]:
        # executed can be below transmitted: a delta at the border reaches fewer output taps
        assert 0.0 <= layer["temporal_density_streaming"] <= 1.0 and 0.0 <= layer["executed_density_streaming"] <= 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model.keras"], "no such model file"),
        (["--model", "MODEL", "--data", "/nonexistent/root"], "/nonexistent/root"),
        (["--model", "MODEL", "--subset", "train"], "--subset"),
        (["--model", "MODEL", "--max-videos", "0"], "--max-videos"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, message, trained):
    r = _evaluate(*[trained if a == "MODEL" else a for a in args], timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_engine_and_keras_measure_the_same_per_layer_densities(trained, data):
    """One density: ``FrameStats.nonzero_deltas`` over frames t >= 1 equals ``deltanet.measure``'s
    temporal density of the same clip, layer by layer (trained model, real video frames)."""
    from deltanet.measure import measure_model
    from streaming.engine import DeltaEngine

    model = deltanet.load_model(trained)
    index = load_ucf101(data)
    frames = np.stack([_resize(f) for f in read_video(index.val[0][0])])  # 12 frames, every one
    measured = measure_model(model, [frames[None]])
    engine = DeltaEngine.from_keras(model)
    engine.reset()
    nnz = np.stack([engine.step(f)[1].nonzero_deltas for f in frames])
    streaming = nnz[1:].sum(axis=0) / (engine.input_elements * (len(frames) - 1))
    keras_density = {la["name"]: la["temporal_density"] for la in measured["layers"]}
    assert set(keras_density) == set(engine.layer_names)
    for name, d in zip(engine.layer_names, streaming):
        assert d == pytest.approx(keras_density[name], abs=1e-6), name
    assert any(d > 0 for d in streaming) and any(d < 1 for d in streaming)  # not a trivial stream
