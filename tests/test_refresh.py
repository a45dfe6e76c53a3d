"""Refresh frames (``DeltaEngine(refresh_at=)``): a delta frame whose first encoder fires in enough
of its tiles runs dense from there on and every threshold encoder transmits its whole input.

What must hold: a refresh frame's logits are the dense network's (the same dense kernels, so bit
for bit); the stream goes on from references that equal the activations; swapping an encoder's
reference with its input's buffer (what the engine does where nothing else reads the input) is
the same as copying it; frames below the occupancy stay delta frames; the break-even is measured.
"""

from __future__ import annotations

import numpy as np
import pytest

import keras

import deltanet
from ops import interpreter as ip
from streaming.convert import to_plan
from streaming.engine import DeltaEngine
from streaming.tuning import tune_refresh
from test_engine import _randomize_bn

CUT = 12


def _scene(n, seed, size=32):
    """A static textured scene without sensor noise and a moving bright square (a few tiles change)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (size, size, 3)).astype(np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for t in range(n):
        y, x = 3 + t % 5, 2 + t % 7
        frames[t, y : y + 6, x : x + 6] = 250
    return frames


def _cut_stream(n=24):
    """A static camera, then a hard cut to another scene (every pixel changes), static again."""
    return np.concatenate([_scene(CUT, 0), _scene(n - CUT, 9)])


@pytest.fixture(scope="module")
def plan():
    keras.utils.set_random_seed(11)
    model = deltanet.build_model(4, arch="tiny", size=32, threshold=0.05)
    _randomize_bn(model, 4)
    return to_plan(model)


def _encoders(engine):
    steps = engine.program.steps
    return steps[(steps[:, ip.F_OP] == ip.OP_ENCODE) & (steps[:, ip.A0] == ip.ENC_THRESHOLD)]


def test_the_model_has_both_kinds_of_encoder(plan):
    """The tests below exercise the swap and the copy: the tiny model must have encoders of both kinds."""
    swap = _encoders(DeltaEngine(plan))[:, ip.A0 + 4]
    assert (swap == 1).any() and (swap == 0).any(), swap


def test_refresh_frames_are_the_dense_network(plan):
    frames = _cut_stream()
    always = DeltaEngine(plan, refresh_at=0.0)  # every delta frame refreshes
    dense = DeltaEngine(plan, mode="dense")
    got, stats = always.run(frames)
    want, _ = dense.run(frames)
    assert stats[0].keyframe and not stats[0].refreshed  # frame 0: a keyframe (threshold semantics)
    assert all(s.refreshed for s in stats[1:])
    assert np.array_equal(got[1:], want[1:])
    assert all(s.mac_density == 1.0 and not s.fallback_layers.any() for s in stats[1:])


def test_a_cut_refreshes_and_the_stream_goes_on_from_exact_references(plan):
    frames = _cut_stream()
    engine = DeltaEngine(plan, refresh_at=0.5)
    dense = DeltaEngine(plan, mode="dense")
    plain = DeltaEngine(plan)
    got, stats = engine.run(frames)
    want, _ = dense.run(frames)
    delta, _ = plain.run(frames)
    refreshed = [t for t, s in enumerate(stats) if s.refreshed]
    assert refreshed == [CUT], refreshed  # the static frames change a few pixels: only the cut refreshes
    assert np.array_equal(got[:CUT], delta[:CUT])  # before it: the plain delta engine, the same code
    assert np.array_equal(got[CUT], want[CUT])
    # After the cut the references are the activations (the plain engine's lag by up to theta):
    # the refreshed stream stays at least as close to the dense network as the plain one.
    err = np.abs(got[CUT + 1 :] - want[CUT + 1 :]).max()
    err_plain = np.abs(delta[CUT + 1 :] - want[CUT + 1 :]).max()
    assert err <= err_plain + 1e-6, (err, err_plain)
    assert 0.0 < engine.occupancy < 0.5  # the last frame: the square moved


def test_swapping_buffers_equals_copying_them(plan):
    """Two refreshes and the frames between: the engine (swapping where it may) against one made to copy everywhere."""
    frames = np.concatenate([_cut_stream(), _scene(8, 3)])
    swap = DeltaEngine(plan, refresh_at=0.5)
    copy = DeltaEngine(plan, refresh_at=0.5)
    enc = (copy.program.steps[:, ip.F_OP] == ip.OP_ENCODE)
    copy.program.steps[enc, ip.A0 + 4] = 0
    a, sa = swap.run(frames)
    b, sb = copy.run(frames)
    assert sum(s.refreshed for s in sa) == 2 and [s.refreshed for s in sa] == [s.refreshed for s in sb]
    assert np.array_equal(a, b)
    # a keyframe after the swaps still finds every buffer where the tables say
    swap.keyframe_interval = copy.keyframe_interval = 5
    swap.reset(), copy.reset()
    assert np.array_equal(swap.run(frames)[0], copy.run(frames)[0])


def test_occupancy_counts_tiles(plan):
    rng = np.random.default_rng(0)
    h, w = 37, 29  # tiles at the edges are partial
    mark = np.zeros(h * w, np.uint8)
    for n in (0, 1, 5, 200, h * w):
        active = np.sort(rng.choice(h * w, n, replace=False)).astype(np.int32)
        t = ip.REFRESH_TILE
        want = len({(p // w // t, p % w // t) for p in active}) / (-(-h // t) * -(-w // t))
        assert ip.tile_occupancy(active, n, h, w, mark) == pytest.approx(want)
        assert not mark.any()  # zeroed again
    engine = DeltaEngine(plan)
    frames = _scene(3, 1)
    engine.step(frames[0])
    assert engine.occupancy == 1.0  # a keyframe
    engine.step(frames[0])
    assert engine.occupancy == 0.0  # nothing changed


def test_refresh_at_is_checked(plan):
    engine = DeltaEngine(plan)
    assert engine.refresh_at is None and engine.clone(refresh_at=0.3).refresh_at == 0.3
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="refresh_at"):
            engine.refresh_at = bad
    with pytest.raises(ValueError, match="mode='delta'"):
        DeltaEngine(plan, mode="dense", refresh_at=0.5)


def test_tune_refresh_measures_and_leaves_the_engine_alone(plan):
    engine = DeltaEngine(plan)
    frames = _scene(12, 0)
    at = tune_refresh(engine, frames)
    assert at is None or 0.0 <= at <= 1.0
    assert engine.refresh_at is None and engine.frame_index == 0
    with pytest.raises(ValueError, match="at least 2"):
        tune_refresh(engine, frames[:1])


def _poison_logits_layer(engine):
    m = engine.program.mac_layers[-1]
    engine.program.weights.wbuf = engine.program.weights.wbuf.copy()  # (the arena is shared with no one here)
    k0 = engine.program.steps[m.step, ip.A0 + 1]
    engine.program.weights.wbuf[k0 : k0 + int(np.prod(m.kernel_shape))] = np.nan


def test_broken_weights_are_reported_in_refresh_frames_too(plan):
    """A refresh frame's encoders copy without looking at the values, and no encoder follows the last
    layer: the engine checks every frame's logits. NaN weights in the logits layer."""
    frames = _cut_stream()
    engine = DeltaEngine(plan)
    _poison_logits_layer(engine)
    with pytest.raises(ValueError, match="non-finite logits: "):  # the keyframe
        engine.step(frames[0])
    engine = DeltaEngine(plan, refresh_at=0.0)
    engine.step(frames[0])
    _poison_logits_layer(engine)
    with pytest.raises(ValueError, match="non-finite logits in a refresh frame"):
        engine.step(frames[CUT])
