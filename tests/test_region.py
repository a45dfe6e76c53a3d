"""Region-weighted thresholds (ops.region, streaming.region) and per-worker load statistics."""

from __future__ import annotations

import numpy as np
import pytest

import naive
from ops.conv import conv2d_delta
from ops.pointwise import pointwise_delta
from ops.geometry import conv_geometry
from ops.depthwise import depthwise_delta
from ops.encode import _encode_threshold_pixels, empty_delta
from ops.region import _encode_threshold_pixels_scaled, encode_threshold_pixels_scaled
from streaming.region import layer_pixel_scales, motion_prior, pixel_scales, roi_prior
from streaming.workers import _blocks_to_workers, engine_worker_stats, load_stats, worker_loads


def _reference_scaled(x, theta, scale):
    """NumPy reference of the region-weighted hysteresis over a whole stream (T, H, W, C)."""
    t_len, h, w, c = x.shape
    thr = (theta[None, :] * scale[:, None]).reshape(h, w, c).astype(np.float32)  # float32 product
    r = np.zeros((h, w, c), np.float32)
    ds, refs = [], []
    for t in range(t_len):
        d = x[t] - r
        fire = np.abs(d) > thr
        ds.append(np.where(fire, d, np.float32(0)))
        r = np.where(fire, x[t], r)
        refs.append(r.copy())
    return np.stack(ds), np.stack(refs)


def _encode_stream(x, theta, scale, candidates=None):
    t_len, h, w, c = x.shape
    ref = np.zeros((h, w, c), np.float32)
    active, rows = empty_delta(h, w, c)
    ds, refs, counts = [], [], []
    allp = np.arange(h * w, dtype=np.int32)
    for t in range(t_len):
        cand = allp if candidates is None else candidates[t]
        n, nnz = encode_threshold_pixels_scaled(x[t], theta, scale, ref, cand, len(cand), active, rows)
        ds.append(naive.to_dense(active, n, rows, h, w))
        refs.append(ref.copy())
        counts.append((n, nnz))
    return np.stack(ds), np.stack(refs), counts


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def test_scaled_encoder_bit_exact_against_numpy_reference():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(0, 0.3, (7, 5, 6, 4)), axis=0).astype(np.float32)
    theta = rng.uniform(0.1, 0.6, 4).astype(np.float32)
    scale = rng.uniform(0.2, 1.5, 30).astype(np.float32)
    scale[[0, 7]] = 0.0  # threshold 0 there: every change fires
    d, refs, counts = _encode_stream(x, theta, scale)
    d_ref, refs_ref = _reference_scaled(x, theta, scale)
    np.testing.assert_array_equal(_bits(d), _bits(d_ref))
    np.testing.assert_array_equal(_bits(refs), _bits(refs_ref))
    for (n, nnz), dt in zip(counts, d_ref):
        assert nnz == np.count_nonzero(dt)
        assert n == np.count_nonzero(np.any(dt.reshape(-1, 4) != 0, axis=1))
    # a per-pixel threshold really matters: with a uniform scale the firing pattern differs
    d_uniform, _, _ = _encode_stream(x, theta, np.ones(30, np.float32))
    assert not np.array_equal(d_uniform != 0, d != 0)


def test_scale_one_equals_plain_encoder_and_candidates_restrict():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (4, 3, 4, 5)).astype(np.float32)
    theta = np.full(5, 0.5, np.float32)
    ones = np.ones(12, np.float32)
    cands = [np.arange(12, dtype=np.int32), np.array([1, 5, 6], np.int32), np.array([], np.int32), np.array([0, 11], np.int32)]
    h, w, c = 3, 4, 5
    ref_a = np.zeros((h, w, c), np.float32)
    ref_b = np.zeros((h, w, c), np.float32)
    act_a, rows_a = empty_delta(h, w, c)
    act_b, rows_b = empty_delta(h, w, c)
    for t in range(4):
        got_a = _encode_threshold_pixels_scaled(x[t], theta, ones, ref_a, cands[t], len(cands[t]), act_a, rows_a)
        got_b = _encode_threshold_pixels(x[t], theta, ref_b, cands[t], len(cands[t]), act_b, rows_b)
        assert got_a == got_b
        n = got_a[0]
        np.testing.assert_array_equal(act_a[:n], act_b[:n])
        np.testing.assert_array_equal(_bits(rows_a[:n]), _bits(rows_b[:n]))
        np.testing.assert_array_equal(_bits(ref_a), _bits(ref_b))
        assert set(act_a[:n].tolist()) <= set(cands[t].tolist())


