"""DeltaEngine against the Keras clip model: exact per-frame logits, in both delta modes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras

import deltanet
from deltanet.deltafy import deltafy
from keras_logits import predict_clip
from streaming.convert import ConversionError, to_plan
from streaming.engine import DeltaEngine

ROOT = Path(__file__).resolve().parents[1]


def _randomize_bn(model, seed=0):
    """Give BatchNorm non-trivial statistics so folding is actually exercised."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape))
        elif "moving_mean" in w.path:
            w.assign(rng.normal(0, 0.2, w.shape))
        elif w.path.endswith("gamma"):
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif w.path.endswith("beta"):
            w.assign(rng.normal(0, 0.1, w.shape))


def static_camera_frames(n, size=32, seed=0):
    """A static textured scene with sensor noise and a moving bright square."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (size, size, 3))
    frames = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        f = base + rng.normal(0, 3, base.shape)
        y, x = 3 + (t // 3) % (size - 10), 2 + t % (size - 9)
        f[y : y + 6, x : x + 6] = 250
        frames[t] = np.clip(f, 0, 255)
    return frames


def _keras_frame_logits(model, frames):
    return predict_clip(deltanet.frame_logits_model(model), frames)


def _compare(engine_logits, keras_logits):
    rel = np.abs(engine_logits - keras_logits).max(axis=1) / np.abs(keras_logits).max(axis=1)
    return float(rel.max()), float(np.mean(engine_logits.argmax(1) == keras_logits.argmax(1)))


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_engine_matches_keras_over_500_frames(mode):
    keras.utils.set_random_seed(3)
    model = deltanet.build_model(6, arch="tiny", size=32, mode=mode, threshold=0.08, step=0.08)
    _randomize_bn(model)
    frames = static_camera_frames(500)
    expected = _keras_frame_logits(model, frames)
    engine = DeltaEngine.from_keras(model)
    got, stats = engine.run(frames)
    err, agree = _compare(got, expected)
    assert err <= 1e-4 and agree == 1.0, (err, agree)
    # ... and it actually skipped work: later frames execute a fraction of the dense MACs
    density = np.mean([s.macs for s in stats[1:]]) / engine.dense_macs.sum()
    assert density < 0.6, density
    assert stats[0].keyframe and stats[0].macs == engine.dense_macs.sum()


def test_every_granularity_agrees_and_pixelwise_and_patchwise_execute_more():
    keras.utils.set_random_seed(4)
    model = deltanet.build_model(4, arch="tiny", size=32, threshold=0.05)
    _randomize_bn(model, 1)
    plan = to_plan(model)
    frames = static_camera_frames(40, seed=2)
    elem, se = DeltaEngine(plan, granularity="element").run(frames)
    pix, sp = DeltaEngine(plan, granularity="pixel").run(frames)
    patch, sq = DeltaEngine(plan, granularity="patch").run(frames)
    patch_par, _ = DeltaEngine(plan, granularity="patch-parallel", threads=2).run(frames)
    np.testing.assert_allclose(elem, pix, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(elem, patch, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(patch, patch_par, rtol=1e-4, atol=1e-5)
    assert sum(s.macs for s in sp[1:]) >= sum(s.macs for s in se[1:])
    # patch-wise multiplies the zeros of every touched output's patch: at least pixel-wise's products
    assert sum(s.macs for s in sq[1:]) >= sum(s.macs for s in sp[1:])


def test_deltafied_keras_mobilenetv2_runs_exactly():
    keras.utils.set_random_seed(5)
    frame_model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=5)
    _randomize_bn(frame_model, 2)
    clip = deltafy(frame_model, mode="threshold", threshold=0.05)
    frames = static_camera_frames(60, seed=3)
    # keras.applications expects [-1, 1] inputs; the engine takes uint8 0..255 frames, so
    # feed both the same float values through the engine's identity input step.
    expected = predict_clip(clip, frames)
    engine = DeltaEngine(to_plan(clip))
    got, _ = engine.run(frames)
    err, agree = _compare(got, expected)
    assert err <= 1e-4 and agree == 1.0, (err, agree)


def test_baseline_model_runs_as_exact_delta_network():
    keras.utils.set_random_seed(6)
    model = deltanet.build_model(3, arch="tiny", size=32, baseline=True)
    _randomize_bn(model, 3)
    frames = static_camera_frames(30, seed=4)
    plan = to_plan(model)
    assert any(s.get("exact") for s in plan.steps)  # zero-threshold change encoders were inserted
    got, stats = DeltaEngine(plan).run(frames)
    err, agree = _compare(got, _keras_frame_logits(model, frames))
    assert err <= 1e-4 and agree == 1.0
    dense, _ = DeltaEngine(plan, mode="dense").run(frames)
    np.testing.assert_allclose(dense, got, rtol=1e-4, atol=1e-5)


def test_keyframes_reset_drift_and_streams_are_independent():
    keras.utils.set_random_seed(7)
    model = deltanet.build_model(3, arch="tiny", size=32, threshold=0.05)
    plan = to_plan(model)
    frames = static_camera_frames(25, seed=5)
    a = DeltaEngine(plan, keyframe_interval=10)
    out_a, stats = a.run(frames)
    assert [s.index for s in stats if s.keyframe] == [0, 10, 20]
    b = DeltaEngine(plan)
    out_b, _ = b.run(frames)
    np.testing.assert_allclose(out_a, out_b, rtol=1e-4, atol=1e-5)
    # two engines share the weights (not copies) but not the state
    c = b.clone()
    assert c.plan.arrays is b.plan.arrays
    first, _ = c.step(frames[0])
    np.testing.assert_allclose(first, out_b[0], rtol=1e-5, atol=1e-6)
    b.reset()
    np.testing.assert_allclose(b.step(frames[0])[0], out_b[0], rtol=1e-5, atol=1e-6)


def test_bad_frames_are_rejected_clearly():
    model = deltanet.build_model(3, arch="tiny", size=32)
    engine = DeltaEngine.from_keras(model)
    bad = np.zeros((32, 32, 3), np.float32)
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        engine.step(bad)
    with pytest.raises(ValueError, match="RGB frame"):
        engine.step(np.zeros((32, 32), np.uint8))
    # a frame of another size is resized, not rejected
    logits, _ = engine.step(np.zeros((48, 64, 3), np.uint8))
    assert logits.shape == (3,)


def test_unsupported_layers_are_all_named():
    inputs = keras.Input((None, 16, 16, 3))
    x = deltanet.FrameWise(keras.layers.Conv2D(4, 3, dilation_rate=2))(inputs)
    x = deltanet.FrameWise(keras.layers.UpSampling2D())(x)
    x = deltanet.FrameWise(keras.layers.GlobalAveragePooling2D())(x)
    model = keras.Model(inputs, x)
    with pytest.raises(ConversionError, match=r"2 layer\(s\).*dilated.*UpSampling2D"):
        to_plan(model)


def test_no_allocation_growth_per_frame():
    import tracemalloc

    model = deltanet.build_model(3, arch="tiny", size=32, threshold=0.05)
    engine = DeltaEngine.from_keras(model)
    frames = static_camera_frames(40, seed=6)
    engine.run(frames[:10])
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for f in frames[10:]:
        engine.step(f)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename") if stat.size_diff > 0)
    assert grown < 200_000, grown  # no per-frame activation-sized buffers (each is ~16 KB here)


def test_execution_modules_import_neither_tensorflow_nor_keras():
    code = (
        "import sys\n"
        "import streaming.engine, streaming.plan, streaming.sources, ops, deltanet.density\n"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stdout + r.stderr
