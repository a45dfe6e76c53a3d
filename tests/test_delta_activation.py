"""DeltaActivation against the NumPy reference (tests/naive.py), and as a Keras layer."""

from __future__ import annotations

import numpy as np
import pytest

import keras
from keras import ops

import naive
from deltanet import density
from deltanet.delta_activation import DeltaActivation


def _stream(seed=0, t=12, shape=(5, 4, 3), scale=1.0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0, 0.2 * scale, (t,) + shape), axis=0).astype("float32")
    x[:, 0, 0, :] = 0.0  # a region that never changes
    x[3] = x[2]  # a frame that repeats exactly
    return x


@pytest.mark.parametrize("per_channel", [True, False])
def test_threshold_mode_matches_reference(per_channel):
    x = _stream()
    theta = np.array([0.05, 0.2, 0.4], "float32") if per_channel else np.float32(0.15)
    layer = DeltaActivation(mode="threshold", threshold=0.1, per_channel=per_channel)
    layer.build((None,) + x.shape)
    layer.threshold.assign(theta)
    y = np.asarray(layer(x[None]))[0]
    ref_y, ref_d = naive.threshold_stream(x, theta)
    np.testing.assert_array_equal(y, ref_y)
    # Deltas are exactly y_t - y_{t-1}; and the no-drift bound holds at every frame.
    np.testing.assert_array_equal(np.diff(y, axis=0), ref_d[1:])
    assert np.all(np.abs(y - x) <= np.broadcast_to(theta, x.shape) + 1e-7)
    assert layer.temporal_density == pytest.approx(naive.temporal_density(ref_d), abs=1e-6)
    assert layer.spatial_density == pytest.approx(naive.spatial_density(ref_y), abs=1e-6)
    assert 0.0 < layer.temporal_density < 1.0


def test_threshold_no_drift_over_a_long_stream():
    # A slow ramp below the threshold per frame: a naive "send if the frame difference is
    # large" scheme would never send anything and drift without bound.
    t = 400
    x = (np.arange(t, dtype="float32") * 0.01)[:, None, None]
    layer = DeltaActivation(mode="threshold", threshold=0.05, per_channel=False)
    y = np.asarray(layer(x[None]))[0]
    assert np.max(np.abs(y - x)) <= 0.05 + 1e-6
    fired = np.count_nonzero(np.diff(y[:, 0, 0]))
    assert 60 <= fired <= 80  # about one delta every 6 frames, not every frame, not never


def test_quantize_mode_matches_reference_including_ties():
    x = _stream(seed=1)
    step = np.array([0.1, 0.25, 0.5], "float32")
    x[5, 1, 1] = np.array([0.05, 0.125, 0.75], "float32")  # exact ties x/q = 0.5, 0.5, 1.5
    layer = DeltaActivation(mode="quantize", step=0.1)
    layer.build((None,) + x.shape)
    layer.step.assign(step)
    y = np.asarray(layer(x[None]))[0]
    ref_y, ref_d = naive.quantize_stream(x, step)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(y[5, 1, 1], [0.0, 0.0, 1.0])  # round half to even
    assert layer.temporal_density == pytest.approx(naive.temporal_density(ref_d), abs=1e-6)


def test_density_definitions_agree_with_deltanet_density():
    x = _stream(seed=2, t=9)[None].repeat(2, axis=0)
    layer = DeltaActivation(mode="threshold", threshold=0.1)
    y = np.asarray(layer(x))
    assert layer.temporal_density == pytest.approx(density.temporal_density(y), abs=1e-6)
    assert layer.spatial_density == pytest.approx(density.spatial_density(y), abs=1e-6)
    layer.reset_density()
    assert np.isnan(layer.temporal_density)


def test_straight_through_gradients():
    import tensorflow as tf

    x = tf.constant(_stream(seed=3)[None])
    for layer in (DeltaActivation(mode="threshold", threshold=0.3), DeltaActivation(mode="quantize", step=0.3)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.range(1.0, 4.0))
        g = tape.gradient(loss, x).numpy()
        np.testing.assert_allclose(g, np.broadcast_to([1.0, 2.0, 3.0], g.shape))