def test_nonfinite_input_changes_nothing_and_validation():
    h, w, c = 2, 3, 2
    x = np.ones((h, w, c), np.float32)
    x[1, 2, 0] = np.nan
    theta = np.zeros(c, np.float32)
    scale = np.ones(h * w, np.float32)
    ref = np.zeros((h, w, c), np.float32)
    active, rows = empty_delta(h, w, c)
    cand = np.arange(h * w, dtype=np.int32)
    assert _encode_threshold_pixels_scaled(x, theta, scale, ref, cand, 6, active, rows) == (0, 0, 1)
    assert not ref.any()
    with pytest.raises(ValueError, match="non-finite"):
        encode_threshold_pixels_scaled(x, theta, scale, ref, cand, 6, active, rows)
    x[1, 2, 0] = 1.0
    with pytest.raises(ValueError, match="pixel_scale"):
        encode_threshold_pixels_scaled(x, theta, np.ones(5, np.float32), ref, cand, 6, active, rows)
    with pytest.raises(ValueError, match="pixel_scale"):
        encode_threshold_pixels_scaled(x, theta, -scale, ref, cand, 6, active, rows)
    with pytest.raises(ValueError, match="pixel_scale"):
        encode_threshold_pixels_scaled(x, theta, scale.astype(np.float64), ref, cand, 6, active, rows)


def test_region_fires_more_inside_the_region_on_a_uniform_change():
    """Every pixel's input changes by the same amount; the ROI's pixels fire, the background does not."""
    h, w, c = 16, 16, 4
    prior = roi_prior((64, 64), [(16, 16, 48, 40)])  # the prior at the video resolution
    scale = pixel_scales(prior, lam=3.0, shape_hw=(h, w))  # at this layer's resolution
    theta = np.full(c, 0.2, np.float32)
    rng = np.random.default_rng(0)
    base = (rng.uniform(1, 2, (h, w, c)) * rng.choice([-1, 1], (h, w, c))).astype(np.float32)  # frame 0 fires all
    x = np.stack([base + 0.06 * t for t in range(4)]).astype(np.float32)  # a uniform change, 0.18 in all
    d, _, _ = _encode_stream(x, theta, scale)
    fired = np.any(d[1:] != 0, axis=-1).sum(axis=0)  # per pixel, frames t >= 1
    inside = np.zeros((h, w), bool)
    inside[4:10, 4:12] = True  # the box scaled by 16/64
    rate_in = fired[inside].mean() / 3
    rate_out = fired[~inside].mean() / 3
    assert rate_in == 1.0 and rate_out == 0.0, (rate_in, rate_out)  # inside theta 0.05, outside 0.2
    # the same change with the plain (unscaled) thresholds fires nowhere more than anywhere else
    d_plain, _, _ = _encode_stream(x, theta, np.ones(h * w, np.float32))
    f_plain = np.any(d_plain[1:] != 0, axis=-1).sum(axis=0)
    assert f_plain[inside].mean() == pytest.approx(f_plain[~inside].mean())


