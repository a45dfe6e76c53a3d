"""Per-frame deployment models (``deltanet.stream_model``) reproduce the clip model frame by frame."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

import deltanet
from deltanet.delta_activation import DeltaActivation
from deltanet.models import frame_logits_model, per_frame_model
from deltanet.stream_model import (
    FRAME_INPUT,
    LOGITS_OUTPUT,
    FrameQuantize,
    FrameThreshold,
    initial_states,
    state_specs,
    stateful_frame_model,
    stateless_frame_model,
    stream,
)
from training.export import check_clip

KINDS = {
    "baseline": dict(baseline=True),
    "quantize": dict(mode="quantize", step=0.05),
    "threshold": dict(mode="threshold", threshold=0.1),
}


@functools.lru_cache(maxsize=None)
def make_model(kind: str, seed: int = 1, size: int = 32) -> keras.Model:
    """A tiny clip model whose outputs are not degenerate, with per-channel steps / thresholds.

    Cached: callers must not change it.

    Fresh BatchNormalization statistics (mean 0, variance 1) make an untrained network's
    activations shrink to ~1e-3 at the logits, where every quantized value is 0 and no
    threshold ever fires; calibrating the statistics on frames keeps activations O(1).
    Steps and thresholds get random per-channel values so that a copy of the defaults would
    not pass.
    """
    keras.utils.set_random_seed(seed)
    model = deltanet.build_model(4, arch="tiny", size=size, **KINDS[kind])
    frames = check_clip(size, size, frames=8, seed=100 + seed)[0]
    dense = per_frame_model(model)
    for _ in range(40):  # moving statistics -> batch statistics (momentum 0.9)
        dense(frames, training=True)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, DeltaActivation):
            if layer.mode == "quantize":
                layer.step.assign(rng.uniform(0.03, 0.1, layer.step.shape).astype("float32"))
            else:
                layer.threshold.assign(rng.uniform(0.05, 0.2, layer.threshold.shape).astype("float32"))
    return model


def _per_frame(model, clip):
    return np.stack([np.asarray(model(clip[:, t], training=False)) for t in range(clip.shape[1])], axis=1)


@pytest.fixture(scope="module")
def clip():
    return check_clip(32, 32, frames=6, seed=3)


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind_model(request):
    return request.param, make_model(request.param)


def test_stateful_model_reproduces_the_clip_model(kind_model, clip):
    kind, model = kind_model
    reference = np.asarray(frame_logits_model(model)(clip))
    assert np.abs(reference).max() > 0.1  # not a degenerate all-zero network
    stream_model = stateful_frame_model(model)
    got, states = stream(stream_model, clip)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    assert set(states) == set(initial_states(stream_model))


def test_threshold_state_matters(clip):
    model = make_model("threshold")
    reference = np.asarray(frame_logits_model(model)(clip))
    stream_model = stateful_frame_model(model)
    got, _ = stream(stream_model, clip)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    # The clip really is thresholded sparsely: most references keep their value frame to frame.
    measured = deltanet.measure_model(model, [clip])
    assert measured["mac_density"] < 0.5
    # Ignoring the state (zeros every frame) is a different model: the test can fail.
    zeros = initial_states(stream_model)
    stateless = np.stack(
        [np.asarray(stream_model({FRAME_INPUT: clip[:, t], **zeros})[LOGITS_OUTPUT]) for t in range(clip.shape[1])],
        axis=1,
    )
    assert np.abs(stateless[:, 1:] - reference[:, 1:]).max() > 1e-3
    np.testing.assert_allclose(stateless[:, 0], reference[:, 0], rtol=1e-5, atol=1e-6)  # frame 0: r_{-1} = 0


@pytest.mark.parametrize("kind", ["baseline", "quantize"])
def test_stateless_model_reproduces_the_clip_model(kind, clip):
    model = make_model(kind)
    reference = np.asarray(frame_logits_model(model)(clip))
    frame_model = stateless_frame_model(model)
    assert frame_model.input.shape[1:] == (32, 32, 3)
    got = _per_frame(frame_model, clip)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    quantizers = [la for la in frame_model.layers if isinstance(la, FrameQuantize)]
    deltas = [la for la in model.layers if isinstance(la, DeltaActivation)]
    assert len(quantizers) == (len(deltas) if kind == "quantize" else 0)
    for q in quantizers:
        np.testing.assert_array_equal(np.asarray(q.step), np.asarray(model.get_layer(q.name).step))
    if kind == "quantize":  # the quantization is really there
        dense = _per_frame(per_frame_model(model), clip)
        assert np.abs(dense - reference).max() > 1e-3


def test_stateless_refuses_threshold_models():
    model = deltanet.build_model(3, arch="tiny", size=32, mode="threshold")
    with pytest.raises(ValueError, match="stateful_frame_model"):
        stateless_frame_model(model)


def test_state_names_shapes_and_zeros():
    model = make_model("threshold")
    stream_model = stateful_frame_model(model)
    deltas = [la for la in model.layers if isinstance(la, DeltaActivation)]
    states = initial_states(stream_model, batch=2)
    assert set(states) == {la.name + "_ref" for la in deltas}
    for la in deltas:
        assert states[la.name + "_ref"].shape == (2,) + tuple(la.input.shape[2:])
        assert states[la.name + "_ref"].dtype == np.float32 and not states[la.name + "_ref"].any()
    assert set(stream_model.output) == {LOGITS_OUTPUT} | set(states)
    assert set(stream_model._inputs_struct) == {FRAME_INPUT} | set(states)
    for t in (la for la in stream_model.layers if isinstance(la, FrameThreshold)):
        np.testing.assert_array_equal(np.asarray(t.threshold), np.asarray(model.get_layer(t.name).threshold))
    # Baselines and quantize models: same dict interface, no state.
    for kind in ("baseline", "quantize"):
        plain = stateful_frame_model(deltanet.build_model(3, arch="tiny", size=32, **KINDS[kind]))
        assert initial_states(plain) == {} and state_specs(plain) == {}
        assert set(plain.output) == {LOGITS_OUTPUT}


def test_batch_of_streams(clip):
    model = make_model("threshold")
    clips = np.concatenate([clip, clip[:, ::-1]], axis=0)  # two different streams in one batch
    reference = np.asarray(frame_logits_model(model)(clips))
    got, _ = stream(stateful_frame_model(model), clips)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_stream_models_save_and_load_in_safe_mode(tmp_path, clip):
    model = make_model("threshold")
    stream_model = stateful_frame_model(model)
    path = tmp_path / "stream.keras"
    stream_model.save(path)
    loaded = deltanet.load_model(path)  # default safe mode
    np.testing.assert_array_equal(stream(loaded, clip)[0], stream(stream_model, clip)[0])
    q = stateless_frame_model(make_model("quantize"))
    q.save(tmp_path / "q.keras")
    loaded_q = deltanet.load_model(tmp_path / "q.keras")
    np.testing.assert_array_equal(_per_frame(loaded_q, clip), _per_frame(q, clip))


def test_positive_concatenate_axis_is_shifted_back(clip):
    # deltafy moves a positive Concatenate axis one step for the time axis; the per-frame
    # model must move it back.
    keras.utils.set_random_seed(0)
    frame = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(frame)
    a = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    b = keras.layers.Conv2D(4, 1, strides=2, activation="relu")(x)
    x = keras.layers.Concatenate(axis=3)([a, b])
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(3)(x)
    model = deltanet.clip_classifier(keras.Model(frame, logits), mode="threshold", threshold=0.05)
    reference = np.asarray(frame_logits_model(model)(clip))
    got, _ = stream(stateful_frame_model(model), clip)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_per_layer_threshold_and_step(mode, clip):
    keras.utils.set_random_seed(2)
    model = deltanet.build_model(3, arch="tiny", size=32, mode=mode, per_channel=False, threshold=0.02, step=0.02)
    reference = np.asarray(frame_logits_model(model)(clip))
    got, _ = stream(stateful_frame_model(model), clip)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max() + 1e-9)
