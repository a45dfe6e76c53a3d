"""Motion compensation (issue #14): the camera tracker and the world-canvas engine on synthetic pans."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

import deltanet
from streaming.canvas import MotionEngine
from streaming.canvas_plan import canvas_plan, cell_weights, total_stride
from streaming.convert import to_plan
from streaming.engine import DeltaEngine
from streaming.motion import CameraTracker, refine_shift
from streaming.plan import PlanError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 48


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (structure at several scales, like a photograph)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for sigma, amp in ((1.0, 40), (3.0, 60), (8.0, 80)):
        img += amp * cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), sigma) * np.sqrt(sigma)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def pan(image: np.ndarray, n: int, size: int = SIZE, vx: int = 1, vy: int = 0, wrap: bool = False) -> np.ndarray:
    """``n`` frames of a camera panning over ``image`` by whole pixels per frame (content moves by -v)."""
    h, w = image.shape[:2]
    out = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        y0, x0 = 8 + t * vy, 8 + t * vx
        rows, cols = np.arange(y0, y0 + size) % h, np.arange(x0, x0 + size) % w
        if not wrap:
            assert rows.max() < h and cols.max() < w
        out[t] = image[np.ix_(rows, cols)]
    return out


@pytest.fixture(scope="module")
def baseline_plan():
    """Exact delta layers (threshold 0): the delta engine computes the dense function."""
    return to_plan(deltanet.build_model(3, arch="tiny", size=SIZE, baseline=True))


@pytest.fixture(scope="module")
def delta_plan():
    return to_plan(deltanet.build_model(3, arch="tiny", size=SIZE, threshold=0.05))


# --- the tracker ------------------------------------------------------------------------------


def test_tracker_follows_an_integer_pan_exactly():
    frames = pan(texture(120, 400), 60, vx=2, vy=0)
    tracker = CameraTracker((SIZE, SIZE))
    motions = [tracker.update(f) for f in frames]
    # the camera moves right by 2 px/frame: the content moves left, the offset counts it
    assert [m.offset_x for m in motions] == [-2 * t for t in range(60)]
    assert all(m.offset_y == 0 for m in motions)
    assert np.allclose([m.dx for m in motions[1:]], -2.0, atol=0.05)
    assert not any(m.refresh for m in motions)


def test_refine_shift_is_exact_on_integer_shifts():
    img = texture(80, 80).mean(axis=2).round().astype(np.uint8)
    anchor = img[10:58, 10:58]
    frame = img[13:61, 8:56]  # frame(x) = anchor(x - s) with s = (+2, -3)
    (sx, sy), left = refine_shift(anchor, frame, 1.4, -2.6)  # a coarse estimate next to it
    assert (sx, sy) == pytest.approx((2.0, -3.0), abs=0.1) and left == 0.0
    _, left = refine_shift(anchor, tiles(48, seed=1).mean(axis=2).round().astype(np.uint8), 0.0, 0.0)
    assert left > 16  # another scene: no shift aligns it


def test_compiled_refinement_equals_the_plain_walk():
    """ops.shift_search (compiled) against tests/naive.py's plain walk: pans, noise, a moving object,
    another scene, estimates far off, shifts that leave the overlap; uint8 as the tracker passes it."""
    import naive

    rng = np.random.default_rng(5)
    img = texture(160, 160, seed=3).mean(axis=2)
    cases = 0
    for _ in range(60):
        s = rng.integers(-6, 7, size=2)
        y0, x0 = 40 + rng.integers(-4, 5), 40 + rng.integers(-4, 5)
        anchor = img[y0 : y0 + 64, x0 : x0 + 64]
        frame = img[y0 - s[1] : y0 - s[1] + 64, x0 - s[0] : x0 - s[0] + 64] + rng.normal(0, rng.choice([0, 2, 8]), (64, 64))
        if rng.random() < 0.3:  # a bright object somewhere
            oy, ox = rng.integers(0, 48, size=2)
            frame[oy : oy + 16, ox : ox + 16] = 255
        if rng.random() < 0.1:  # another scene
            frame = tiles(66, seed=int(rng.integers(100)))[:64, :64].mean(axis=2)
        anchor, frame = (np.clip(np.rint(v), 0, 255).astype(np.uint8) for v in (anchor, frame))
        est = s + rng.normal(0, 1.5, size=2)
        got, want = refine_shift(anchor, frame, *est), naive.refine_shift(anchor, frame, *est)
        assert (got[0] is None) == (want[0] is None), (s, est, got, want)
        if want[0] is not None:
            assert got[0] == pytest.approx(want[0], abs=1e-12) and got[1] == pytest.approx(want[1], abs=1e-12)
            cases += want[0] != (0.0, 0.0)
    assert cases > 20  # most cases found a shift (the comparison is not only of "no shift")


def test_static_camera_with_a_moving_object_and_noise_gives_no_motion():
    rng = np.random.default_rng(1)
    base = texture(SIZE, SIZE, seed=2).astype(np.float32)
    tracker = CameraTracker((SIZE, SIZE))
    for t in range(200):
        f = base + rng.normal(0, 3, base.shape)
        x = 2 + (t * 2) % (SIZE - 12)
        f[20:30, x : x + 10] = 250  # a foreground object crossing the scene
        m = tracker.update(np.clip(f, 0, 255).astype(np.uint8))
        assert (m.offset_x, m.offset_y) == (0, 0) and not m.refresh


def tiles(size: int, tile: int = 6, seed: int = 0) -> np.ndarray:
    """Another kind of scene: a high-contrast mosaic of random primary colours."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 2, (size // tile, size // tile, 3)) * 255, np.ones((tile, tile, 1))).astype(np.uint8)