def test_priors_and_scales():
    roi = roi_prior((6, 8), [(1, 2, 4, 5), (6, -3, 20, 1)], weights=[1.0, 0.5])
    assert roi.dtype == np.float32 and roi.shape == (6, 8)
    assert roi[2:5, 1:4].min() == 1.0 and roi[0, 6:].min() == 0.5 and roi.sum() == 9 * 1.0 + 2 * 0.5
    with pytest.raises(ValueError):
        roi_prior((6, 8), [(1, 2, 3)])
    prev = np.zeros((20, 20, 3), np.uint8)
    frame = prev.copy()
    frame[5:10, 5:10] = 200  # a moving object
    mp = motion_prior(frame, prev, blur=3)
    assert mp.dtype == np.float32 and mp.max() == 1.0 and mp[0, 0] == 0.0 and mp[7, 7] == 1.0
    assert not motion_prior(frame, None).any()
    noise = (prev.astype(np.int16) + np.random.default_rng(0).integers(0, 3, prev.shape)).astype(np.uint8)
    assert motion_prior(noise, prev, blur=1).max() <= 2 / 16  # the floor keeps noise small
    s = pixel_scales(roi, 3.0, (6, 8))
    assert s.shape == (48,) and s.dtype == np.float32 and s.flags.c_contiguous
    assert s.reshape(6, 8)[3, 2] == pytest.approx(0.25) and s.reshape(6, 8)[5, 7] == 1.0
    half = pixel_scales(roi_prior((8, 8), [(0, 0, 4, 8)]), 1.0, (2, 2)).reshape(2, 2)
    np.testing.assert_allclose(half, [[0.5, 1.0], [0.5, 1.0]])  # area-resized
    assert np.all(pixel_scales(roi, 0.0, (3, 3)) == 1.0)
    scales = layer_pixel_scales(roi, 1.0, {"a": (6, 8, 4), "b": (3, 4, 16), "c": (6, 8, 2)})
    assert scales["a"] is scales["c"] and scales["b"].shape == (12,)


# --- per-worker loads ---------------------------------------------------------------------------


def test_blocks_to_workers_matches_numba_static_schedule():
    np.testing.assert_array_equal(_blocks_to_workers(np.array([1, 2, 3, 4, 5, 6, 7]), 3), [6, 9, 13])
    np.testing.assert_array_equal(_blocks_to_workers(np.array([1, 2, 3, 4, 5]), 2), [6, 9])
    np.testing.assert_array_equal(_blocks_to_workers(np.array([4, 1]), 3), [4, 1, 0])