def test_quantize_step_gradient_from_penalty_grows_the_step():
    import tensorflow as tf

    x = tf.constant(_stream(seed=4, scale=3.0)[None])
    layer = DeltaActivation(mode="quantize", step=0.05, penalty_weight=1.0)
    with tf.GradientTape() as tape:
        layer(x, training=True)
        penalty = tf.add_n(layer.losses)
    g = tape.gradient(penalty, layer.step).numpy()
    assert np.all(g < 0), g  # gradient descent increases the step
    # ... and the task loss (here: match x) gives the LSQ gradient, pulling the step back down.
    with tf.GradientTape() as tape:
        err = tf.reduce_mean(tf.square(layer(x) - x))
    assert np.any(tape.gradient(err, layer.step).numpy() != 0)


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
@pytest.mark.parametrize("penalty", ["l1", "hoyer"])
def test_penalty_value_only_in_training(mode, penalty):
    x = _stream(seed=5)[None]
    layer = DeltaActivation(mode=mode, threshold=0.05, step=0.05, penalty_weight=2.0, cost_per_nonzero=3.0, penalty=penalty)
    y = np.asarray(layer(x, training=True))
    (loss,) = [float(ops.convert_to_numpy(v)) for v in layer.losses]
    d = density.clip_deltas(y)
    if penalty == "l1":
        expected = 2.0 * 3.0 * np.mean(np.abs(d))
    else:
        expected = 2.0 * 3.0 * np.sum(np.abs(d)) ** 2 / (d.size * np.sum(d**2))
    assert loss == pytest.approx(expected, rel=1e-4)
    layer(x, training=False)
    assert not layer.losses


def _tiny_clip_model(weight, mode="threshold"):
    inputs = keras.Input((None, 6, 6, 2))
    # A trainable layer before the delta layer: the penalty can only act through it.
    x = keras.layers.TimeDistributed(keras.layers.Conv2D(4, 1, activation="relu"))(inputs)
    x = DeltaActivation(mode=mode, threshold=0.02, step=0.02, penalty_weight=weight, cost_per_nonzero=10.0, name="da")(x)
    x = keras.layers.TimeDistributed(keras.layers.Conv2D(4, 3, padding="same"))(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    out = keras.layers.Dense(2)(x)
    return keras.Model(inputs, out)


def _toy_data(seed=0, n=32):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 1, 6, 6, 2)).astype("float32")
    x = x + rng.normal(0, 0.1, (n, 6, 6, 6, 2)).astype("float32")  # noisy static clips
    y = (x.mean(axis=(1, 2, 3, 4)) > 0).astype("int32")
    return x, y


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_penalty_takes_effect_under_fit_and_more_weight_gives_sparser_deltas(mode):
    x, y = _toy_data()
    densities, losses = {}, {}
    for weight in (0.0, 3.0):
        keras.utils.set_random_seed(0)
        model = _tiny_clip_model(weight, mode)
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        hist = model.fit(x, y, epochs=15, batch_size=8, verbose=0)
        losses[weight] = hist.history["loss"][0]
        da = model.get_layer("da")
        da.reset_density()
        model.predict(x, verbose=0)
        densities[weight] = da.temporal_density
    assert losses[3.0] > losses[0.0]  # the penalty is part of the training loss
    assert densities[3.0] < 0.7 * densities[0.0], densities


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_keras_save_load_round_trip(tmp_path, mode):
    model = _tiny_clip_model(0.1, mode)
    x, _ = _toy_data(n=3)
    before = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # default safe_mode=True
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    da = loaded.get_layer("da")
    assert isinstance(da, DeltaActivation)
    assert da.get_config() == model.get_layer("da").get_config()
    assert da.cost_per_nonzero == 10.0


def test_config_round_trip_and_weights():
    layer = DeltaActivation(mode="quantize", step=0.2, per_channel=True, penalty="hoyer", penalty_weight=0.5, name="q")
    clone = DeltaActivation.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    layer.build((None, None, 7))
    assert [w.name for w in layer.trainable_weights] == ["step"]
    assert len(layer.non_trainable_weights) == 4
    assert tuple(layer.step.shape) == (7,)


