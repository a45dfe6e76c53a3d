"""The per-layer dense fallback: a MAC layer whose delta is denser than its break-even runs its
dense kernel for the frame, and the stream goes on exactly as if it had not (within float32
rounding: the dense kernel sums the same products in another order).

Tolerance: the fallback recomputes a layer's accumulator ``conv(reference) + bias`` with
im2col + BLAS instead of the running sum of delta products; each differs from the exact value
by a few float32 ulps of the accumulator's magnitude, and the difference passes downstream
only where an encoder transmits it. Measured: <= 6e-7 of the largest logit here; the tests allow
2e-6 (about 16 ulps), far below the 1e-4 at which this project compares engines with Keras.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import keras

import deltanet
from streaming.convert import to_plan
from streaming.engine import DeltaEngine
from streaming.tuning import crossover, tune_fallback
from test_engine import _randomize_bn, static_camera_frames

CUT = 12  # the first frame of the second scene
TOL = 2e-6


def _cut_stream(n=24, size=32):
    """A static camera, then a hard cut to another scene (every pixel changes), static again."""
    return np.concatenate([static_camera_frames(CUT, size, seed=0), static_camera_frames(n - CUT, size, seed=9)])


@pytest.fixture(scope="module")
def plans():
    keras.utils.set_random_seed(11)
    thresholded = deltanet.build_model(4, arch="tiny", size=32, threshold=0.05)
    _randomize_bn(thresholded, 4)
    # zero-threshold encoders transmit every change, rounding included: the strictest check
    # that a fallback leaves each layer's state as the delta kernels would have
    exact = deltanet.build_model(4, arch="tiny", size=32, baseline=True)
    _randomize_bn(exact, 5)
    return {"threshold": to_plan(thresholded), "exact": to_plan(exact)}


def _rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("kind", ["threshold", "exact"])
def test_cut_falls_back_and_matches_the_delta_path(plans, kind):
    plan = plans[kind]
    frames = _cut_stream()
    off = DeltaEngine(plan, fallback=False)
    on = DeltaEngine(plan, breakeven={n: 0.5 for n in off.layer_names})
    want, s_off = off.run(frames)
    got, s_on = on.run(frames)
    assert _rel_err(got, want) <= TOL, _rel_err(got, want)
    fell = np.array([s.fallback_layers for s in s_on])
    assert fell[CUT].sum() >= 2, fell[CUT]  # the cut: at least the first layers ran dense
    assert not np.array([s.fallback_layers for s in s_off]).any()
    # a layer that ran dense executed its dense MACs; the transmitted deltas are the same
    i = np.flatnonzero(fell[CUT])
    assert np.array_equal(s_on[CUT].executed_macs[i], on.dense_macs[i])
    assert np.array_equal(s_on[CUT].nonzero_deltas, s_off[CUT].nonzero_deltas)
    assert s_on[CUT].mac_density == pytest.approx(s_off[CUT].mac_density)
    if kind == "threshold":  # (zero thresholds transmit the sensor noise: no frame is quiet)
        quiet = np.delete(np.arange(len(frames)), CUT)
        assert not fell[quiet].any(), np.flatnonzero(fell.any(axis=1))
        assert np.array_equal(got[:CUT], want[:CUT])  # nothing fell back before the cut: the same code ran


def test_every_layer_dense_every_frame_keeps_the_stream_exact(plans):
    """Break-evens near zero: every layer that receives a delta runs dense, frame after frame
    (conv, depthwise, pointwise and Dense alike); the next delta frame must continue from it."""
    plan = plans["exact"]
    frames = _cut_stream()
    off = DeltaEngine(plan, fallback=False)
    on = DeltaEngine(plan, breakeven={n: 1e-9 for n in off.layer_names})
    want, _ = off.run(frames)
    got, stats = on.run(frames)
    assert _rel_err(got, want) <= TOL, _rel_err(got, want)
    assert all(s.fallback_layers[s.nonzero_deltas > 0].all() for s in stats[1:])
    # ... and alternating: dense on even frames only, delta kernels on odd ones
    alt = DeltaEngine(plan)
    outs = []
    for t, f in enumerate(frames):
        alt.breakeven = {n: (1e-9 if t % 2 == 0 else math.inf) for n in alt.layer_names}
        outs.append(alt.step(f)[0])
    assert _rel_err(np.stack(outs), want) <= TOL


def test_fallback_is_a_delta_frame_thing(plans):
    plan = plans["threshold"]
    frames = _cut_stream(16)
    dense = DeltaEngine(plan, mode="dense", breakeven={n: 1e-9 for n in DeltaEngine(plan).layer_names})
    _, stats = dense.run(frames)
    assert not any(s.fallback_layers.any() for s in stats)  # dense frames run every layer dense anyway
    engine = DeltaEngine(plan, keyframe_interval=4, breakeven={n: 1e-9 for n in dense.layer_names})
    _, stats = engine.run(frames)
    assert not any(s.fallback_layers.any() for s in stats if s.keyframe)
    assert engine.clone().breakeven == engine.breakeven and not engine.clone(fallback=False).fallback


def test_breakeven_is_checked(plans):
    engine = DeltaEngine(plans["threshold"])
    assert set(engine.breakeven.values()) == {1.0}  # untuned: only when the whole input changed
    with pytest.raises(ValueError, match="unknown MAC layers"):
        engine.breakeven = {"nope": 0.5}
    with pytest.raises(ValueError, match="> 0"):
        engine.breakeven = {engine.layer_names[0]: 0.0}
    engine.breakeven = {engine.layer_names[0]: 0.25}
    assert engine.breakeven[engine.layer_names[0]] == 0.25 and engine.breakeven[engine.layer_names[1]] == 1.0


def test_crossover_interpolates():
    assert crossover([0.1, 0.5, 1.0], [1.0, 5.0, 10.0], 3.0) == pytest.approx(0.3)
    assert crossover([0.1, 0.5, 1.0], [4.0, 5.0, 10.0], 2.0) == pytest.approx(0.05)  # below the first density
    assert crossover([0.1, 0.5, 1.0], [1.0, 2.0, 3.0], 3.0) == pytest.approx(1.0)
    assert crossover([0.1, 0.5, 1.0], [1.0, 2.0, 2.5], 3.0) == math.inf  # the delta kernel never loses


def test_tune_fallback_measures_every_layer_and_leaves_the_engine_alone(plans):
    plan = plans["threshold"]
    frames = _cut_stream(16)
    engine = DeltaEngine(plan)
    want, _ = DeltaEngine(plan).run(frames)
    first, _ = engine.run(frames[:5])
    breakeven = tune_fallback(engine, densities=(0.1, 0.5, 1.0), reps=3)
    rest, _ = engine.run(frames[5:])
    np.testing.assert_array_equal(np.concatenate([first, rest]), want)  # the stream went on untouched
    assert set(breakeven) == set(engine.layer_names)
    assert all(v > 0 for v in breakeven.values()), breakeven
    engine.breakeven = breakeven
    assert engine.breakeven == breakeven


@pytest.mark.parametrize(("kind", "k", "stride", "padding", "m"), [
    ("depthwise", 3, 1, "same", 1), ("depthwise", 3, 2, "same", 1), ("depthwise", 3, 2, "valid", 2),
    ("conv", 3, 2, "same", 5), ("conv", 1, 1, "valid", 7),
])  # fmt: skip
def test_dense_kernels_match_the_reference(kind, k, stride, padding, m):
    """The kernels the fallback (and keyframes, dense mode) run: ``acc = conv(x) + bias``."""
    from ops.dense import _conv_dense
    from ops.geometry import conv_geometry
    from naive import conv2d, depthwise_conv2d

    rng = np.random.default_rng(k * 10 + stride + m)
    x = rng.normal(size=(9, 11, 6)).astype(np.float32)
    w = rng.normal(size=(k, k, 6, m)).astype(np.float32)
    oh, ow, pt, pl = conv_geometry(9, 11, k, k, stride, padding)
    want = (depthwise_conv2d if kind == "depthwise" else conv2d)(x, w, stride, padding)
    bias = rng.normal(size=want.shape[2]).astype(np.float32)
    acc = np.full(want.shape, np.nan, np.float32)
    col = np.zeros(oh * ow * k * k * 6, np.float32)
    _conv_dense(x, w, stride, pt, pl, bias, acc, col, kind == "depthwise", kind == "conv" and k == 1)
    np.testing.assert_allclose(acc, want + bias, rtol=1e-5, atol=1e-5)
    # the parallel row-block kernel: the same products, for any number of blocks (BLAS may block a
    # shorter matrix differently: float32 rounding apart)
    from ops.dense import _conv_dense_par

    for blocks in (1, 2, 3, oh + 5):
        par = np.full(want.shape, np.nan, np.float32)
        _conv_dense_par(x, w, stride, pt, pl, bias, par, np.zeros_like(col), kind == "depthwise", kind == "conv" and k == 1, blocks)
        np.testing.assert_allclose(par, acc, rtol=1e-6, atol=1e-6)


def test_parallel_dense_kernels_give_the_same_stream(plans):
    """Dense kernels split into row blocks among 2 threads (keyframes, dense mode, the fallback) compute
    what the serial ones do (within float32 rounding: BLAS may block a shorter matrix differently); the choice is per layer, checked, kept by clone() and
    measured by tune_dense_parallel without touching the engine."""
    from streaming.tuning import apply_tuning, tune_dense_parallel, tuning_record

    plan = plans["exact"]
    frames = _cut_stream()
    names = DeltaEngine(plan).layer_names
    for mode in ("delta", "dense"):
        got = {}
        for par in (False, True):
            engine = DeltaEngine(plan, mode=mode, threads=2, breakeven={n: 1e-9 for n in names},
                                 dense_parallel={n: par for n in names})  # fmt: skip
            assert set(engine.dense_parallel.values()) == {par}
            got[par], stats = engine.run(frames)
            if mode == "delta":
                assert all(s.fallback_layers[s.nonzero_deltas > 0].all() for s in stats[1:])
        assert _rel_err(got[True], got[False]) <= TOL, _rel_err(got[True], got[False])
    engine = DeltaEngine(plan, threads=2)
    first, _ = engine.run(frames[:5])
    choice = tune_dense_parallel(engine, reps=2)
    rest, _ = engine.run(frames[5:])
    np.testing.assert_array_equal(np.concatenate([first, rest]), DeltaEngine(plan, threads=2).run(frames)[0])
    assert set(choice) == set(names) and all(isinstance(v, bool) for v in choice.values())
    engine.dense_parallel = {names[0]: True}
    assert engine.dense_parallel[names[0]] and engine.clone().dense_parallel == engine.dense_parallel
    with pytest.raises(ValueError, match="unknown MAC layers"):
        engine.dense_parallel = {"nope": True}
    assert not any(DeltaEngine(plan, threads=1, dense_parallel={n: True for n in names}).dense_parallel.values())
    record = tuning_record(engine, 5)
    assert record["dense_parallel"] == engine.dense_parallel
    del record["dense_parallel"]  # a record saved before dense kernels ran in parallel: serial, as it was measured
    apply_tuning(engine, record)
    assert not any(engine.dense_parallel.values())
