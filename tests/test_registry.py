"""The support registry: every entry round-trips deltafy -> converter -> engine, and deltafy
refuses (naming them all) the layers the runtime cannot run."""

from __future__ import annotations

import numpy as np
import pytest

import keras

from deltanet import registry
from deltanet.deltafy import UnsupportedLayerError, deltafy
from streaming.convert import to_plan
from streaming.engine import DeltaEngine
from test_engine import _randomize_bn, static_camera_frames

L = keras.layers


def _every_entry_model():
    """A frame model using every registered layer class (squeeze-excite and merges included)."""
    inputs = keras.Input((24, 24, 3))
    x = L.Rescaling(1 / 127.5, offset=-1)(inputs)  # folds into the input step
    x = L.Normalization(mean=[0.1, -0.2, 0.0], variance=[1.5, 0.8, 1.0])(x)  # an affine step
    x = L.ZeroPadding2D(((1, 0), (0, 1)))(x)
    a = L.Conv2D(8, 3, strides=2, padding="valid", activation="relu")(x)
    b = L.DepthwiseConv2D(3, strides=2, padding="valid")(x)
    b = L.BatchNormalization()(L.Activation("tanh")(b))  # not foldable: an affine step
    x = L.Concatenate()([a, b])
    x = L.MaxPooling2D(2, padding="same")(x)
    y = L.BatchNormalization()(L.Conv2D(11, 1, name="pw")(x))  # folded into pw
    z = L.LeakyReLU(0.1)(y)
    s = L.Subtract()([y, z])
    hi = L.Maximum()([s, y])
    lo = L.Minimum()([L.Softmax()(s), z])
    e = L.ELU()(L.Average()([hi, lo, y]))
    e = L.SeparableConv2D(12, 3, padding="same", name="sep")(e)
    gate = L.GlobalAveragePooling2D(keepdims=True)(e)  # squeeze-excite: a (1, 1, C) gate
    gate = L.Conv2D(4, 1, activation="relu")(gate)
    gate = L.Conv2D(12, 1, activation="sigmoid")(gate)
    x = L.Add()([L.Multiply()([e, gate]), e])
    x = L.Dropout(0.5)(L.ReLU(max_value=6.0)(x))
    x = L.AveragePooling2D(2)(x)
    v = L.Reshape((1, 1, 12))(L.GlobalMaxPooling2D()(x))
    f = L.Dense(6, activation="swish")(L.Flatten()(x))
    g = L.Dense(6)(L.Flatten()(v))
    return keras.Model(inputs, L.Add()([f, g]))


def _used_classes(model):
    return {registry.support_of(layer).layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)}


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_every_registry_entry_round_trips_deltafy_converter_engine(mode):
    keras.utils.set_random_seed(31)
    frame_model = _every_entry_model()
    assert _used_classes(frame_model) == {s.layer for s in registry.REGISTRY}  # a new entry needs a line above
    _randomize_bn(frame_model, 8)
    clip = deltafy(frame_model, mode=mode, threshold=0.03, step=0.03)
    plan = to_plan(clip)
    assert {"subtract", "multiply", "maximum", "minimum", "average", "add", "concat", "affine"} <= {s["op"] for s in plan.steps}
    frames = static_camera_frames(40, size=24, seed=12)
    expected = clip.predict(frames[None].astype("float32"), verbose=0)[0]
    got, stats = DeltaEngine(plan).run(frames)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4
    assert np.mean([s.mac_density for s in stats[1:]]) < 0.9  # it does skip work
    # one MAC count: the registry's per layer equals the plan's over the steps it lowered to
    for layer in frame_model.layers[1:]:  # (after the InputLayer)
        if registry.support_of(layer).role != "mac":
            continue
        in_shape, out_shape = tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
        plan_macs = sum(plan.dense_macs(s) for s in plan.mac_steps() if s["name"].split("/")[0] == layer.name)
        assert registry.layer_macs(layer, in_shape, out_shape) == plan_macs, layer.name


def test_deltafy_refuses_every_layer_the_runtime_cannot_run():
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, dilation_rate=2, padding="same", name="dilated")(inputs)
    x = L.UpSampling2D(name="up")(x)
    x = L.Softmax(axis=1, name="spatial_softmax")(x)
    y = L.Conv2D(4, 3, padding="same", name="ok")(x)
    x = L.Concatenate(axis=1, name="stack_rows")([x, y])
    x = L.Reshape((64, 64), name="rows")(L.Conv2D(4, 1, strides=(1, 2), name="strided")(x))
    x = L.Dense(3, name="dense_on_rows")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(UnsupportedLayerError) as err:
        deltafy(model)
    msg = str(err.value)
    for name in ("dilated (dilated convolution)", "up (UpSampling2D)", "spatial_softmax (Softmax on axis 1", "stack_rows (Concatenate on axis 1",
                 "rows (Reshape to (64, 64)", "strided (unequal strides (1, 2))", "dense_on_rows (Dense on a rank-2 frame tensor)"):  # fmt: skip
        assert name in msg, (name, msg)
    assert "7 layer(s)" in msg and "ok (" not in msg


def test_support_lookup_and_layer_groups():
    assert registry.support_of(L.Conv2D(2, 1)).role == "mac"
    assert registry.support_of(L.SpatialDropout2D(0.1)).layer is L.Dropout  # the nearest registered base class
    assert registry.support_of(L.UpSampling2D()) is None
    assert L.Multiply in registry.classes("merge") and L.Dense in registry.classes("mac")
    with pytest.raises(ValueError, match="role"):
        registry.classes("other")
    with pytest.raises(TypeError, match="not a MAC layer"):
        registry.layer_macs(L.ReLU(), (4, 4, 2), (4, 4, 2))


def test_positive_channel_axes_convert():
    """A per-frame layer's positive axis counts the frame batch only (FrameWise folds time into
    it); a merge layer's counts batch and time (deltafy moves it past the time axis)."""
    inputs = keras.Input((8, 8, 3))
    x = L.BatchNormalization(axis=3)(L.ReLU()(L.Conv2D(4, 3, padding="same")(inputs)))
    x = L.Concatenate(axis=3)([L.Softmax(axis=3)(x), x])
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    plan = to_plan(deltafy(model))
    assert [s["op"] for s in plan.steps].count("concat") == 1 and "affine" in {s["op"] for s in plan.steps}