def test_symbolic_call_and_output_shape():
    layer = DeltaActivation()
    sym = keras.KerasTensor((None, None, 8, 8, 3))
    out = layer(sym)
    assert out.shape == (None, None, 8, 8, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="sparse"), "mode"),
        (dict(threshold=-1.0), "threshold"),
        (dict(step=0.0), "step"),
        (dict(penalty="l2"), "penalty"),
        (dict(penalty_weight=-0.1), "penalty_weight"),
    ],
)
def test_invalid_arguments_quote_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeltaActivation(**kwargs)


def test_rank_too_small_is_rejected():
    with pytest.raises(ValueError, match="rank >= 3"):
        DeltaActivation()(np.zeros((2, 3), "float32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_fit(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _tiny_clip_model(0.1)
        assert model.get_layer("da").compute_dtype == policy.split("_")[1]
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x, y = _toy_data(n=8)
        hist = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        assert np.isfinite(hist.history["loss"][0])
        assert model.get_layer("da").threshold.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_jit_compile_fit_and_predict_match_eager(mode):
    model = _tiny_clip_model(0.1, mode)
    x, y = _toy_data(n=8)
    eager = model.predict(x, verbose=0)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, rtol=1e-5, atol=1e-6)
    hist = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


def test_unknown_clip_length_uses_the_scan_and_agrees():
    import tensorflow as tf

    x = _stream(seed=6)
    layer = DeltaActivation(mode="threshold", threshold=0.1)
    static = np.asarray(layer(x[None]))

    @tf.function(input_signature=[tf.TensorSpec((None, None) + x.shape[1:], tf.float32)])
    def dynamic(clip):
        return layer(clip)

    np.testing.assert_array_equal(dynamic(x[None]).numpy(), static)


@pytest.mark.parametrize("penalty", ["l1", "hoyer"])
def test_fused_gradient_equals_autodiff_of_the_scan_formulation(penalty):
    """The known-length path's hand-written gradient (task + penalty) equals what autodiff
    gives on the general formulation (scan + straight-through + where)."""
    import tensorflow as tf

    x = tf.constant(np.stack([_stream(seed=7), _stream(seed=8)]))
    w = tf.constant(np.random.default_rng(9).normal(size=x.shape).astype("float32"))
    layer = DeltaActivation(mode="threshold", threshold=0.1, penalty_weight=1.5, cost_per_nonzero=2.0, penalty=penalty)
    layer.build(x.shape)

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * w) + layer.losses[-1]
    fused = tape.gradient(loss, x).numpy()

    with tf.GradientTape() as tape:
        tape.watch(x)
        y, d = layer._threshold(x)
        loss = tf.reduce_sum(y * w) + layer._penalty(
            tf.reduce_sum(tf.abs(d)), tf.reduce_sum(tf.square(d)), tf.cast(tf.size(d), tf.float32)
        )
    reference = tape.gradient(loss, x).numpy()
    assert np.any(fused != np.broadcast_to(w.numpy(), fused.shape))  # the penalty contributed
    np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-6)


def test_long_clip_inference_takes_the_scan_and_agrees_with_the_unrolled_pass():
    """Inference on a clip longer than UNROLL_FRAMES uses the scan (a graph that does not grow
    with the clip): the same outputs and density counters as the unrolled pass, and the naive
    reference's outputs."""
    from deltanet import delta_activation

    x = _stream(seed=11, t=delta_activation.UNROLL_FRAMES + 9)[None]
    scanned, unrolled = (DeltaActivation(mode="threshold", threshold=0.1) for _ in range(2))
    calls = []
    scan = scanned._threshold
    scanned._threshold = lambda v: calls.append(1) or scan(v)
    y = np.asarray(scanned(x, training=False))
    assert calls == [1]  # the scan ran, not the unrolled pass
    saved = delta_activation.UNROLL_FRAMES
    try:
        delta_activation.UNROLL_FRAMES = x.shape[1]  # the same clip through the unrolled pass
        y_unrolled = np.asarray(unrolled(x, training=False))
    finally:
        delta_activation.UNROLL_FRAMES = saved
    np.testing.assert_array_equal(y, y_unrolled)
    np.testing.assert_array_equal(y[0], naive.threshold_stream(x[0], np.float32(0.1))[0])
    for name in ("temporal_density_sum", "spatial_density_sum", "density_batches"):
        assert float(getattr(scanned, name)) == pytest.approx(float(getattr(unrolled, name)), rel=1e-6), name
