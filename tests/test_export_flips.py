"""Export checks on a model whose threshold decisions sit exactly at ties on the check clip.

A trained model has many activations whose ``|x - r|`` lies within float32 rounding of the
threshold; two correct implementations then decide differently (a "flip"). This builds such
a model on purpose: every channel's threshold is set to one of its own ``|x_1 - r_0|`` values on
the export's check clip, so Keras' own decision there is a tie and any other summation order
breaks it either way. The old check (free-running logits at 1e-4) fails on it, as it did on
the default trained model; the new checks pass every format and still catch real defects.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import deltanet
from deltanet.measure import delta_layers
from deltanet.stream_model import FRAME_INPUT, stateful_frame_model
from test_stream_model import make_model
from training import export
from training.export_check import CheckFailed, check_bundle, check_clip, check_resynced, compare

EXT = {"keras": ".keras", "savedmodel": "", "tflite": ".tflite", "onnx": ".onnx", "bundle": ".bundle"}


def set_thresholds_at_ties(model, clip) -> None:
    """Per channel, theta = the median of ``|x_1 - x_0|`` over the elements that fire at frame 0.

    Layers are visited in graph order, so a layer's inputs already reflect the thresholds
    chosen upstream; at frame 1 the chosen element's ``|x_1 - r_0|`` equals theta exactly.
    """
    for layer in delta_layers(model):
        x = np.asarray(keras.Model(model.input, layer.input)(clip))[0]
        x0, x1 = (x[t].reshape(-1, x.shape[-1]) for t in (0, 1))
        change = np.abs(x1 - x0)
        theta = np.array(layer.threshold.numpy())
        for c in range(theta.size):
            ties = change[:, c][(np.abs(x0[:, c]) > change[:, c]) & (change[:, c] > 0)]
            if ties.size:
                theta[c] = np.sort(ties)[ties.size // 2]
        layer.threshold.assign(theta)


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tied")
    make_model("threshold", seed=3).save(folder / "source.keras")
    model = deltanet.load_model(folder / "source.keras")   # a copy: make_model's models are cached
    clip = check_clip(32, 32, frames=6, seed=0)   # the clip the export checks with by default
    set_thresholds_at_ties(model, clip)
    model.save(folder / "tied.keras")
    return model, folder / "tied.keras", clip


def test_the_old_check_fails_on_it(tied):
    from streaming.engine import DeltaEngine

    model, _, clip = tied
    engine_logits, _ = DeltaEngine.from_keras(model).run(clip[0])
    keras_logits = deltanet.frame_logits_model(model).predict(clip, verbose=0)[0]
    err = np.abs(engine_logits - keras_logits).max(axis=1) / np.abs(keras_logits).max()
    assert err[0] < 1e-5                    # frame 0: no tie yet, exact
    assert compare(engine_logits, keras_logits)["max_rel"] > 1e-4   # what "check bundle ... FAILED" measured
    assert (engine_logits.argmax(1) == keras_logits.argmax(1)).all()


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_every_format_exports_and_passes(fmt, tied, tmp_path):
    _, path, _ = tied
    out = tmp_path / f"model{EXT[fmt]}"
    report = export.run(path, fmt, out)
    assert out.exists()
    if fmt == "bundle":   # flips happened and were told from defects
        assert report["first_frame_over_tol"] is not None and report["max_rel"] > 1e-4
        assert report["max_rel"] <= report["envelope"] and report["top1_agreement"] == 1.0
    else:
        assert report["max_rel"] <= report["tolerance"]
    if fmt not in ("keras", "bundle"):
        assert len(report["states"]) == len(delta_layers(tied[0])) and report["top1_agreement"] == 1.0


def test_a_bundle_with_one_weight_changed_fails(tied, tmp_path):
    model, _, clip = tied
    from streaming.bundle import export_bundle

    path = export_bundle(model, tmp_path / "b")
    check_bundle(path, model, clip, 1e-4)   # intact: passes
    manifest = json.loads((path / "manifest.json").read_text())
    key = next(s["kernel_key"] for s in manifest["steps"] if s["op"] == "depthwise")
    with np.load(path / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key].flat[0] *= 1.001   # a change far smaller than what the flips move
    np.savez(path / "weights.npz", **arrays)
    with pytest.raises(CheckFailed, match="bit for bit"):
        check_bundle(path, model, clip, 1e-4)


def _stream_call(stream_model, forget_states: bool = False):
    def call(inputs):
        if forget_states:
            inputs = {k: (v if k == FRAME_INPUT else np.zeros_like(v)) for k, v in inputs.items()}
        return {k: np.asarray(v) for k, v in stream_model(inputs, training=False).items()}

    return call


def test_resynced_check_accepts_the_keras_model_itself_and_catches_defects(tied):
    model, path, clip = tied
    stream_model = stateful_frame_model(model)
    report = check_resynced(_stream_call(stream_model), stream_model, clip, 1e-5)
    assert report["flips"] == 0 and report["max_rel"] == 0.0

    with pytest.raises(CheckFailed, match="frame 1"):   # the exported model ignores its state inputs
        check_resynced(_stream_call(stream_model, forget_states=True), stream_model, clip, 1e-4)

    for defect in ("weight", "threshold"):
        other = deltanet.load_model(path)
        if defect == "weight":
            kernel = next(w for w in other.weights if w.path == "block0_dw/kernel")
            value = kernel.numpy()
            value.flat[0] *= 1.01
            kernel.assign(value)
        else:
            layer = delta_layers(other)[2]
            layer.threshold.assign(layer.threshold.numpy() * 0.9)
        with pytest.raises(CheckFailed, match="not threshold decisions|not marginal|logits differ"):
            check_resynced(_stream_call(stateful_frame_model(other)), stream_model, clip, 1e-4)
