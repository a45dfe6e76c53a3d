"""Region-weighted thresholds and per-worker load statistics wired into ``DeltaEngine``."""

from __future__ import annotations

import numpy as np
import pytest

import keras

import deltanet
from streaming.convert import to_plan
from ops.interpreter import MAC_POINTWISE
from streaming.engine import DeltaEngine
from streaming.region import roi_prior
from test_engine import _randomize_bn, static_camera_frames


@pytest.fixture(scope="module")
def plan():
    keras.utils.set_random_seed(21)
    model = deltanet.build_model(4, arch="tiny", size=32, threshold=0.05)
    _randomize_bn(model, 6)
    return to_plan(model)


def _roi():
    return roi_prior((32, 32), [(0, 0, 16, 32)])  # left half


def test_lambda_zero_is_the_plain_engine(plan):
    frames = static_camera_frames(25, seed=3)
    plain, _ = DeltaEngine(plan).run(frames)
    engine = DeltaEngine(plan)
    engine.set_region(_roi(), lam=0.0)
    region, _ = engine.run(frames)
    np.testing.assert_array_equal(region, plain)


@pytest.mark.parametrize("prior", ["roi", "motion"])
def test_profiled_and_plain_frames_agree_with_a_region(plan, prior):
    frames = static_camera_frames(30, seed=4)
    outs = []
    for profile in (False, True):
        engine = DeltaEngine(plan, profile=profile)
        engine.set_region(_roi() if prior == "roi" else "motion", lam=4.0)
        logits, stats = engine.run(frames)
        outs.append((logits, np.array([s.nonzero_deltas for s in stats])))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    plain, plain_stats = DeltaEngine(plan).run(frames)
    assert outs[0][1][1:].sum() > np.array([s.nonzero_deltas for s in plain_stats])[1:].sum()  # the region fires more
    assert not np.array_equal(outs[0][0], plain)


def test_the_region_fires_more_than_the_background(plan):
    """A uniform small flicker everywhere: below theta in the background, above the lowered
    threshold inside the region of interest (the input encoder, where it is easy to count)."""
    rng = np.random.default_rng(5)
    base = rng.uniform(40, 215, (32, 32, 3))
    frames = np.stack([np.clip(base + rng.uniform(-4, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(12)])
    engine = DeltaEngine(plan)
    engine.set_region(_roi(), lam=9.0)
    assert engine.program.mac_layers[0].in_shape[:2] == (32, 32)  # fed by the input's encoder
    inside = outside = 0
    for k, f in enumerate(frames):
        engine.step(f)
        if k == 0:
            continue
        active, _ = engine.delta_of(0)
        left = (active % 32) < 16
        inside += int(left.sum())
        outside += int((~left).sum())
    assert inside > 5 * max(outside, 1), (inside, outside)
    engine.set_region(None)  # back to plain thresholds
    assert engine.region is None and np.all(engine.region_scale((32, 32)) == 1)


def test_set_region_rejects_bad_use(plan):
    with pytest.raises(ValueError, match="mode='delta'"):
        DeltaEngine(plan, mode="dense").set_region(_roi())
    engine = DeltaEngine(plan)
    with pytest.raises(ValueError, match="'motion'"):
        engine.set_region("edges")
    with pytest.raises(ValueError, match="lam"):
        engine.set_region(_roi(), lam=-1)
    with pytest.raises(ValueError, match="prior"):
        engine.set_region(np.ones((4,), np.float32))
    # a refused call changes nothing: still the plain encoders
    assert engine.region is None and np.all(engine.region_scale((32, 32)) == 1)
    quantized = to_plan(deltanet.build_model(3, arch="tiny", size=32, mode="quantize"))
    with pytest.raises(ValueError, match="no threshold-mode"):
        DeltaEngine(quantized).set_region(_roi())


def test_worker_stats_in_frame_stats(plan):
    frames = static_camera_frames(12, seed=6)
    engine = DeltaEngine(plan, threads=2, worker_stats=True)
    _, stats = engine.run(frames)
    assert stats[0].worker_max is None and stats[0].keyframe  # dense pass: no delta work to split
    pointwise = [i for i, m in enumerate(engine.program.mac_layers) if m.kind == MAC_POINTWISE]
    assert pointwise
    for s in stats[1:]:
        assert s.worker_max.shape == s.worker_mean.shape == (len(engine.layer_names),)
        assert np.all(s.worker_max >= s.worker_mean - 1e-9)
        assert np.all(s.worker_imbalance >= 1.0 - 1e-9) and np.all(s.worker_imbalance <= 2.0 + 1e-9)
        # pointwise kernels split the active pixels: the workers' non-zeros add up to the layer's
        np.testing.assert_allclose(s.worker_mean[pointwise] * 2, s.nonzero_deltas[pointwise])
    assert any(s.worker_max.sum() > 0 for s in stats[1:])
    _, plain = DeltaEngine(plan).run(frames[:3])
    assert plain[2].worker_max is None and plain[2].worker_imbalance is None


def test_gain_scales_every_threshold(plan):
    frames = static_camera_frames(15, seed=8)
    _, plain = DeltaEngine(plan).run(frames)
    engine = DeltaEngine(plan)
    engine.set_region(np.zeros((8, 8), np.float32), lam=4.0, gain=3.0)  # no region, thresholds x3
    _, coarse = engine.run(frames)
    assert sum(s.nonzero_deltas.sum() for s in coarse[1:]) < sum(s.nonzero_deltas.sum() for s in plain[1:])
    np.testing.assert_array_equal(engine.region_scale((32, 32)), np.float32(3.0))
    with pytest.raises(ValueError, match="gain"):
        engine.set_region(_roi(), gain=0.0)