def test_a_scene_cut_is_a_refresh():
    a, b = texture(SIZE, SIZE, seed=3), tiles(SIZE, seed=4)
    tracker = CameraTracker((SIZE, SIZE))
    motions = [tracker.update(f) for f in [a] * 5 + [b] * 5]
    assert [m.refresh for m in motions] == [False] * 5 + [True] + [False] * 4


def test_tracker_rejects_bad_input():
    with pytest.raises(ValueError, match="8x8"):
        CameraTracker((4, 4))
    with pytest.raises(ValueError, match="deadband"):
        CameraTracker((SIZE, SIZE), deadband=0.2)
    with pytest.raises(ValueError, match="uint8 frame"):
        CameraTracker((SIZE, SIZE)).update(np.zeros((SIZE, SIZE + 1, 3), np.uint8))


# --- the canvas ------------------------------------------------------------------------------


def test_cell_weights_cover_the_frame():
    w = cell_weights(6, 4, 6, 12)  # cells of 4 px; the frame spans pixels 6..17
    assert w.tolist() == [0.0, 0.5, 1.0, 1.0, 0.5, 0.0]
    assert w.sum() * 4 == 12


def test_canvas_plan_keeps_every_layer_and_grows_the_maps(baseline_plan):
    stride = total_stride(baseline_plan)
    cp = canvas_plan(baseline_plan, 2 * stride)
    assert cp.input_shape == (SIZE + 4 * stride, SIZE + 4 * stride, 3)
    fh, fw, _ = cp.tensors[cp.output]
    assert (fh, fw) == (SIZE // stride + 4, SIZE // stride + 4)
    assert [s["name"] for s in cp.mac_steps()] == [s["name"] for s in baseline_plan.mac_steps()][:-1]  # the head is NumPy's
    with pytest.raises(ValueError, match="multiple"):
        canvas_plan(baseline_plan, stride + 1)


def test_static_stream_is_bit_identical_to_the_plain_engine(delta_plan):
    rng = np.random.default_rng(0)
    base = texture(SIZE, SIZE, seed=5).astype(np.float32)
    frames = []
    for t in range(40):
        f = base + rng.normal(0, 3, base.shape)
        f[10:18, 4 + t % 30 : 12 + t % 30] = 240
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    plain = DeltaEngine(delta_plan, keyframe_interval=16)
    compensated = MotionEngine(DeltaEngine(delta_plan, keyframe_interval=16))
    for f in frames:
        a, sa = plain.step(f)
        b, sb = compensated.step(f)
        assert np.array_equal(a, b)
        assert np.array_equal(sa.nonzero_deltas, sb.nonzero_deltas) and sa.keyframe == sb.keyframe
        assert not sb.on_canvas and sb.offset == (0, 0)


def _dense_canvas_logits(engine: MotionEngine, canvases, offsets):
    """The same network, dense, on the same canvases, read out under the same frame positions."""
    dense = DeltaEngine(engine.canvas_engine.plan, mode="dense")
    out = []
    for canvas, (ox, oy) in zip(canvases, offsets):
        feature, _ = dense.step(canvas)
        out.append(engine.readout(feature, engine.margin - oy, engine.margin - ox))
    return np.stack(out)


def test_integer_pan_sends_deltas_only_for_the_uncovered_border_and_matches_a_dense_canvas_run(baseline_plan):
    frames = pan(texture(120, 400, seed=6), 50, vx=1, vy=0)
    margin = 4 * total_stride(baseline_plan)
    engine = MotionEngine(DeltaEngine(baseline_plan), margin=margin)
    plain = DeltaEngine(baseline_plan)
    logits, canvases, offsets, density, plain_density = [], [], [], [], []
    for t, f in enumerate(frames):
        out, st = engine.step(f)
        logits.append(out)
        canvases.append(engine.canvas.copy())
        offsets.append(st.offset)
        plain_density.append(plain.step(f)[1].mac_density)
        if t >= 2 and st.on_canvas and not st.refresh:
            density.append(st.mac_density)
            # the first layer's deltas: only the newly uncovered column at the frame's leading edge
            active, _ = engine.canvas_engine.delta_of(0)
            cw = engine.canvas.shape[1]
            cols = np.unique(active % cw)
            left = margin - st.offset[0]
            assert cols.tolist() == [left + SIZE - 1], (t, cols, left)
    assert len(density) > 20
    # away from the border nothing is sent: a few % of the plain engine's MACs (receptive fields of one column)
    assert np.mean(density) < 0.25 * np.mean(plain_density[2:]), (np.mean(density), np.mean(plain_density[2:]))
    dense = _dense_canvas_logits(engine, canvases[1:], offsets[1:])
    logits = np.stack(logits[1:])
    rel = np.abs(logits - dense).max(axis=1) / np.abs(dense).max(axis=1)
    assert rel.max() < 1e-4, rel.max()  # float32 summation order only (exact encoders)


def test_cut_during_a_pan_rebuilds_the_canvas(baseline_plan):
    frames = np.concatenate([pan(texture(120, 400, seed=7), 12, vx=1), pan(tiles(120 * 6, seed=8)[:120, :400], 6, vx=1)])
    engine = MotionEngine(DeltaEngine(baseline_plan), margin=16)
    stats = [engine.step(f)[1] for f in frames]
    assert stats[12].refresh and stats[12].on_canvas and stats[12].offset == (0, 0)
    assert stats[12].mac_density > 1.0  # a dense pass over the whole canvas, larger than a frame
    assert not any(s.refresh for s in stats[2:12] + stats[13:])


def test_memory_stays_flat_over_a_long_pan(baseline_plan):
    frames = pan(texture(96, 256, seed=9), 256, vx=3, vy=1, wrap=True)  # the pan wraps around
    engine = MotionEngine(DeltaEngine(baseline_plan), margin=8)
    tracemalloc.start()
    refreshes, snapshots = 0, []
    for t in range(2200):
        refreshes += engine.step(frames[t % len(frames)])[1].refresh
        if t in (1199, 2199):
            snapshots.append(tracemalloc.take_snapshot())
    tracemalloc.stop()
    # (the interpreter's numba state grows by a bounded ~300 KB over its first ~1000 frames, the
    # plain DeltaEngine's too; after that nothing may grow)
    grown = sum(s.size_diff for s in snapshots[1].compare_to(snapshots[0], "filename"))
    assert grown < 16 * 1024, grown
    assert refreshes > 100  # it kept re-centring (bounded canvas), and ran on


def test_models_the_canvas_cannot_take_are_refused():
    import keras

    inp = keras.Input((4, 16, 16, 3))
    x = deltanet.frame_wise.FrameWise(keras.layers.Conv2D(4, 3, padding="same"))(inp)
    x = deltanet.frame_wise.FrameWise(keras.layers.Flatten())(x)
    x = deltanet.frame_wise.FrameWise(keras.layers.Dense(2))(x)
    plan = to_plan(keras.Model(inp, x))
    with pytest.raises(PlanError, match="global pooling"):
        MotionEngine(DeltaEngine(plan))


@pytest.mark.parametrize("module", ["streaming.live", "streaming.report", "streaming.bench"])
def test_bad_motion_value_is_one_line_and_exit_2(module, tmp_path):
    r = subprocess.run([sys.executable, "-m", module, "--model", "m.keras", "--source", "v.mp4", "--out", str(tmp_path),
                        "--motion", "sideways"], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--motion" in lines[0] and "sideways" in lines[0], r.stderr