def _sparse(rng, h, w, c, p_pix, rows_only=None):
    mask = rng.random(h * w) < p_pix
    if rows_only is not None:
        mask &= np.isin(np.arange(h * w) // w, rows_only)
    active = np.flatnonzero(mask).astype(np.int32)
    rows = rng.normal(0, 1, (len(active), c)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.5] = 0.0
    rows[:, 0] = 1.0  # every active pixel has a non-zero
    return active, rows


@pytest.mark.parametrize("kind, k, stride", [("conv", 3, 1), ("conv", 3, 2), ("depthwise", 3, 2), ("pointwise", 1, 1)])
def test_worker_work_sums_to_the_kernel_macs(kind, k, stride):
    rng = np.random.default_rng(7)
    h, w, cin, cout = 12, 10, 6, 5
    active, rows = _sparse(rng, h, w, cin, 0.3)
    n = len(active)
    nnz = np.count_nonzero(rows, axis=1)
    ho, wo, pt, pl = conv_geometry(h, w, k, k, stride, "same")
    touched = np.zeros(ho * wo, np.int32)
    mark = np.zeros(ho * wo, np.uint8)
    if kind == "conv":
        acc = np.zeros((ho, wo, cout), np.float32)
        _, macs = conv2d_delta(active, n, rows, h, w, rng.normal(0, 1, (k, k, cin, cout)).astype(np.float32), stride, pt, pl, acc, touched, mark)
        per_tap = cout
    elif kind == "depthwise":
        acc = np.zeros((ho, wo, cin), np.float32)
        _, macs = depthwise_delta(active, n, rows, h, w, rng.normal(0, 1, (k, k, cin, 1)).astype(np.float32), stride, pt, pl, acc, touched, mark)
        per_tap = 1
    else:
        acc = np.zeros((h, w, cout), np.float32)
        _, macs = pointwise_delta(active, n, rows, rng.normal(0, 1, (cin, cout)).astype(np.float32), acc, np.zeros(h * w, np.int32))
        per_tap = cout
    for threads in (1, 2, 3):
        for blocks in (1, 2, 4, 7):
            loads = worker_loads(kind, active, n, nnz, threads=threads, in_w=w, out_h=ho, out_w=wo, kh=k, kw=k, stride=stride,
                                 pad_top=pt, pad_left=pl, cout=per_tap, par_blocks=blocks)  # fmt: skip
            assert loads["work"].shape == (threads,)
            if kind == "depthwise":
                assert loads["work"].sum() <= macs  # dense rows cost C per tap in the kernel
            else:
                assert loads["work"].sum() == macs, (threads, blocks)
            assert loads["nonzeros"].sum() >= nnz.sum()  # a pixel near a block edge is read by both


@pytest.mark.parametrize("stride", [1, 2])
def test_patchwise_worker_loads_sum_to_the_kernels_macs(stride):
    rng = np.random.default_rng(7 + stride)
    h, w, cin, cout, k = 13, 11, 3, 5, 3
    active, rows = _sparse(rng, h, w, cin, 0.2)
    n = len(active)
    ho, wo, pt, pl = conv_geometry(h, w, k, k, stride, "same")
    acc = np.zeros((ho, wo, cout), np.float32)
    n_t, macs = conv2d_delta(active, n, rows, h, w, rng.normal(0, 1, (k, k, cin, cout)).astype(np.float32), stride, pt, pl, acc,
                             np.zeros(ho * wo, np.int32), np.zeros(ho * wo, np.uint8), granularity="patch")  # fmt: skip
    assert macs == n_t * k * k * cin * cout
    for threads in (1, 2, 3):
        loads = worker_loads("conv", active, n, np.count_nonzero(rows, axis=1), threads=threads, in_w=w, out_h=ho, out_w=wo,
                             kh=k, kw=k, stride=stride, pad_top=pt, pad_left=pl, cout=cout, cin=cin, granularity="patch")  # fmt: skip
        assert loads["work"].sum() == macs
        assert loads["nonzeros"].sum() >= np.count_nonzero(rows)  # a pixel is read by every touched output it reaches


def test_clustered_changes_show_up_as_imbalance():
    rng = np.random.default_rng(1)
    h, w, c = 16, 16, 8
    geo = dict(in_w=w, out_h=h, out_w=w, kh=3, kw=3, stride=1, pad_top=1, pad_left=1, cout=8, par_blocks=4)
    spread, rows = _sparse(rng, h, w, c, 0.5)
    even = worker_loads("conv", spread, len(spread), np.count_nonzero(rows, axis=1), threads=4, **geo)
    assert load_stats(even["work"])["imbalance"] < 1.3
    one_row, rows1 = _sparse(rng, h, w, c, 1.0, rows_only=[7])  # a change along one image row
    skew = worker_loads("conv", one_row, len(one_row), np.count_nonzero(rows1, axis=1), threads=4, **geo)
    st = load_stats(skew["work"])
    assert st["imbalance"] > 1.9 and st["max"] == skew["work"].max()
    # Dense (one pixel): the output channels are split in blocks of 16
    dense = worker_loads("pointwise", np.array([0], np.int32), 1, np.array([10]), threads=2, cout=40, par_blocks=4)
    np.testing.assert_array_equal(dense["work"], [10 * 32, 10 * 8])  # blocks of 16, 16, 8 channels; worker 0 takes two
    stats = engine_worker_stats(
        [{"name": "a", "kind": "conv", "active": one_row, "n_active": len(one_row), "nnz": np.count_nonzero(rows1, axis=1), **geo}],
        threads=4, key="work",
    )  # fmt: skip
    assert stats[0]["name"] == "a" and stats[0]["imbalance"] == pytest.approx(st["imbalance"])
    assert load_stats([0, 0])["imbalance"] == 1.0
