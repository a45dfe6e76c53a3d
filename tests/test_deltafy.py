"""deltafy: clip models from frame models, sharing weights, equivalent with zero threshold."""

from __future__ import annotations

import numpy as np
import pytest

import keras

import deltanet
from deltanet.delta_activation import DeltaActivation
from deltanet.deltafy import UnsupportedLayerError, deltafy
from deltanet.graph import cost_per_nonzero, layer_macs
from deltanet.measure import mac_layer_table, measure_model


def _frames(n=5, size=32, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (1, size, size, 3))
    return np.clip(base + rng.normal(0, 8, (n, size, size, 3)), 0, 255).astype("float32")


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(1)
    return keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=7)


def test_deltafy_keras_mobilenetv2_equivalent_with_zero_threshold(mobilenet):
    clip_model = deltafy(mobilenet, mode="threshold", threshold=0.0)
    frames = _frames()
    expected = mobilenet.predict(frames, verbose=0)
    got = clip_model.predict(frames[None], verbose=0)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # every MAC layer is guarded, including the network input and the residual streams
    table = mac_layer_table(clip_model)
    assert table and all(rec["delta"] is not None for rec in table)
    assert "input_delta" in [layer.name for layer in clip_model.layers]
    residual = [layer for layer in clip_model.layers if isinstance(layer, DeltaActivation) and layer.name.endswith("_add_delta")]
    assert residual  # the Add outputs that feed the next expand conv
    # weights are shared, not copied
    conv = mobilenet.get_layer("Conv1")
    assert any(getattr(layer, "layer", None) is conv for layer in clip_model.layers)


def test_deltafy_tiny_step_quantize_equivalent(mobilenet):
    clip_model = deltafy(mobilenet, mode="quantize", step=1e-4, per_channel=False)
    frames = _frames(n=3)
    np.testing.assert_allclose(
        clip_model.predict(frames[None], verbose=0)[0], mobilenet.predict(frames, verbose=0), atol=2e-3
    )


def test_cost_per_nonzero_is_downstream_macs_per_input_element():
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c1")(inputs)
    b = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    x = keras.layers.Concatenate(axis=3, name="cat")([a, keras.layers.AveragePooling2D(2)(b)])
    x = keras.layers.Flatten(name="flatten")(x)  # explicit: auto names depend on earlier tests
    out = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, out)
    clip = deltafy(model)
    da = clip.get_layer("input_delta")
    c1, dw = model.get_layer("c1"), model.get_layer("dw")
    expected = cost_per_nonzero(c1, (8, 8, 4), (4, 4, 6)) + cost_per_nonzero(dw, (8, 8, 4), (8, 8, 4))
    assert da.cost_per_nonzero == pytest.approx(expected)
    assert layer_macs(c1, (8, 8, 4), (4, 4, 6)) == 4 * 4 * 9 * 4 * 6
    assert clip.get_layer("flatten_delta").cost_per_nonzero == pytest.approx(3.0)
    # the positive concat axis was moved past the time axis
    out = clip.predict(np.zeros((2, 3, 8, 8, 4), "float32"), verbose=0)
    assert out.shape == (2, 3, 3)


def test_unsupported_layers_are_all_named():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.UpSampling2D(name="up")(x)
    x = keras.layers.GaussianNoise(0.1, name="noise")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(UnsupportedLayerError, match=r"2 layer\(s\).*noise \(GaussianNoise\).*up \(UpSampling2D\)"):
        deltafy(model)


def test_sequential_models_and_baseline():
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3), keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(2)])
    clip = deltafy(model, insert_deltas=False)
    assert not [layer for layer in clip.layers if isinstance(layer, DeltaActivation)]
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(clip.predict(x[None], verbose=0)[0], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_build_model_save_load_keeps_info_and_outputs(tmp_path):
    model = deltanet.build_model(3, arch="tiny", size=32, info={"class_names": ["a", "b", "c"], "frames": 4})
    x = _frames(n=4)[None]
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-6)
    info = deltanet.model_info(loaded)
    assert info["class_names"] == ["a", "b", "c"] and info["size"] == 32 and info["arch"] == "tiny"
    frame_logits = deltanet.frame_logits_model(loaded).predict(x, verbose=0)
    np.testing.assert_allclose(frame_logits.mean(axis=1), before, rtol=1e-5, atol=1e-6)


def test_measure_model_baseline_counts_nonzero_activations():
    base = deltanet.build_model(3, arch="tiny", size=32, baseline=True)
    delta = deltanet.build_model(3, arch="tiny", size=32, threshold=0.05)
    static = np.repeat(_frames(n=1), 6, axis=0)[None]  # a frozen clip
    m_delta = measure_model(delta, [static])
    assert m_delta["mac_density"] == 0.0  # nothing changes after frame 0
    m_base = measure_model(base, [static])
    assert 0.2 < m_base["mac_density"] <= 1.0  # ReLU zeros only
    assert m_base["layers"][0]["spatial_density"] == pytest.approx(1.0)  # the input frame
    assert m_base["macs_per_frame"] == m_delta["macs_per_frame"] > 0


def test_measure_model_reuses_its_probe_with_the_current_weights_and_saves_nothing(tmp_path):
    model = deltanet.build_model(3, arch="tiny", size=32, threshold=0.05)
    clip = _frames(n=6)[None]
    first = measure_model(model, [clip])
    probe = model._deltanet_measure_probe[3]
    assert measure_model(model, [clip]) == first and model._deltanet_measure_probe[3] is probe  # reused, same answer
    for layer in model.layers:  # thresholds raised far above any delta: nothing is sent after frame 0
        if isinstance(layer, DeltaActivation):
            layer.threshold.assign(np.full(layer.threshold.shape, 1e6, "float32"))
    assert 0 < first["mac_density"] and measure_model(model, [clip])["mac_density"] < first["mac_density"]
    model.save(tmp_path / "m.keras")
    loaded = deltanet.load_model(tmp_path / "m.keras")
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]  # the probe is not part of the model


def test_per_frame_model_of_a_baseline_matches_the_clip_model():
    import deltanet

    clip = deltanet.build_model(3, arch="tiny", size=32, baseline=True)
    frame = deltanet.per_frame_model(clip)
    x = _frames(n=4)
    np.testing.assert_allclose(
        frame.predict(x, verbose=0), deltanet.frame_logits_model(clip).predict(x[None], verbose=0)[0], rtol=1e-5, atol=1e-6
    )
    assert not [la for la in frame.layers if isinstance(la, DeltaActivation)]


def test_measure_model_counts_top1_accuracy_of_labelled_batches_in_the_same_pass():
    model = deltanet.build_model(3, arch="tiny", size=32, threshold=0.05)
    rng = np.random.default_rng(4)
    clips = rng.integers(0, 256, (5, 4, 32, 32, 3), dtype=np.uint8)
    predicted = np.argmax(np.asarray(model.predict_on_batch(clips)), axis=-1)
    labels = predicted.copy()
    labels[:2] = (labels[:2] + 1) % 3  # two of five wrong
    batches = [(clips[:3], labels[:3]), (clips[3:], labels[3:])]
    measured = measure_model(model, batches)
    assert measured["accuracy"] == pytest.approx(3 / 5)
    assert measured["mac_density"] == measure_model(model, [clips[:3], clips[3:]])["mac_density"]  # labels change nothing else
    assert measure_model(model, [clips])["accuracy"] is None  # no labels, no accuracy
    per_frame = deltanet.frame_logits_model(model)  # (batch, time, classes) logits: no top-1 per clip
    assert measure_model(per_frame, batches)["accuracy"] is None
