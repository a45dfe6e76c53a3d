"""deltanet.schedules (penalty schedules, threshold shift) and deltanet.activations.relu_ify."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import deltanet
from deltanet.activations import relu_ify
from deltanet.delta_activation import DeltaActivation
from deltanet.schedules import PenaltySchedule, ThresholdShift, fit_callbacks, sine_stages

S = math.sin(math.pi / 4)  # the quarter-sine at a stage's midpoint


def test_sine_schedule_at_boundaries_and_midpoints():
    s = PenaltySchedule([(30, 0.5), (70, 1.0), (90, 2.0)], warmup=10, warmup_value=0.1)
    expected = {
        0: 0.1, 9: 0.1, 10: 0.1,  # warm-up, then the first ramp starts flat
        20: 0.1 + 0.4 * S,  # midpoint of stage 1
        30: 0.5,  # boundary: the plateau value
        50: 0.5 + 0.5 * S,
        70: 1.0,
        80: 1.0 + S,
        90: 2.0, 1000: 2.0,
    }  # fmt: skip
    for t, w in expected.items():
        assert s(t) == pytest.approx(w, abs=1e-12), t
    # w_t = w_{i-1} + (w_i - w_{i-1}) * sin(pi/2 * (t - T_{i-1}) / (T_i - T_{i-1})) anywhere in a stage
    t = 41
    assert s(t) == pytest.approx(0.5 + 0.5 * math.sin(math.pi / 2 * (t - 30) / 40))
    # continuous at the boundaries, non-decreasing for increasing plateaus
    values = [s(t) for t in range(0, 100)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))
    assert s(29.999) == pytest.approx(0.5, abs=1e-6)


def test_linear_step_and_constant_kinds():
    lin = PenaltySchedule([(20, 1.0)], warmup=10, kind="linear")
    assert [lin(t) for t in (5, 10, 15, 20)] == pytest.approx([0.0, 0.0, 0.5, 1.0])
    step = PenaltySchedule([(20, 1.0), (30, 3.0)], warmup=10, kind="step")
    assert [step(t) for t in (9, 10, 19, 20, 29, 30)] == pytest.approx([0.0, 1.0, 1.0, 3.0, 3.0, 3.0])
    const = PenaltySchedule.constant(0.7)
    assert {const(t) for t in (0, 5, 10**6)} == {0.7}
    with pytest.raises(ValueError):
        PenaltySchedule([(10, 1.0), (10, 2.0)])
    with pytest.raises(ValueError):
        PenaltySchedule([(5, 1.0)], warmup=5)
    with pytest.raises(ValueError):
        PenaltySchedule([(5, -1.0)])
    with pytest.raises(ValueError):
        PenaltySchedule([(5, 1.0)], kind="cosine")


def test_depth_progressive_shallow_layers_sparsify_last():
    s = PenaltySchedule([(100, 1.0)], warmup=0, kind="linear", depth_delay=0.5)
    names = ["shallow", "middle", "deep"]
    assert s.layer_step(40, 1.0) == 40  # the deepest layer follows the schedule itself
    assert s.layer_step(40, 0.0) == -1.0  # shallowest: its clock starts at 50
    assert s.layer_step(75, 0.0) == pytest.approx(50.0)  # (75 - 50) * 100 / 50
    mid = s.layer_values(60, names)
    assert mid["shallow"] < mid["middle"] < mid["deep"]
    assert mid["deep"] == pytest.approx(0.6) and mid["middle"] == pytest.approx((60 - 25) / 75)
    end = s.layer_values(100, names)
    assert end == pytest.approx({"shallow": 1.0, "middle": 1.0, "deep": 1.0})
    m = PenaltySchedule([(100, 1.0)], kind="linear", layer_multipliers={"deep": 2.0})
    assert m.layer_values(50, names)["deep"] == pytest.approx(1.0)


def test_config_round_trip_and_stages_from_flags():
    s = PenaltySchedule([(30, 0.5), (70, 1.0)], warmup=10, kind="sine", depth_delay=0.3, layer_multipliers={"a": 2.0})
    t = PenaltySchedule.from_config(s.get_config())
    assert t.get_config() == s.get_config() and [t(x) for x in range(0, 80, 7)] == [s(x) for x in range(0, 80, 7)]
    st = sine_stages(100, warmup_fraction=0.1, levels=(0.25, 0.5, 1.0), end_fraction=0.9)
    assert st == [(37, 0.25), (63, 0.5), (90, 1.0)]
    cbs = fit_callbacks(schedule="sine", total_steps=100, warmup=0.1, depth_progressive=0.5, threshold_shift=0.2)
    assert isinstance(cbs[0], PenaltySchedule) and cbs[0].warmup == 10 and cbs[0].depth_delay == 0.5
    assert isinstance(cbs[1], ThresholdShift) and (cbs[1].start, cbs[1].end) == (90, 100)
    assert fit_callbacks(schedule="constant", total_steps=100) == []
    (depth_only,) = fit_callbacks(schedule="constant", total_steps=100, depth_progressive=0.5)
    assert depth_only.layer_values(10, ["a", "b"]) == {"a": 0.0, "b": 1.0}
    with pytest.raises(ValueError):
        fit_callbacks(schedule="cosine", total_steps=10)


def _tiny_delta_model(penalty_weight=2.0, threshold=0.1):
    keras.utils.set_random_seed(0)
    return deltanet.build_model(3, arch="tiny", size=32, threshold=threshold, penalty_weight=penalty_weight, penalty="hoyer")


def test_penalty_schedule_drives_every_layer_during_fit():
    model = _tiny_delta_model()
    layers = [la for la in model.layers if isinstance(la, DeltaActivation)]
    base = {la.name: la.penalty_weight_init for la in layers}
    assert all(v > 0 for v in base.values())
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sched = PenaltySchedule([(4, 1.0)], warmup=0, kind="linear", depth_delay=0.5)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (6, 3, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append({la.name: float(la.penalty_weight.numpy()) for la in layers})

    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[sched, Probe()])  # steps 0, 1, 2
    names = [la.name for la in layers]
    for step, got in enumerate(seen):
        want = sched.layer_values(step, names)
        for name in names:
            assert got[name] == pytest.approx(base[name] * want[name], rel=1e-6), (step, name)
    assert seen[2][names[0]] < seen[2][names[-1]] * base[names[0]] / base[names[-1]] + 1e-12
    # the schedule is applied again from the optimizer's step after a "resume" (step 3)
    sched.apply(model, 3)
    assert float(layers[-1].penalty_weight.numpy()) == pytest.approx(base[names[-1]] * 0.75)


def test_threshold_shift_raises_thresholds_in_the_final_stage():
    model = _tiny_delta_model(threshold=0.2)
    layers = [la for la in model.layers if isinstance(la, DeltaActivation)]
    shift = ThresholdShift(0.5, start=10, end=20)
    for step, factor in ((0, 1.0), (10, 1.0), (15, 1.25), (20, 1.5), (30, 1.5)):
        shift.apply(model, step)
        for la in layers:
            np.testing.assert_allclose(la.threshold.numpy(), 0.2 * factor, rtol=1e-6)
    # resumed in the middle of the stage: the base is recovered, not shifted twice
    again = ThresholdShift(0.5, start=10, end=20)
    again._base, again._u = None, again.progress(20)
    again.apply(model, 20)
    np.testing.assert_allclose(layers[0].threshold.numpy(), 0.3, rtol=1e-6)
    add = ThresholdShift(0.1, start=0, end=10, relative=False)
    add.apply(model, 5)
    np.testing.assert_allclose(layers[0].threshold.numpy(), 0.35, rtol=1e-6)
    assert ThresholdShift.from_config(add.get_config()).get_config() == add.get_config()
    with pytest.raises(ValueError):
        ThresholdShift(0.5, start=10, end=10)


def test_relu_ify_swaps_smooth_activations_and_shares_weights():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="swish", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("gelu", name="g")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.Activation("hard_swish", name="hs")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="silu", name="fc")(x)
    model = keras.Model(inputs, outputs)
    relu = relu_ify(model)
    assert isinstance(relu.get_layer("g"), keras.layers.ReLU) and isinstance(relu.get_layer("hs"), keras.layers.ReLU)
    assert relu.get_layer("c1").activation is keras.activations.relu and relu.get_layer("fc").activation is keras.activations.relu
    assert model.get_layer("c1").activation is not keras.activations.relu  # the original is untouched
    assert relu.get_layer("c1").kernel is model.get_layer("c1").kernel  # shared, not copied
    assert relu.get_layer("dw") is model.get_layer("dw")
    # the same function with ReLU everywhere
    rng = np.random.default_rng(0)
    frames = rng.normal(0, 1, (2, 8, 8, 3)).astype("float32")
    c1, bn, dw, fc = (model.get_layer(n) for n in ("c1", "bn", "dw", "fc"))
    h = keras.ops.relu(bn(keras.ops.relu(keras.ops.conv(frames, c1.kernel, padding="same") + c1.bias), training=False))
    h = h + keras.ops.relu(dw(h))
    want = keras.ops.relu(keras.ops.mean(h, axis=(1, 2)) @ fc.kernel + fc.bias)
    np.testing.assert_allclose(relu.predict(frames, verbose=0), keras.ops.convert_to_numpy(want), rtol=1e-4, atol=1e-5)
    # negative-to-negative changes become exact zero deltas: a deltafied copy is sparser
    clip = deltanet.clip_classifier(relu, threshold=0.0)
    smooth = deltanet.clip_classifier(model, threshold=0.0)
    clips = frames[None].repeat(2, 0) + rng.normal(0, 0.05, (2, 2, 8, 8, 3)).astype("float32")
    d_relu = deltanet.measure_model(clip, [clips])["mac_density"]
    d_smooth = deltanet.measure_model(smooth, [clips])["mac_density"]
    assert d_relu < d_smooth
