"""A soak run short enough for CI (2,000 frames): live's memory stays flat, the engine does not drift.

The real CLI in a child process (``scripts/soak.py``'s ``soak_live``: resident memory read off
``/proc`` every 500 frames), and the engine against the Keras model frame by frame with
states carried (``streaming.reference``), keyframes off and on. The 10,000-frame figures on
real footage are in docs/soak.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from test_live import make_model

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 2000
SOURCE = "synthetic:64x48@30?seed=4&objects=2&motion=bounce"


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("soak") / "m.keras")


def test_live_memory_is_flat_over_2000_frames(soak, model, tmp_path):
    from streaming.bundle import export_bundle

    bundle = export_bundle(model, tmp_path / "m.bundle")   # the device path: no TensorFlow in the child
    r = soak.soak_live(str(bundle), SOURCE, FRAMES, keyframe_interval=None, warmup=1000)
    assert r["frames"] == FRAMES and "dropped 0" in r["summary"]
    assert [n for n, _ in r["rss_mb"]] == [500, 1000, 1500, 2000]
    assert r["after_warmup_range_mb"] < 4.0, r["rss_mb"]   # after warm-up, within a few MB
    assert len(r["latency_ms"]) == 2 and all(b["p99"] >= b["p50"] > 0 for b in r["latency_ms"])


def test_engine_does_not_drift_from_keras_over_2000_frames(model):
    import deltanet
    from streaming.engine import DeltaEngine
    from streaming.reference import KerasReference
    from streaming.sources import open_source

    clip_model = deltanet.load_model(model)
    engines = {kf: DeltaEngine.from_keras(clip_model, threads=1, keyframe_interval=kf) for kf in (None, 250)}
    reference = KerasReference(clip_model)
    got, want = {kf: [] for kf in engines}, []
    with open_source(SOURCE, max_frames=FRAMES) as src:
        for frame in src:
            x = engines[None].prepare(frame.image)
            for kf, engine in engines.items():
                got[kf].append(engine.step(x)[0])
            want.append(reference.step(x))
    want = np.stack(want)
    for kf in engines:   # keyframes off and on
        logits = np.stack(got[kf])
        err = np.abs(logits - want).max(axis=1) / np.abs(want).max(axis=1)
        per_block = [err[i:i + 500].max() for i in range(0, FRAMES, 500)]
        assert len(logits) == FRAMES and max(per_block) < 1e-4, (kf, per_block)   # no flip here: exact throughout
        assert (logits.argmax(1) == want.argmax(1)).all()
