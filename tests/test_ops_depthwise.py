"""ops.depthwise: delta DepthwiseConv2D against naive.depthwise_conv2d over sparse streams."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import naive
from ops import depthwise
from ops.blocks import nz_scratch
from ops.geometry import conv_geometry
from ops.depthwise import depthwise_delta

TOL = dict(rtol=1e-5, atol=1e-5)
MAX_THREADS = numba.config.NUMBA_NUM_THREADS


@pytest.fixture(params=sorted({1, min(2, MAX_THREADS)}), ids=lambda n: f"{n}thr")
def threads(request):
    old = numba.get_num_threads()
    numba.set_num_threads(request.param)
    yield request.param
    numba.set_num_threads(old)


def _delta_stream(seed, t, h, w, c, frac=0.3, where=None):
    rng = np.random.default_rng(seed)
    x = np.zeros((t, h, w, c), np.float32)
    cur = rng.normal(size=(h, w, c)).astype(np.float32)
    for i in range(t):
        move = rng.random((h, w, 1)) < (1.0 if i == 0 else frac)
        if where is not None and i > 0:
            move &= where[..., None]
        # some frames move few channels of a pixel (sparse rows), others most (dense rows)
        move = move & (rng.random((h, w, c)) < [1.0, 0.04, 0.5, 0.1][i % 4])
        cur = cur + move * rng.normal(0, 0.5, (h, w, c)).astype(np.float32)
        x[i] = cur
    return naive.quantize_stream(x, np.full(c, 0.25, np.float32))


class Layer:
    def __init__(self, h, w, weights, stride, padding, bias, parallel):
        kh, kw, c, m = weights.shape
        self.h, self.w, self.weights, self.stride, self.parallel = h, w, weights, stride, parallel
        self.out_h, self.out_w, self.pt, self.pl = conv_geometry(h, w, kh, kw, stride, padding)
        self.acc = np.ascontiguousarray(np.broadcast_to(bias, (self.out_h, self.out_w, c * m)), np.float32)
        self.touched = np.zeros(self.out_h * self.out_w, np.int32)
        self.mark = np.zeros(self.out_h * self.out_w, np.uint8)
        self.active = np.zeros(h * w, np.int32)
        self.rows = np.zeros((h * w, c), np.float32)
        self.nzbuf = nz_scratch(c, parallel)

    def step(self, d):
        act, rows = naive.to_sparse(d)
        n = act.size
        self.active[:n], self.active[n:] = act, -1
        self.rows[:n], self.rows[n:] = rows, np.nan
        n_t, macs = depthwise_delta(
            self.active, n, self.rows, self.h, self.w, self.weights, self.stride, self.pt, self.pl,
            self.acc, self.touched, self.mark, parallel=self.parallel, nzbuf=self.nzbuf,
        )  # fmt: skip
        assert not self.mark.any()
        return self.touched[:n_t].copy(), macs


def _expected_macs(d, kh, kw, stride, padding, m):
    """Executed MACs: per (pixel, tap) pair, nnz*M for a sparse row, C*M for a dense one."""
    c = d.shape[-1]
    nnz = np.count_nonzero(d, axis=-1)
    per_pixel = np.where(nnz * depthwise.SPARSE_RATIO <= c, nnz, c).astype(np.float64) * (nnz > 0)
    return int(round(naive.conv2d(per_pixel[..., None], np.ones((kh, kw, 1, 1)), stride, padding).sum())) * m


def _run(h, w, k, c, m, stride, padding, seed=0, t=4, where=None):
    kh, kw = k
    rng = np.random.default_rng(seed + 50)
    weights = (rng.normal(size=(kh, kw, c, m)) / np.sqrt(kh * kw)).astype(np.float32)
    bias = rng.normal(size=c * m).astype(np.float32)
    y, d = _delta_stream(seed, t, h, w, c, where=where)
    layers = [Layer(h, w, weights, stride, padding, bias, par) for par in (False, True)]
    for i in range(t):
        want = naive.depthwise_conv2d(y[i], weights, stride, padding) + bias
        mask = np.any(d[i] != 0, axis=-1)
        reached = naive.reached_outputs(mask, kh, kw, stride, padding)
        for layer in layers:
            touched, macs = layer.step(d[i])
            np.testing.assert_allclose(layer.acc, want, **TOL, err_msg=f"parallel={layer.parallel} frame {i}")
            assert np.array_equal(touched, reached)
            assert macs == _expected_macs(d[i], kh, kw, stride, padding, m)
        np.testing.assert_allclose(layers[0].acc, layers[1].acc, **TOL)


@pytest.mark.parametrize("size", [(9, 7), (8, 10)], ids=["odd", "even"])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 5), (1, 3)], ids=lambda k: f"{k[0]}x{k[1]}")
def test_depthwise_stream_matches_dense(kernel, stride, padding, size, threads):
    _run(*size, kernel, c=37, m=1, stride=stride, padding=padding, seed=sum(kernel) + stride)


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_multiplier(m, stride, threads):
    _run(7, 8, (3, 3), c=5, m=m, stride=stride, padding="same", seed=m)
    _run(7, 8, (3, 3), c=20, m=m, stride=stride, padding="valid", seed=m + 1)


@pytest.mark.parametrize("edge", ["top", "bottom", "left", "right"])
def test_depthwise_border_deltas(edge):
    h, w = 9, 8
    where = np.zeros((h, w), bool)
    {"top": lambda: where.__setitem__(0, True), "bottom": lambda: where.__setitem__(-1, True),
     "left": lambda: where.__setitem__((slice(None), 0), True),
     "right": lambda: where.__setitem__((slice(None), -1), True)}[edge]()  # fmt: skip
    for stride in (1, 2):
        for padding in ("same", "valid"):
            _run(h, w, (3, 3), c=6, m=1, stride=stride, padding=padding, seed=7, where=where)


@pytest.mark.parametrize("parallel", [False, True])
def test_depthwise_empty_and_single_pixel(parallel):
    h, w, c = 8, 9, 4
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(3, 3, c, 2)).astype(np.float32)
    layer = Layer(h, w, weights, 2, "same", np.zeros(c * 2, np.float32), parallel)
    layer.acc[:] = rng.normal(size=layer.acc.shape)
    before = layer.acc.copy()
    n_t, macs = depthwise_delta(
        layer.active, 0, layer.rows, h, w, weights, 2, layer.pt, layer.pl, layer.acc, layer.touched, layer.mark,
        parallel=parallel, nzbuf=layer.nzbuf,
    )  # fmt: skip
    assert (n_t, macs) == (0, 0) and np.array_equal(layer.acc.view(np.uint32), before.view(np.uint32))
    for py, px in [(0, 0), (h - 1, w - 1), (3, 4)]:
        layer = Layer(h, w, weights, 2, "same", np.zeros(c * 2, np.float32), parallel)
        d = np.zeros((h, w, c), np.float32)
        d[py, px, 2] = -1.0
        mask = np.zeros((h, w), bool)
        mask[py, px] = True
        touched, _ = layer.step(d)
        assert np.array_equal(touched, naive.reached_outputs(mask, 3, 3, 2, "same"))
        np.testing.assert_allclose(layer.acc, naive.depthwise_conv2d(d, weights, 2, "same"), **TOL)


def test_depthwise_argument_validation():
    h, w, c, m = 6, 5, 3, 2
    oh, ow, pt, pl = conv_geometry(h, w, 3, 3, 1, "same")
    good = dict(
        active=np.array([0, 7], np.int32), n_active=2, rows=np.ones((2, c), np.float32), in_h=h, in_w=w,
        weights=np.ones((3, 3, c, m), np.float32), stride=1, pad_top=pt, pad_left=pl,
        acc=np.zeros((oh, ow, c * m), np.float32), touched=np.zeros(oh * ow, np.int32),
        mark=np.zeros(oh * ow, np.uint8),
    )  # fmt: skip
    depthwise_delta(**good)
    for key, val, msg in [
        ("acc", np.zeros((oh, ow, c), np.float32), "C\\*M = 6"),
        ("weights", np.ones((3, 3, c), np.float32), "4-D"),
        ("rows", np.ones((2, c + 1), np.float32), "rows must have 3 columns"),
        ("mark", np.ones(oh * ow, np.uint8), "all zero"),
        ("mark", None, "got None"),
        ("nzbuf", np.zeros((1, c + 1), np.int32), "nzbuf must have shape"),
        ("active", np.array([7, 0], np.int32), "ascending"),
        ("touched", np.zeros(oh * ow, np.int64), "dtype int32"),
        ("acc", np.zeros((oh + 2, ow, c * m), np.float32), "does not fit"),
    ]:
        with pytest.raises(ValueError, match=msg):
            depthwise_delta(**dict(good, **{key: val}))


def test_private_kernels_callable_from_njit():
    @numba.njit
    def plan(active, n, rows, in_w, wt, pt, pl, acc, touched, mark, nzbuf):
        a = depthwise._depthwise(active, n, rows, in_w, wt, 1, pt, pl, acc, touched, mark, nzbuf)
        b = depthwise._depthwise_par(active, n, rows, in_w, wt, 1, pt, pl, acc, touched, mark, nzbuf)
        return a[0] + b[0], a[1] + b[1]

    h, w, c = 5, 6, 4
    rng = np.random.default_rng(2)
    d = np.where(rng.random((h, w, c)) < 0.3, rng.normal(size=(h, w, c)), 0).astype(np.float32)
    act, r = naive.to_sparse(d)
    wt = rng.normal(size=(3, 3, c, 1)).astype(np.float32)
    oh, ow, pt, pl = conv_geometry(h, w, 3, 3, 1, "same")
    acc = np.zeros((oh, ow, c), np.float32)
    plan(act, act.size, r, w, wt, pt, pl, acc, np.zeros(oh * ow, np.int32), np.zeros(oh * ow, np.uint8), nz_scratch(c, True))
    np.testing.assert_allclose(acc, 2 * naive.depthwise_conv2d(d, wt, 1, "same"), **TOL)


@pytest.mark.parametrize("stride", [1, 2])
def test_row_split_partitions_the_work(stride):
    from ops import blocks

    h, w, c = 10, 9, 40
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(3, 3, c, 2)).astype(np.float32)
    for padding in ("same", "valid"):
        oh, ow, pt, pl = conv_geometry(h, w, 3, 3, stride, padding)
        for dens in (0.0, 0.1, 0.5, 1.0):
            d = np.where(rng.random((h, w, 1)) < dens, rng.normal(size=(h, w, c)), 0).astype(np.float32)
            d[1::3, :, 1:] = 0.0  # rows with one non-zero channel: the element-wise path
            act, rows = naive.to_sparse(d)
            nz = np.zeros(c, np.int32)
            n = act.size
            for nb in (1, 2, 3, 7):
                acc = np.zeros((oh, ow, 2 * c), np.float32)
                macs = 0
                for b in range(nb):
                    r0 = blocks._split_row(act, n, b, nb, w, pt, stride, oh)
                    r1 = blocks._split_row(act, n, b + 1, nb, w, pt, stride, oh)
                    a0, a1 = blocks._row_span(act, n, w, r0, r1, 3, stride, pt)
                    macs += depthwise._depthwise_rows_range(act, rows, w, weights, stride, pt, pl, acc, nz, a0, a1, r0, r1)
                np.testing.assert_allclose(acc, naive.depthwise_conv2d(d, weights, stride, padding), **TOL)
                assert macs == _expected_macs(d, 3, 3, stride, padding, 2)
