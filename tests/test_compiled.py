"""The compiled per-frame path (one numba call) against the Python step-by-step path."""

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
def test_compiled_equals_python_path_on_every_op(mode):
    keras.utils.set_random_seed(11)
    frame_model = _every_op_model()
    _randomize_bn(frame_model, 4)
    clip = deltafy(frame_model, mode=mode, threshold=0.04, step=0.04)
    plan = to_plan(clip)
    assert {"pad", "pool", "concat", "add", "affine", "flatten", "activation", "depthwise", "conv2d"} <= {s["op"] for s in plan.steps}
    frames = static_camera_frames(40, size=24, seed=9)
    fast, sf = DeltaEngine(plan).run(frames)
    slow, ss = DeltaEngine(plan, profile=True).run(frames)
    np.testing.assert_array_equal(fast, slow)
    for a, b in zip(sf, ss):
        np.testing.assert_array_equal(a.executed_macs, b.executed_macs)
        np.testing.assert_array_equal(a.nonzero_deltas, b.nonzero_deltas)
    assert np.isnan(sf[5].layer_ms).all() and not np.isnan(ss[5].layer_ms).any()
    # and both match Keras
    expected = clip.predict(frames[None].astype("float32"), verbose=0)[0]
    assert np.abs(fast - expected).max() / np.abs(expected).max() < 1e-4


def test_compiled_path_with_granularities_and_keyframes():
    keras.utils.set_random_seed(12)
    model = deltanet.build_model(4, arch="tiny", size=32, threshold=0.05)
    _randomize_bn(model, 5)
    plan = to_plan(model)
    frames = static_camera_frames(30, seed=10)
    for gran in ("element", "pixel"):
        fast, _ = DeltaEngine(plan, granularity=gran, keyframe_interval=7).run(frames)
        slow, _ = DeltaEngine(plan, granularity=gran, keyframe_interval=7, profile=True).run(frames)
        np.testing.assert_array_equal(fast, slow)


def test_compiled_path_reports_non_finite_values():
    model = deltanet.build_model(3, arch="tiny", size=32)
    plan = to_plan(model)
    plan.arrays[plan.mac_steps()[1]["kernel_key"]][0, 0, 0, 0] = np.inf  # a broken weight
    engine = DeltaEngine(plan)
    frames = static_camera_frames(3, seed=11)
    with pytest.raises(ValueError, match="non-finite"):
        engine.run(frames)


def test_parallel_kernel_choices_match_serial():
    keras.utils.set_random_seed(13)
    model = deltanet.build_model(4, arch="tiny", size=32, threshold=0.05)
    _randomize_bn(model, 6)
    plan = to_plan(model)
    frames = static_camera_frames(20, seed=14)
    serial, _ = DeltaEngine(plan, threads=1).run(frames)
    for choice in ("element-parallel", "pixel-parallel"):
        engine = DeltaEngine(plan, granularity=choice, threads=2)
        assert all(r.parallel for r in engine._steps if hasattr(r, "parallel"))
        got, _ = engine.run(frames)
        np.testing.assert_allclose(got, serial, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="granularity must be one of"):
        DeltaEngine(plan, granularity="sparse")
