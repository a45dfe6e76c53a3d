"""Bundles: round trip, running without TensorFlow, and rejecting damaged or hostile files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras

import deltanet
from streaming.bundle import BundleError, bundle_frame_logits, export_bundle, load_bundle
from streaming.engine import DeltaEngine
from test_engine import _randomize_bn, static_camera_frames

ROOT = Path(__file__).resolve().parents[1]

# Runs a bundle in a process where importing tensorflow or keras raises ImportError.
NO_TF = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np
from streaming.bundle import load_bundle
from streaming.engine import DeltaEngine
frames = np.load(sys.argv[2])
engine = DeltaEngine(load_bundle(sys.argv[1]))
out, _ = engine.run(frames)
np.save(sys.argv[3], out)
assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)
print('ok')
"""


@pytest.fixture(scope="module")
def model_and_bundle(tmp_path_factory):
    keras.utils.set_random_seed(21)
    model = deltanet.build_model(4, arch="tiny", size=32, threshold=0.05, info={"class_names": list("abcd")})
    _randomize_bn(model, 7)
    path = export_bundle(model, tmp_path_factory.mktemp("b") / "model.bundle")
    return model, path


def test_round_trip_matches_keras(model_and_bundle):
    model, path = model_and_bundle
    frames = static_camera_frames(40, seed=12)
    expected = deltanet.frame_logits_model(model).predict(frames[None].astype("float32"), verbose=0)
    got = bundle_frame_logits(path, frames[None])
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4
    plan = load_bundle(path)
    assert plan.info["class_names"] == list("abcd")
    assert DeltaEngine(plan).class_names == list("abcd")


def test_bundle_runs_where_tensorflow_cannot_be_imported(model_and_bundle, tmp_path):
    model, path = model_and_bundle
    frames = static_camera_frames(20, seed=13)
    np.save(tmp_path / "frames.npy", frames)
    r = subprocess.run(
        [sys.executable, "-c", NO_TF, str(path), str(tmp_path / "frames.npy"), str(tmp_path / "out.npy")],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300,
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
    expected = deltanet.frame_logits_model(model).predict(frames[None].astype("float32"), verbose=0)[0]
    got = np.load(tmp_path / "out.npy")
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def _copy(src, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _rewrite_weights(path, fn):
    with np.load(path / "weights.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    fn(arrays)
    np.savez(path / "weights.npz", **arrays)


def _first_kernel(m):
    return next(s["kernel_key"] for s in m["steps"] if s["op"] == "conv2d")


CASES = {
    "truncated weights": (lambda p: (p / "weights.npz").write_bytes((p / "weights.npz").read_bytes()[:200]), "truncated or corrupt"),
    "missing weights": (lambda p: (p / "weights.npz").unlink(), "missing"),
    "manifest not json": (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
    "wrong format": (lambda p: _edit_manifest(p, lambda m: m.update(format="other")), "not a deltanet bundle"),
    "future version": (lambda p: _edit_manifest(p, lambda m: m.update(bundle_version=99)), "unsupported bundle_version"),
    "unknown layer kind": (lambda p: _edit_manifest(p, lambda m: m["steps"][2].update(op="lstm")), "unknown layer kind 'lstm'"),
    "oversize dimension": (lambda p: _edit_manifest(p, lambda m: m["tensors"].update(frame=[1 << 20, 32, 3])), "dimension outside"),
    "wrong shape": (
        lambda p: _rewrite_weights(p, lambda a: a.update({_first_kernel(json.loads((p / "manifest.json").read_text())): np.zeros((1, 1, 1, 1), np.float32)})),
        "has shape",
    ),
    "wrong dtype": (lambda p: _rewrite_weights(p, lambda a: a.update({k: v.astype(np.float64) for k, v in a.items()})), "float64"),
    "pickle payload": (lambda p: _rewrite_weights(p, lambda a: a.update({_first_kernel(json.loads((p / "manifest.json").read_text())): np.array([{"evil": 1}], dtype=object)})), "cannot be read safely"),
    "mismatched kernel": (
        lambda p: (
            _rewrite_weights(p, lambda a: a.update({_first_kernel(json.loads((p / "manifest.json").read_text())): np.zeros((3, 3, 7, 8), np.float32)})),
            _edit_manifest(p, lambda m: m["arrays"][_first_kernel(m)].update(shape=[3, 3, 7, 8])),
        ),
        "input channels",
    ),
    "nan weights": (lambda p: _rewrite_weights(p, lambda a: a.update({k: np.full_like(v, np.nan) for k, v in a.items()})), "NaN"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_bundles_are_rejected_with_one_clear_error(model_and_bundle, tmp_path, case):
    _, path = model_and_bundle
    damaged = _copy(path, tmp_path)
    damage, message = CASES[case]
    damage(damaged)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(damaged)
    assert "\n" not in str(err.value)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(BundleError, match="not a bundle folder"):
        load_bundle(tmp_path)


def test_export_cli_writes_a_checked_bundle(model_and_bundle, tmp_path):
    model, _ = model_and_bundle
    model.save(tmp_path / "m.keras")
    out = tmp_path / "exported.bundle"
    r = subprocess.run(
        [sys.executable, "-m", "training.export", "--model", str(tmp_path / "m.keras"), "--format", "bundle", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bundle" in r.stderr and load_bundle(out).output
