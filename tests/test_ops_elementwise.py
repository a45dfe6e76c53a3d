"""ops.elementwise: the per-pixel kernels against NumPy references (bit-exact)."""

from __future__ import annotations

import numpy as np
import pytest

from ops.elementwise import ACTIVATIONS, MERGES, _act, _activation_pixels, _divide_pixels, _frame_to_float_changed, _merge_pixels, _relu_pixels


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _relu_reference(v, a0, a1, a2):
    """Keras ReLU(negative_slope=a0, max_value=a1 (<0: none), threshold=a2) as the engine defines
    it: comparisons against the float64 parameters, arithmetic in float32."""
    v = np.asarray(v, np.float32)
    keep = v.astype(np.float64) >= a2
    below = np.float32(a0) * (v - np.float32(a2)) if a0 != 0.0 else np.zeros_like(v)
    out = np.where(keep, v, below).astype(np.float32)
    if a1 >= 0.0:
        out = np.where(out.astype(np.float64) > a1, np.float32(a1), out).astype(np.float32)
    return out


RELU_PARAMS = [(0.0, -1.0, 0.0), (0.0, 6.0, 0.0), (0.1, -1.0, 0.0), (0.2, 0.7, 0.1), (0.0, -1.0, 0.3), (0.3, 1e-3, -0.25)]


@pytest.mark.parametrize("a0,a1,a2", RELU_PARAMS)
@pytest.mark.parametrize("c", [1, 3, 16, 48, 37])
def test_relu_pixels_match_reference_and_generic_activation(a0, a1, a2, c):
    rng = np.random.default_rng(c)
    hw = 50
    src = rng.normal(0, 1.5, (hw, c)).astype(np.float32)
    src.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, np.float32(a2)]  # specials, and a value on the threshold
    src.flat[5] = np.float32(a1) if a1 >= 0 else 0.0
    pixels = np.sort(rng.choice(hw, 30, replace=False)).astype(np.int32)
    pixels[0] = 0
    dst = np.full((hw, c), 7.0, np.float32)
    _relu_pixels(src, dst, a0, a1, a2, pixels, 30)
    expected = np.full((hw, c), 7.0, np.float32)
    expected[pixels] = _relu_reference(src[pixels], a0, a1, a2)
    assert np.array_equal(_bits(dst), _bits(expected))
    # the dispatcher takes the same path, and agrees with the per-element definition _act
    dst2 = np.full((hw, c), 7.0, np.float32)
    _activation_pixels(src, dst2, ACTIVATIONS["relu"], a0, a1, a2, pixels, 30)
    assert np.array_equal(_bits(dst2), _bits(expected))
    per_element = np.array([_act(v, 1, a0, a1, a2) for v in src[pixels].ravel()], np.float32)
    assert np.array_equal(_bits(per_element), _bits(expected[pixels].ravel()))


def test_linear_activation_copies_listed_pixels():
    src = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    dst = np.zeros_like(src)
    pixels = np.array([1, 4, 9], np.int32)
    _activation_pixels(src, dst, ACTIVATIONS["linear"], 0.0, 0.0, 0.0, pixels, 3)
    expected = np.zeros_like(src)
    expected[pixels] = src[pixels]
    assert np.array_equal(dst, expected)


def _frame_reference(frames, scale, offset, force_first=True):
    """Per frame: the changed pixels (ascending) and the float frame ``frame * scale + offset``
    (float32 multiply, then add), updated only where the uint8 value changed."""
    hw, c = frames.shape[1:]
    prev = np.zeros((hw, c), np.uint8)
    dst = np.zeros((hw, c), np.float32)
    out = []
    for t, f in enumerate(frames):
        changed = np.flatnonzero(np.any(f != prev, axis=1) | (force_first and t == 0))
        prev[changed] = f[changed]
        dst[changed] = f[changed].astype(np.float32) * scale + offset
        out.append((changed.astype(np.int32), dst.copy(), prev.copy()))
    return out


@pytest.mark.parametrize("c", [3, 1, 4])
def test_frame_to_float_changed_matches_reference(c):
    rng = np.random.default_rng(30 + c)
    hw = 97
    base = rng.integers(0, 256, (hw, c), dtype=np.uint8)
    frames = []
    for t in range(6):
        f = base.copy()
        m = rng.random((hw, c)) < (0.2 if t % 2 else 0.6)
        f[m] = rng.integers(0, 256, int(m.sum()), dtype=np.uint8)
        frames.append(f)
    frames[3] = frames[2].copy()  # nothing changes
    # changes in one 64-pixel run only (the others are skipped whole), then in the last pixel
    # alone (the bytes past the last 8-byte word)
    frames.append(frames[-1].copy())
    frames[-1][70, 0] ^= 1
    frames.append(frames[-1].copy())
    frames[-1][hw - 1, c - 1] ^= 1
    frames = np.stack(frames)
    scale = rng.uniform(0.001, 0.02, c).astype(np.float32)
    offset = rng.uniform(-1, 1, c).astype(np.float32)
    expected = _frame_reference(frames, scale, offset)
    prev = np.zeros((hw, c), np.uint8)
    dst = np.zeros((hw, c), np.float32)
    pixels = np.zeros(hw, np.int32)
    for t, f in enumerate(frames):
        n = _frame_to_float_changed(f, prev, dst, scale, offset, pixels, t == 0)
        changed, d, p = expected[t]
        assert np.array_equal(pixels[:n], changed)
        assert np.array_equal(_bits(dst), _bits(d)) and np.array_equal(prev, p)
    assert _frame_to_float_changed(frames[-1], prev, dst, scale, offset, pixels, False) == 0


NUMPY_MERGES = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "maximum": np.maximum, "minimum": np.minimum}


@pytest.mark.parametrize("kind", sorted(MERGES))
@pytest.mark.parametrize("broadcast", [None, "a", "b"])
def test_merge_pixels_match_numpy_with_a_broadcast_vector(kind, broadcast):
    rng = np.random.default_rng(len(kind))
    hw, c = 40, 13
    a = rng.normal(size=(1 if broadcast == "a" else hw, c)).astype(np.float32)
    b = rng.normal(size=(1 if broadcast == "b" else hw, c)).astype(np.float32)
    pixels = np.sort(rng.choice(hw, 17, replace=False)).astype(np.int32)
    dst = np.full((hw, c), 9.0, np.float32)
    _merge_pixels(MERGES[kind], a, int(broadcast != "a"), b, int(broadcast != "b"), dst, pixels, pixels.size)
    want = np.full((hw, c), 9.0, np.float32)
    want[pixels] = NUMPY_MERGES[kind](np.broadcast_to(a, (hw, c))[pixels], np.broadcast_to(b, (hw, c))[pixels])
    assert np.array_equal(_bits(dst), _bits(want))
    _merge_pixels(MERGES[kind], a, 1, a, 1, dst, pixels, 0)  # an empty list touches nothing
    assert np.array_equal(_bits(dst), _bits(want))


def test_divide_pixels_is_keras_average_division():
    dst = np.arange(12, dtype=np.float32).reshape(4, 3)
    want = dst.copy()
    pixels = np.array([1, 3], np.int32)
    _divide_pixels(dst, 3, pixels, 2)
    want[pixels] = want[pixels] / np.float32(3)
    assert np.array_equal(_bits(dst), _bits(want))
