"""The one frame interpreter: dense, delta and profiled frames of the same loop agree."""

from __future__ import annotations

import numpy as np
import pytest

import keras

import deltanet
from deltanet.deltafy import deltafy
from streaming.convert import to_plan
from streaming.engine import DeltaEngine
from test_engine import _randomize_bn, static_camera_frames


def _every_op_model():
    """A frame model that exercises every step kind: pad, pools, concat, add, affine, flatten."""
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.ZeroPadding2D(((1, 0), (0, 1)))(x)
    a = keras.layers.Conv2D(8, 3, strides=2, padding="valid", activation="relu")(x)
    b = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid")(x)
    b = keras.layers.BatchNormalization()(keras.layers.Activation("relu")(b))  # not foldable: affine step
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    y = keras.layers.SeparableConv2D(11, 3, padding="same")(x)
    z = keras.layers.Conv2D(11, 1)(x)
    x = keras.layers.Add()([y, z, y])
    x = keras.layers.AveragePooling2D(2)(keras.layers.LeakyReLU(0.1)(x))
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_dense_delta_and_profiled_frames_agree_on_every_op(mode):
    keras.utils.set_random_seed(11)
    frame_model = _every_op_model()
    _randomize_bn(frame_model, 4)
    clip = deltafy(frame_model, mode=mode, threshold=0.04, step=0.04)
    plan = to_plan(clip)
    assert {"pad", "pool", "concat", "add", "affine", "flatten", "activation", "depthwise", "conv2d"} <= {s["op"] for s in plan.steps}
    frames = static_camera_frames(40, size=24, seed=9)
    # the delta kernels against the dense ones: no dense fallback in delta frames (a layer whose
    # whole input changed would run dense; tests/test_fallback.py checks that mix)
    delta, sd = DeltaEngine(plan, fallback=False).run(frames)
    profiled, sp = DeltaEngine(plan, fallback=False, profile=True).run(frames)
    dense, sk = DeltaEngine(plan, keyframe_interval=1).run(frames)  # every frame a dense pass
    # profiling only reads a clock: the very same results
    np.testing.assert_array_equal(delta, profiled)
    for a, b in zip(sd, sp):
        np.testing.assert_array_equal(a.executed_macs, b.executed_macs)
        np.testing.assert_array_equal(a.nonzero_deltas, b.nonzero_deltas)
    assert np.isnan(sd[5].layer_ms).all() and sd[5].phase_ms == {}
    assert np.all(sp[5].layer_ms > 0) and set(sp[5].phase_ms) == {"input", "encode", "mac", "activation", "other"}
    assert sum(sp[5].phase_ms.values()) <= sp[5].total_ms
    # dense frames compute the same function as delta frames (another summation order)
    assert all(s.keyframe for s in sk) and not any(s.keyframe for s in sd[1:])
    np.testing.assert_allclose(dense, delta, rtol=1e-4, atol=1e-5 * np.abs(delta).max())
    # the same deltas are transmitted, up to float32 decision flips: the dense kernels sum in another order, so an
    # element sitting on a quantization/threshold boundary can land on the other side (seen: 2 of 390 in one
    # quantize-mode layer after the dense depthwise kernel was reordered, carried for some frames until the
    # element moves again); dense frames execute every MAC
    for a, b in zip(sd, sk):
        np.testing.assert_allclose(a.nonzero_deltas, b.nonzero_deltas, rtol=0.02, atol=2)
        np.testing.assert_array_equal(b.executed_macs, b.dense_macs)
    # and both match Keras
    expected = clip.predict(frames[None].astype("float32"), verbose=0)[0]
    assert np.abs(delta - expected).max() / np.abs(expected).max() < 1e-4


def _tiny_plan(seed):
    keras.utils.set_random_seed(seed)
    model = deltanet.build_model(4, arch="tiny", size=32, threshold=0.05)
    _randomize_bn(model, seed)
    return to_plan(model)


def test_granularities_and_keyframes_agree_with_profiled_frames():
    plan = _tiny_plan(12)
    frames = static_camera_frames(30, seed=10)
    for gran in ("element", "pixel", "patch"):
        fast, _ = DeltaEngine(plan, granularity=gran, keyframe_interval=7).run(frames)
        slow, _ = DeltaEngine(plan, granularity=gran, keyframe_interval=7, profile=True).run(frames)
        np.testing.assert_array_equal(fast, slow)


def test_kernel_choice_is_a_per_frame_parameter():
    plan = _tiny_plan(15)
    frames = static_camera_frames(20, seed=16)
    pixel, _ = DeltaEngine(plan, granularity="pixel").run(frames)
    engine = DeltaEngine(plan)
    got = [engine.step(f)[0] for f in frames[:10]]
    engine.granularity = "pixel"  # switched mid-stream: the state carries over
    got += [engine.step(f)[0] for f in frames[10:]]
    np.testing.assert_allclose(np.stack(got), pixel, rtol=1e-4, atol=1e-5)
    assert set(engine.granularity.values()) == {"pixel"}


def test_non_finite_values_are_reported():
    model = deltanet.build_model(3, arch="tiny", size=32)
    plan = to_plan(model)
    plan.arrays[plan.mac_steps()[1]["kernel_key"]][0, 0, 0, 0] = np.inf  # a broken weight
    engine = DeltaEngine(plan)
    frames = static_camera_frames(3, seed=11)
    with pytest.raises(ValueError, match="non-finite"):
        engine.run(frames)


def test_parallel_kernel_choices_match_serial():
    plan = _tiny_plan(13)
    frames = static_camera_frames(20, seed=14)
    serial, _ = DeltaEngine(plan, threads=1).run(frames)
    for choice in ("element-parallel", "pixel-parallel"):
        engine = DeltaEngine(plan, granularity=choice, threads=2)
        assert engine.parallel and set(engine.granularity.values()) == {choice}
        assert engine.clone().threads == 2 and engine.clone().granularity == engine.granularity  # clone keeps them
        got, _ = engine.run(frames)
        np.testing.assert_allclose(got, serial, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="granularity must be one of"):
        DeltaEngine(plan, granularity="sparse")
