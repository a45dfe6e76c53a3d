"""ops.conv: delta Conv2D / pointwise / Dense kernels against the dense references of
tests/naive.py, accumulated frame by frame over sparse delta streams."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import naive
from ops import accumulate, blocks, config, conv, pointwise, touch
from ops.blocks import nz_scratch
from ops.conv import conv2d_delta
from ops.pointwise import dense_delta, pointwise_delta
from ops.geometry import conv_geometry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [("element", False), ("element", True), ("pixel", False), ("pixel", True), ("patch", False), ("patch", True)]
TOL = dict(rtol=1e-5, atol=1e-5)
MAX_THREADS = numba.config.NUMBA_NUM_THREADS


@pytest.fixture(params=sorted({1, min(2, MAX_THREADS)}), ids=lambda n: f"{n}thr")
def threads(request):
    old = numba.get_num_threads()
    numba.set_num_threads(request.param)
    yield request.param
    numba.set_num_threads(old)


def _delta_stream(seed, t, h, w, c, frac=0.3, theta=0.2, where=None):
    """A threshold-mode delta stream: a random walk on a random subset of pixels per
    frame (or only where ``where`` is True). Returns ``(y, d)`` of naive.threshold_stream."""
    rng = np.random.default_rng(seed)
    x = np.zeros((t, h, w, c), np.float32)
    cur = rng.normal(size=(h, w, c)).astype(np.float32)
    for i in range(t):
        move = rng.random((h, w, 1)) < (1.0 if i == 0 else frac)
        if where is not None:
            move &= where[..., None]
        cur = cur + move * rng.normal(0, 0.5, (h, w, c)).astype(np.float32)
        x[i] = cur
    theta = np.full(c, theta, np.float32)
    return naive.threshold_stream(x, theta)


class Layer:
    """Persistent buffers of one delta Conv2D (what the engine allocates per layer)."""

    def __init__(self, h, w, weights, stride, padding, bias, granularity, parallel):
        kh, kw, cin, cout = weights.shape
        self.h, self.w = h, w
        self.weights, self.stride = weights, stride
        self.out_h, self.out_w, self.pt, self.pl = conv_geometry(h, w, kh, kw, stride, padding)
        self.acc = np.ascontiguousarray(np.broadcast_to(bias, (self.out_h, self.out_w, cout)), np.float32)
        self.touched = np.zeros(self.out_h * self.out_w, np.int32)
        self.mark = np.zeros(self.out_h * self.out_w, np.uint8)
        self.nzbuf = nz_scratch(cin, parallel)
        self.gather = np.zeros((h * w, cin), np.float32)
        self.prod = np.zeros((h * w, cout), np.float32)
        self.active = np.zeros(h * w, np.int32)
        self.rows = np.zeros((h * w, cin), np.float32)
        self.granularity, self.parallel = granularity, parallel

    def step(self, d):
        """Feed one dense delta frame through the sparse buffers; return (touched, macs)."""
        act, rows = naive.to_sparse(d)
        n = act.size
        self.active[:n] = act
        self.active[n:] = -1  # garbage past n_active must never be read
        self.rows[:n] = rows
        self.rows[n:] = np.nan
        n_t, macs = conv2d_delta(
            self.active, n, self.rows, self.h, self.w, self.weights, self.stride, self.pt, self.pl,
            self.acc, self.touched, self.mark, granularity=self.granularity, parallel=self.parallel,
            nzbuf=self.nzbuf, gather=self.gather, prod=self.prod,
        )  # fmt: skip
        assert not self.mark.any(), "mark must be cleared on return"
        return self.touched[:n_t].copy(), macs


def _expected_macs(d, kh, kw, stride, padding, cin, cout):
    nnz = np.count_nonzero(d, axis=-1).astype(np.float64)[..., None]
    ones = np.ones((kh, kw, 1, 1))
    elem = naive.conv2d(nnz, ones, stride, padding).sum() * cout
    pix = naive.conv2d((nnz > 0).astype(np.float64), ones, stride, padding).sum() * cin * cout
    return int(round(elem)), int(round(pix))


def _run_stream(h, w, kh, kw, cin, cout, stride, padding, seed=0, t=4, where=None, frac=0.3):
    rng = np.random.default_rng(seed + 100)
    weights = (rng.normal(size=(kh, kw, cin, cout)) / np.sqrt(kh * kw * cin)).astype(np.float32)
    bias = rng.normal(size=cout).astype(np.float32)
    y, d = _delta_stream(seed, t, h, w, cin, frac=frac, where=where)
    layers = {v: Layer(h, w, weights, stride, padding, bias, *v) for v in VARIANTS}
    for i in range(t):
        want = naive.conv2d(y[i], weights, stride, padding) + bias
        reached = naive.reached_outputs(np.any(d[i] != 0, axis=-1), kh, kw, stride, padding)
        macs_elem, macs_pix = _expected_macs(d[i], kh, kw, stride, padding, cin, cout)
        for v, layer in layers.items():
            touched, macs = layer.step(d[i])
            np.testing.assert_allclose(layer.acc, want, **TOL, err_msg=f"{v} frame {i}")
            assert np.array_equal(touched, reached), f"{v} frame {i}: touched set"
            # patch-wise: every reached output's whole patch
            want_macs = {"element": macs_elem, "pixel": macs_pix, "patch": reached.size * kh * kw * cin * cout}[v[0]]
            assert macs == want_macs, f"{v} frame {i}: macs"
        base = layers[("element", False)].acc
        for v, layer in layers.items():
            np.testing.assert_allclose(layer.acc, base, **TOL, err_msg=f"{v} vs serial element-wise")
    return layers


@pytest.mark.parametrize("size", [(9, 7), (8, 10)], ids=["odd", "even"])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 5), (1, 3), (3, 2)], ids=lambda k: f"{k[0]}x{k[1]}")
def test_conv2d_stream_matches_dense(kernel, stride, padding, size, threads):
    _run_stream(*size, *kernel, cin=5, cout=19, stride=stride, padding=padding, seed=sum(kernel) + stride)


@pytest.mark.parametrize("cin,cout", [(1, 1), (3, 40), (33, 17)])
def test_conv2d_channel_counts(cin, cout, threads):
    # Cin below/above the 4-way unroll, Cout below/above/not a multiple of CHANNEL_BLOCK
    _run_stream(7, 6, 3, 3, cin, cout, 1, "same", seed=cin)
    _run_stream(7, 6, 3, 3, cin, cout, 2, "same", seed=cin + 1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("edge", ["top", "bottom", "left", "right", "corners"])
def test_conv2d_border_deltas(edge, stride):
    h, w = 9, 8
    where = np.zeros((h, w), bool)
    if edge == "top":
        where[0] = True
    elif edge == "bottom":
        where[-1] = True
    elif edge == "left":
        where[:, 0] = True
    elif edge == "right":
        where[:, -1] = True
    else:
        where[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    for padding in ("same", "valid"):
        # first frame: a full keyframe, then changes only on the chosen border
        _run_stream(h, w, 3, 3, 4, 6, stride, padding, seed=3, where=where, frac=1.0)
        _run_stream(h, w, 5, 5, 4, 6, stride, padding, seed=4, where=where, frac=1.0)


@pytest.mark.parametrize("granularity,parallel", VARIANTS)
def test_conv2d_empty_delta(granularity, parallel):
    h, w, cin, cout = 6, 5, 3, 4
    rng = np.random.default_rng(8)
    weights = rng.normal(size=(3, 3, cin, cout)).astype(np.float32)
    layer = Layer(h, w, weights, 2, "same", rng.normal(size=cout).astype(np.float32), granularity, parallel)
    layer.acc[:] = rng.normal(size=layer.acc.shape)
    before = layer.acc.copy()
    layer.touched[:] = -5
    n_t, macs = conv2d_delta(
        layer.active, 0, layer.rows, h, w, weights, 2, layer.pt, layer.pl, layer.acc, layer.touched, layer.mark,
        granularity=granularity, parallel=parallel, nzbuf=layer.nzbuf, gather=layer.gather, prod=layer.prod,
    )  # fmt: skip
    assert (n_t, macs) == (0, 0)
    assert np.array_equal(layer.acc.view(np.uint32), before.view(np.uint32))
    assert np.all(layer.touched == -5) and not layer.mark.any()


@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "same"), (1, "valid"), (2, "valid")])
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 3)], ids=lambda k: f"{k[0]}x{k[1]}")
def test_conv2d_single_pixel_touches_its_receptive_field(kernel, stride, padding):
    h, w, cin, cout = 9, 8, 3, 5
    kh, kw = kernel
    rng = np.random.default_rng(9)
    weights = rng.normal(size=(kh, kw, cin, cout)).astype(np.float32)
    for py, px in [(0, 0), (h - 1, w - 1), (4, 3), (0, w - 1), (h - 1, 0), (5, 4)]:
        d = np.zeros((h, w, cin), np.float32)
        d[py, px, 1] = 1.5
        mask = np.zeros((h, w), bool)
        mask[py, px] = True
        reached = naive.reached_outputs(mask, kh, kw, stride, padding)
        want = naive.conv2d(d, weights, stride, padding)
        for v in VARIANTS:
            layer = Layer(h, w, weights, stride, padding, np.zeros(cout, np.float32), *v)
            touched, macs = layer.step(d)
            assert np.array_equal(touched, reached), (v, py, px)
            np.testing.assert_allclose(layer.acc, want, **TOL)
            # the outputs outside the receptive field were not written at all
            untouched = np.ones(layer.out_h * layer.out_w, bool)
            untouched[reached] = False
            assert not layer.acc.reshape(-1, cout)[untouched].any()
            per_output = {"element": 1, "pixel": cin, "patch": kh * kw * cin}[v[0]]  # patch: the whole patch
            assert macs == reached.size * per_output * cout


def test_touched_list_sorted_on_large_sparse_spans():
    # few touched outputs spread over a big image: the heap-sort path of _finish_touched
    h, w = 64, 64
    d = np.zeros((h, w, 2), np.float32)
    d[[60, 3, 40, 1], [2, 60, 33, 7], 0] = 1.0
    weights = np.ones((3, 3, 2, 3), np.float32)
    for v in VARIANTS:
        layer = Layer(h, w, weights, 1, "same", np.zeros(3, np.float32), *v)
        touched, _ = layer.step(d)
        assert np.array_equal(touched, naive.reached_outputs(np.any(d != 0, -1), 3, 3, 1, "same"))


def test_heapsort():
    rng = np.random.default_rng(10)
    for n in [0, 1, 2, 3, 10, 257]:
        a = rng.integers(0, 1000, n + 5).astype(np.int32)
        b = a.copy()
        touch._heapsort(b, n)
        assert np.array_equal(b[:n], np.sort(a[:n])) and np.array_equal(b[n:], a[n:])


def test_matmul_blas_and_loop_agree():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(13, 7)).astype(np.float32)
    b = rng.normal(size=(7, 21)).astype(np.float32)
    o1 = np.zeros((13, 21), np.float32)
    o2 = np.full((13, 21), 5.0, np.float32)
    accumulate._matmul_loop(a, b, o1)
    accumulate._matmul_blas(a, b, o2)
    np.testing.assert_allclose(o1, a.astype(np.float64) @ b, **TOL)
    np.testing.assert_allclose(o2, o1, **TOL)


# --------------------------------------------------------------------------------------
# pointwise / Dense
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,cin,cout", [(7, 6, 5, 19), (4, 9, 33, 40), (5, 5, 1, 3)])
def test_pointwise_stream_matches_dense(h, w, cin, cout, threads):
    rng = np.random.default_rng(cin)
    weights = (rng.normal(size=(cin, cout)) / np.sqrt(cin)).astype(np.float32)
    bias = rng.normal(size=cout).astype(np.float32)
    y, d = _delta_stream(cin, 5, h, w, cin)
    accs = {}
    for v in VARIANTS:
        acc = np.ascontiguousarray(np.broadcast_to(bias, (h, w, cout)), np.float32)
        touched = np.zeros(h * w, np.int32)
        active = np.full(h * w, -1, np.int32)
        rows = np.full((h * w, cin), np.nan, np.float32)
        prod = np.zeros((h * w, cout), np.float32)
        for i in range(d.shape[0]):
            act, r = naive.to_sparse(d[i])
            n = act.size
            active[:n], rows[:n] = act, r
            n_t, macs = pointwise_delta(
                active, n, rows, weights, acc, touched, granularity=v[0], parallel=v[1], prod=prod,
                nzbuf=nz_scratch(cin, v[1]),
            )  # fmt: skip
            want = naive.conv2d(y[i], weights[None, None]) + bias
            np.testing.assert_allclose(acc, want, **TOL, err_msg=str(v))
            assert n_t == n and np.array_equal(touched[:n], act)
            assert macs == (np.count_nonzero(d[i]) * cout if v[0] == "element" else n * cin * cout)
        accs[v] = acc
    for v in VARIANTS:
        np.testing.assert_allclose(accs[v], accs[("element", False)], **TOL)


@pytest.mark.parametrize("granularity,parallel", VARIANTS)
def test_dense_layer(granularity, parallel, threads):
    cin, cout = 37, 50
    rng = np.random.default_rng(12)
    weights = (rng.normal(size=(cin, cout)) / np.sqrt(cin)).astype(np.float32)
    y, d = naive.quantize_stream(np.cumsum(rng.normal(size=(6, 1, 1, cin)), 0).astype(np.float32), np.full(cin, 0.5, np.float32))
    d[3] = 0.0
    y[3] = y[2]
    d[4] = y[4] - y[3]
    acc = np.zeros((1, 1, cout), np.float32)
    touched = np.zeros(1, np.int32)
    active, rows, prod = np.zeros(1, np.int32), np.zeros((1, cin), np.float32), np.zeros((1, cout), np.float32)
    for i in range(6):
        n = int(np.any(d[i] != 0))
        rows[0] = d[i, 0, 0]
        n_t, macs = dense_delta(active, n, rows, weights, acc, touched, granularity=granularity, parallel=parallel, prod=prod)
        assert n_t == n
        np.testing.assert_allclose(acc[0, 0], y[i, 0, 0].astype(np.float64) @ weights, **TOL)
    with pytest.raises(ValueError, match=r"\(1, 1, Cout\)"):
        dense_delta(active, 0, rows, weights, np.zeros((2, 1, cout), np.float32), touched)


# --------------------------------------------------------------------------------------
# validation, compiled callers, no-JIT mode
# --------------------------------------------------------------------------------------


def _conv_args():
    h, w, cin, cout = 6, 5, 3, 4
    oh, ow, pt, pl = conv_geometry(h, w, 3, 3, 1, "same")
    return dict(
        active=np.array([0, 7, 29] + [0] * 27, np.int32), n_active=3, rows=np.ones((h * w, cin), np.float32),
        in_h=h, in_w=w, weights=np.ones((3, 3, cin, cout), np.float32), stride=1, pad_top=pt, pad_left=pl,
        acc=np.zeros((oh, ow, cout), np.float32), touched=np.zeros(oh * ow, np.int32), mark=np.zeros(oh * ow, np.uint8),
    )  # fmt: skip


def test_conv2d_argument_validation():
    conv2d_delta(**_conv_args())
    cases = [
        ("weights", lambda a: a.astype(np.float64), "weights must have dtype float32"),
        ("weights", lambda a: a[0], "weights must be 4-D"),
        ("weights", lambda a: np.ones((3, 3, 4, 3), np.float32)[:, :, ::2], "weights must be C-contiguous"),
        ("rows", lambda a: np.ones((30, 2), np.float32), "rows must have 3 columns"),
        ("rows", lambda a: np.asfortranarray(a), "rows must be C-contiguous"),
        ("active", lambda a: a.astype(np.int64), "active must have dtype int32"),
        ("active", lambda a: np.array([7, 0, 29], np.int32), "ascending"),
        ("active", lambda a: np.array([0, 7, 30], np.int32), r"\[0, 30\)"),
        ("n_active", lambda a: 31, r"n_active must be in \[0, 30\]"),
        ("n_active", lambda a: -1, "n_active"),
        ("acc", lambda a: np.zeros((6, 5, 5), np.float32), "acc must have 4 channels"),
        ("acc", lambda a: np.zeros((8, 5, 4), np.float32), "does not fit"),
        ("acc", lambda a: a.astype(np.float64), "acc must have dtype float32"),
        ("touched", lambda a: a[:10], r"touched must have shape \(30\)"),
        ("mark", lambda a: np.ones_like(a), "all zero on entry"),
        ("mark", lambda a: a.astype(bool), "mark must have dtype uint8"),
        ("mark", lambda a: None, "got None"),
        ("stride", lambda a: 0, "stride must be an integer >= 1"),
        ("pad_top", lambda a: 3, "padding must be smaller than the kernel"),
        ("in_w", lambda a: 2.0, "in_w must be an integer"),
    ]
    for key, change, msg in cases:
        args = _conv_args()
        args[key] = change(args[key])
        with pytest.raises(ValueError, match=msg):
            conv2d_delta(**args)
    with pytest.raises(ValueError, match="granularity"):
        conv2d_delta(**_conv_args(), granularity="channel")
    with pytest.raises(ValueError, match=r"gather must have shape \(>= 3, 3\)"):
        conv2d_delta(**_conv_args(), granularity="pixel", gather=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"nzbuf must have shape"):
        conv2d_delta(**_conv_args(), nzbuf=np.zeros((1, 2), np.int32))
    with pytest.raises(ValueError, match="padding must be"):
        conv_geometry(6, 5, 3, 3, 1, "full")
    with pytest.raises(ValueError, match="valid padding needs"):
        conv_geometry(2, 5, 3, 3, 1, "valid")


def test_conv_geometry_matches_naive_same_padding():
    for size in range(1, 12):
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                oh, ow, pt, pl = conv_geometry(size, size, k, k, s, "same")
                assert (pt, oh) == (naive.same_padding(size, k, s)[0], -(-size // s))
                x = np.zeros((size, size, 1))
                assert naive.conv2d(x, np.ones((k, k, 1, 1)), s, "same").shape[:2] == (oh, ow)


def test_pointwise_argument_validation():
    h, w, cin, cout = 3, 4, 2, 5
    good = dict(
        active=np.array([1, 5], np.int32), n_active=2, rows=np.ones((2, cin), np.float32),
        weights=np.ones((cin, cout), np.float32), acc=np.zeros((h, w, cout), np.float32),
        touched=np.zeros(h * w, np.int32),
    )  # fmt: skip
    pointwise_delta(**good)
    for key, val, msg in [
        ("weights", np.ones((1, 1, cin, cout), np.float32), "weights must be 2-D"),
        ("acc", np.zeros((h, w, cout + 1), np.float32), "acc must have 5 channels"),
        ("rows", np.ones((2, cin + 1), np.float32), "rows must have 2 columns"),
        ("touched", np.zeros(h * w - 1, np.int32), "touched must have shape"),
        ("n_active", 3, "n_active"),
    ]:
        args = dict(good, **{key: val})
        with pytest.raises(ValueError, match=msg):
            pointwise_delta(**args)
    with pytest.raises(ValueError, match=r"prod must have shape \(>= 2, 5\)"):
        pointwise_delta(**good, granularity="pixel", prod=np.zeros((1, cout), np.float32))


def test_private_kernels_callable_from_njit():
    """A compiled per-frame plan calls every MAC kernel (serial and parallel) in one
    numba function."""

    @numba.njit
    def plan(active, n, rows, in_w, w4, w2, pt, pl, acc, acc_pw, touched, touched_pw, mark, nzbuf, gather, prod):
        total = 0
        for k in range(2):
            r = conv._conv2d_elem(active, n, rows, in_w, w4, 1, pt, pl, acc, touched, mark, nzbuf)
            total += r[0] + r[1]
            r = conv._conv2d_elem_par(active, n, rows, in_w, w4, 1, pt, pl, acc, touched, mark, nzbuf)
            total += r[0] + r[1]
            r = conv._conv2d_pix(active, n, rows, in_w, w4, 1, pt, pl, acc, touched, mark, gather, prod)
            total += r[0] + r[1]
            r = conv._conv2d_pix_par(active, n, rows, in_w, w4, 1, pt, pl, acc, touched, mark, gather, prod)
            total += r[0] + r[1]
            for f in range(1):
                r = pointwise._pointwise_elem(active, n, rows, w2, acc_pw, touched_pw, nzbuf)
                total += r[1]
                r = pointwise._pointwise_elem_par(active, n, rows, w2, acc_pw, touched_pw, nzbuf)
                total += r[1]
                r = pointwise._pointwise_pix(active, n, rows, w2, acc_pw, touched_pw, prod)
                total += r[1]
                r = pointwise._pointwise_pix_par(active, n, rows, w2, acc_pw, touched_pw, prod)
                total += r[1]
        return total

    h, w, cin, cout = 5, 6, 3, 4
    rng = np.random.default_rng(13)
    d = np.where(rng.random((h, w, cin)) < 0.3, rng.normal(size=(h, w, cin)), 0).astype(np.float32)
    act, r = naive.to_sparse(d)
    active = np.zeros(h * w, np.int32)
    rows = np.zeros((h * w, cin), np.float32)
    active[: act.size], rows[: act.size] = act, r
    w4 = rng.normal(size=(3, 3, cin, cout)).astype(np.float32)
    w2 = rng.normal(size=(cin, cout)).astype(np.float32)
    oh, ow, pt, pl = conv_geometry(h, w, 3, 3, 1, "same")
    acc = np.zeros((oh, ow, cout), np.float32)
    acc_pw = np.zeros((h, w, cout), np.float32)
    plan(
        active, act.size, rows, w, w4, w2, pt, pl, acc, acc_pw, np.zeros(oh * ow, np.int32), np.zeros(h * w, np.int32),
        np.zeros(oh * ow, np.uint8), nz_scratch(cin, True), np.zeros((h * w, cin), np.float32),
        np.zeros((h * w, cout), np.float32),
    )  # fmt: skip
    np.testing.assert_allclose(acc, 8 * naive.conv2d(d, w4, 1, "same"), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(acc_pw, 8 * d.astype(np.float64) @ w2, rtol=1e-4, atol=1e-4)


def test_config_is_shared():
    assert config.JIT["error_model"] == "numpy"
    assert config.JIT_EXACT["fastmath"] is False
    assert set(config.JIT_MAC["fastmath"] or ()) <= {"contract", "reassoc", "nsz"}
    assert config.JIT_PAR["parallel"] == config.PARALLEL


def test_kernels_run_without_jit():
    """Under NUMBA_DISABLE_JIT=1 the MAC kernels are plain Python and match naive.py."""
    script = textwrap.dedent(
        """
        import numpy as np, naive
        from ops.conv import conv2d_delta
        from ops.pointwise import pointwise_delta
        from ops.geometry import conv_geometry
        from ops.depthwise import depthwise_delta
        rng = np.random.default_rng(0)
        h, w, cin, cout = 5, 4, 2, 3
        d = np.where(rng.random((h, w, cin)) < 0.4, rng.normal(size=(h, w, cin)), 0).astype(np.float32)
        act, rows = naive.to_sparse(d)
        wc = rng.normal(size=(3, 3, cin, cout)).astype(np.float32)
        wd = rng.normal(size=(3, 3, cin, 2)).astype(np.float32)
        oh, ow, pt, pl = conv_geometry(h, w, 3, 3, 2, "same")
        for gran in ("element", "pixel"):
            for par in (False, True):
                acc = np.zeros((oh, ow, cout), np.float32)
                t = np.zeros(oh * ow, np.int32); m = np.zeros(oh * ow, np.uint8)
                conv2d_delta(act, act.size, rows, h, w, wc, 2, pt, pl, acc, t, m, granularity=gran, parallel=par)
                assert np.allclose(acc, naive.conv2d(d, wc, 2, "same"), atol=1e-5)
                acc = np.zeros((h, w, cout), np.float32)
                pointwise_delta(act, act.size, rows, wc[1, 1], acc, np.zeros(h * w, np.int32), granularity=gran, parallel=par)
                assert np.allclose(acc, d @ wc[1, 1], atol=1e-5)
            acc = np.zeros((oh, ow, 2 * cin), np.float32)
            depthwise_delta(act, act.size, rows, h, w, wd, 2, pt, pl, acc, t, m, parallel=par)
            assert np.allclose(acc, naive.depthwise_conv2d(d, wd, 2, "same"), atol=1e-5)
        print("OK")
        """
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 1)], ids=lambda k: f"{k[0]}x{k[1]}")
def test_row_split_partitions_the_work(kernel, stride):
    """The parallel kernels' output-row split (any number of blocks, run one after the
    other here) covers every (pixel, tap) pair exactly once."""
    h, w, cin, cout = 11, 9, 6, 20
    kh, kw = kernel
    rng = np.random.default_rng(14)
    weights = rng.normal(size=(kh, kw, cin, cout)).astype(np.float32)
    for padding in ("same", "valid"):
        oh, ow, pt, pl = conv_geometry(h, w, kh, kw, stride, padding)
        for dens in (0.0, 0.05, 0.3, 1.0):
            d = np.where(rng.random((h, w, cin)) < dens, rng.normal(size=(h, w, cin)), 0).astype(np.float32)
            act, rows = naive.to_sparse(d)
            n = act.size
            want = naive.conv2d(d, weights, stride, padding)
            nz = np.zeros(cin, np.int32)
            for nb in (1, 2, 3, 5, 16):
                acc = np.zeros((oh, ow, cout), np.float32)
                macs = 0
                for b in range(nb):
                    r0 = blocks._split_row(act, n, b, nb, w, pt, stride, oh)
                    r1 = blocks._split_row(act, n, b + 1, nb, w, pt, stride, oh)
                    assert 0 <= r0 <= r1 <= oh
                    a0, a1 = blocks._row_span(act, n, w, r0, r1, kh, stride, pt)
                    macs += conv._conv2d_elem_range(act, rows, w, weights, stride, pt, pl, acc, nz, a0, a1, r0, r1)
                np.testing.assert_allclose(acc, want, **TOL, err_msg=f"{padding} dens={dens} nb={nb}")
                assert macs == _expected_macs(d, kh, kw, stride, padding, cin, cout)[0]
