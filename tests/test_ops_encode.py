"""ops.encode: the numba delta encoders against tests/naive.py (bit-exact)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import naive
from ops import encode
from ops.encode import (
    empty_delta,
    encode_quantize,
    encode_quantize_pixels,
    encode_threshold,
    encode_threshold_pixels,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stream(seed=0, t=8, shape=(6, 7, 5)):
    """Random walk with a frozen region, a repeated frame and a few large jumps."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0, 0.3, (t,) + shape), axis=0).astype(np.float32)
    x[:, 0, 0, :] = 1.25  # never changes
    x[3] = x[2]  # an exactly repeated frame
    x[5, 2, 3, :] += 10.0  # a big jump in one pixel
    return x


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _run(mode, x, param, candidates=None):
    """Encode a stream frame by frame; return per-frame dense deltas, states, counts."""
    t, h, w, c = x.shape
    state = np.zeros((h, w, c), np.float32)
    active, rows = empty_delta(h, w, c)
    ds, ys, counts, actives = [], [], [], []
    for i in range(t):
        if candidates is None:
            fn = encode_threshold if mode == "threshold" else encode_quantize
            n, nnz = fn(x[i], param, state, active, rows)
        else:
            fn = encode_threshold_pixels if mode == "threshold" else encode_quantize_pixels
            n, nnz = fn(x[i], param, state, candidates[i], len(candidates[i]), active, rows)
        ds.append(naive.to_dense(active, n, rows, h, w))
        ys.append(state.copy())
        counts.append((n, nnz))
        actives.append(active[:n].copy())
    return np.stack(ds), np.stack(ys), counts, actives


def _check_against(d_ref, y_ref, ds, ys, counts, actives):
    for t in range(d_ref.shape[0]):
        # bit-exact on the non-zero deltas; a -0.0 delta (y = -0.0 after y_prev = +0.0) is
        # no change and is not transmitted
        assert np.array_equal(ds[t], d_ref[t]), f"delta differs at frame {t}"
        nz = d_ref[t] != 0
        assert np.array_equal(_bits(ds[t][nz]), _bits(d_ref[t][nz])), f"delta bits differ at frame {t}"
        assert np.array_equal(_bits(ys[t]), _bits(y_ref[t])), f"state differs at frame {t}"
        n, nnz = counts[t]
        assert nnz == np.count_nonzero(d_ref[t])
        want_active, _ = naive.to_sparse(d_ref[t])
        assert n == want_active.size
        assert np.array_equal(actives[t], want_active)  # ascending, exactly the changed pixels


@pytest.mark.parametrize("per_channel", [True, False])
def test_threshold_matches_naive_stream(per_channel):
    x = _stream()
    c = x.shape[-1]
    theta = np.linspace(0.05, 0.6, c).astype(np.float32) if per_channel else np.full(c, 0.2, np.float32)
    y_ref, d_ref = naive.threshold_stream(x, theta)
    _check_against(d_ref, y_ref, *_run("threshold", x, theta))


@pytest.mark.parametrize("per_channel", [True, False])
def test_quantize_matches_naive_stream(per_channel):
    x = _stream(seed=1)
    c = x.shape[-1]
    step = np.array([0.1, 0.25, 1.0, 0.07, 0.5], np.float32) if per_channel else np.full(c, 0.1, np.float32)
    y_ref, d_ref = naive.quantize_stream(x, step)
    _check_against(d_ref, y_ref, *_run("quantize", x, step))


def test_quantize_rounding_ties_bit_exact():
    # exact ties k + 0.5 (positive and negative, even and odd k), ties after division by
    # a non-power-of-two step, values near 2**23 where float32 spacing is 1, and -0.0
    k = np.arange(-8, 8, dtype=np.float32)
    ties = np.concatenate([k + 0.5, -(k + 0.5), [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -0.0, 0.0]])
    big = np.float32(2**23) + np.arange(-4, 4, dtype=np.float32) * 0.5
    vals = np.concatenate([ties, big, ties * np.float32(0.1), ties * np.float32(0.3)]).astype(np.float32)
    steps = np.array([1.0, 0.5, 0.1, 0.3, 3.0], np.float32)
    x = np.empty((2, vals.size, 1, steps.size), np.float32)
    x[0] = vals[:, None, None]
    x[1] = -vals[:, None, None]
    y_ref, d_ref = naive.quantize_stream(x, steps)
    ds, ys, counts, actives = _run("quantize", x, steps)
    _check_against(d_ref, y_ref, ds, ys, counts, actives)
    # and it really is round-half-to-even
    assert np.array_equal(np.rint(np.array([0.5, 1.5, 2.5, -0.5, -2.5], np.float32)), [0, 2, 2, -0, -2])


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_all_zero_delta_frame(mode):
    h, w, c = 5, 4, 3
    rng = np.random.default_rng(2)
    frame = rng.normal(size=(h, w, c)).astype(np.float32)
    param = np.full(c, 0.1, np.float32)
    state = np.zeros((h, w, c), np.float32)
    active, rows = empty_delta(h, w, c)
    fn = encode_threshold if mode == "threshold" else encode_quantize
    fn(frame, param, state, active, rows)
    before = state.copy()
    active[:] = -7  # sentinel: must not be written when nothing fires
    n, nnz = fn(frame.copy(), param, state, active, rows)
    assert (n, nnz) == (0, 0)
    assert np.array_equal(_bits(state), _bits(before))
    assert np.all(active == -7)


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_single_changed_pixel(mode):
    h, w, c = 6, 5, 4
    rng = np.random.default_rng(3)
    x = np.repeat(rng.normal(size=(1, h, w, c)).astype(np.float32), 2, axis=0)
    x[1, 4, 2, 1] += 3.0
    param = np.full(c, 0.05, np.float32)
    ref = naive.threshold_stream if mode == "threshold" else naive.quantize_stream
    y_ref, d_ref = ref(x, param)
    ds, ys, counts, actives = _run(mode, x, param)
    _check_against(d_ref, y_ref, ds, ys, counts, actives)
    assert counts[1] == (1, 1)
    assert actives[1].tolist() == [4 * w + 2]


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_candidate_pixels_variant(mode):
    x = _stream(seed=4)
    t, h, w, c = x.shape
    param = np.full(c, 0.15, np.float32)
    ref = naive.threshold_stream if mode == "threshold" else naive.quantize_stream
    y_ref, d_ref = ref(x, param)
    rng = np.random.default_rng(5)
    # (a) candidates = every pixel whose input changed, plus random extra pixels:
    #     identical to the full encoder
    cands = []
    for i in range(t):
        changed = np.any(x[i] != (x[i - 1] if i else 0), axis=-1).ravel()
        extra = rng.random(h * w) < 0.2
        cands.append(np.flatnonzero(changed | extra).astype(np.int32))
    _check_against(d_ref, y_ref, *_run(mode, x, param, cands))
    # (b) a strict subset: only the listed pixels are examined, others keep their state
    sub = [np.flatnonzero(rng.random(h * w) < 0.5).astype(np.int32) for _ in range(t)]
    ds, ys, counts, actives = _run(mode, x, param, sub)
    state = np.zeros((h, w, c), np.float32)
    for i in range(t):
        d_exp = np.zeros((h, w, c), np.float32)
        for p in sub[i]:
            yy, xx = divmod(int(p), w)
            if mode == "threshold":  # hysteresis from the current reference
                fire = np.abs(x[i, yy, xx] - state[yy, xx]) > param
                new = np.where(fire, x[i, yy, xx], state[yy, xx])
            else:
                new = naive.quantize_stream(x[i, yy, xx][None], param)[0][0]
            d_exp[yy, xx] = new - state[yy, xx]
            state[yy, xx] = new
        assert np.array_equal(ds[i], d_exp)
        assert np.array_equal(_bits(ys[i]), _bits(state))
        assert set(actives[i].tolist()) <= set(sub[i].tolist())
    # (c) no candidates at all
    xs = x[:2].copy()
    ds, ys, counts, _ = _run(mode, xs, param, [np.zeros(0, np.int32)] * 2)
    assert counts == [(0, 0), (0, 0)] and not ys.any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [encode_threshold, encode_quantize, encode_threshold_pixels, encode_quantize_pixels])
def test_non_finite_input_raises_and_changes_nothing(bad, fn):
    h, w, c = 4, 3, 2
    rng = np.random.default_rng(6)
    x = rng.normal(size=(h, w, c)).astype(np.float32)
    param = np.full(c, 0.1, np.float32)
    state = rng.normal(size=(h, w, c)).astype(np.float32)
    active, rows = empty_delta(h, w, c)
    rows[:] = 7.0
    x[2, 1, 1] = bad
    state0 = state.copy()
    args = (x, param, state)
    if fn in (encode_threshold_pixels, encode_quantize_pixels):
        cand = np.arange(h * w, dtype=np.int32)
        args += (cand, h * w)
    with pytest.raises(ValueError, match="non-finite"):
        fn(*args, active, rows)
    assert np.array_equal(_bits(state), _bits(state0))
    assert np.all(rows == 7.0)
    if fn in (encode_threshold_pixels, encode_quantize_pixels):
        # a non-finite value outside the candidate pixels is not looked at
        cand = np.array([0, 1], np.int32)
        fn(x, param, state, cand, 2, active, rows)


def _valid_args(fn):
    h, w, c = 4, 3, 2
    x = np.ones((h, w, c), np.float32)
    param = np.full(c, 0.1, np.float32)
    state = np.zeros((h, w, c), np.float32)
    active, rows = empty_delta(h, w, c)
    if fn in (encode_threshold_pixels, encode_quantize_pixels):
        return [x, param, state, np.arange(h * w, dtype=np.int32), h * w, active, rows]
    return [x, param, state, active, rows]


@pytest.mark.parametrize("fn", [encode_threshold, encode_quantize, encode_threshold_pixels, encode_quantize_pixels])
def test_argument_validation(fn):
    fn(*_valid_args(fn))  # sanity
    pix = fn in (encode_threshold_pixels, encode_quantize_pixels)
    i_active = 5 if pix else 3
    i_rows = i_active + 1
    cases = [
        (0, lambda a: a.astype(np.float64), "dtype float32, got float64"),
        (0, lambda a: a[..., 0], "3-D"),
        (0, lambda a: np.ones((4, 6, 2), np.float32)[:, ::2], "C-contiguous"),
        (0, lambda a: np.ones((0, 3, 2), np.float32), "non-zero"),
        (0, lambda a: a.tolist(), "numpy.ndarray"),
        (1, lambda a: a[:1], r"shape \(2\)"),
        (1, lambda a: a.astype(np.float16), "dtype float32"),
        (2, lambda a: np.zeros((4, 3, 3), np.float32), r"shape \(4, 3, 2\)"),
        (2, lambda a: np.asfortranarray(np.zeros((4, 3, 2), np.float32)), "C-contiguous"),
        (i_active, lambda a: a.astype(np.int64), "dtype int32"),
        (i_active, lambda a: a[:5], r"shape \(12\)"),
        (i_rows, lambda a: a[:, :1], r"shape \(12, 2\)"),
    ]
    for idx, change, msg in cases:
        args = _valid_args(fn)
        args[idx] = change(args[idx])
        with pytest.raises(ValueError, match=msg):
            fn(*args)
    args = _valid_args(fn)
    args[1] = (np.full(2, -0.1, np.float32) if fn in (encode_threshold, encode_threshold_pixels) else np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="theta|step"):
        fn(*args)
    args = _valid_args(fn)
    args[1] = np.array([0.1, np.nan], np.float32)
    with pytest.raises(ValueError, match="theta|step"):
        fn(*args)
    args = _valid_args(fn)
    args[2] = args[2].copy()
    args[2].flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        fn(*args)
    if pix:
        for cand, n, msg in [
            (np.array([3, 1], np.int32), 2, "ascending"),
            (np.array([1, 1], np.int32), 2, "ascending"),
            (np.array([0, 12], np.int32), 2, r"\[0, 12\)"),
            (np.array([-1, 2], np.int32), 2, r"\[0, 12\)"),
            (np.array([0, 1], np.int32), 3, r"n_candidates must be in \[0, 2\]"),
            (np.array([0, 1], np.int32), 1.0, "integer"),
            (np.array([0, 1], np.int64), 2, "dtype int32"),
        ]:
            args = _valid_args(fn)
            args[3], args[4] = cand, n
            with pytest.raises(ValueError, match=msg):
                fn(*args)


def test_nonfinite_count():
    x = np.random.default_rng(8).normal(size=(5, 8, 3)).astype(np.float32)
    x[1, 2, 0], x[4, 7, 2], x[0, 1, 1] = np.nan, np.inf, -np.inf
    assert encode._nonfinite_frame(x) == 3
    assert encode._nonfinite_pixels(x, np.array([1, 10, 39], np.int32), 2) == 2
    assert encode._nonfinite_pixels(x, np.array([1, 10, 39], np.int32), 3) == 3


def test_private_kernels_callable_from_njit():
    """The engine compiles one numba function per frame plan that calls the kernels."""

    @numba.njit
    def plan(x, theta, ref, step, yp, cand, active, rows):
        n1, z1, b1 = encode._encode_threshold(x, theta, ref, active, rows)
        n2, z2, b2 = encode._encode_quantize(x, step, yp, active, rows)
        n3, z3, b3 = encode._encode_threshold_pixels(x + np.float32(1), theta, ref, cand, cand.size, active, rows)
        n4, z4, b4 = encode._encode_quantize_pixels(x, step, yp, cand, cand.size, active, rows)
        return n1 + n2 + n3 + n4, z1 + z2 + z3 + z4, b1 + b2 + b3 + b4

    h, w, c = 3, 4, 2
    x = np.random.default_rng(7).normal(size=(h, w, c)).astype(np.float32)
    active, rows = empty_delta(h, w, c)
    p = np.full(c, 0.3, np.float32)
    n, nnz, bad = plan(x, p, np.zeros_like(x), p, np.zeros_like(x), np.arange(h * w, dtype=np.int32), active, rows)
    assert bad == 0 and n > 0 and nnz > 0
    x[0, 0, 0] = np.nan
    assert plan(x, p, np.zeros_like(x), p, np.zeros_like(x), np.arange(h * w, dtype=np.int32), active, rows)[2] == 4


def test_kernels_run_without_jit():
    """Under NUMBA_DISABLE_JIT=1 the kernels are plain Python and still match naive.py."""
    script = textwrap.dedent(
        """
        import numpy as np, naive
        from ops.encode import encode_threshold, encode_quantize_pixels, empty_delta
        rng = np.random.default_rng(0)
        x = np.cumsum(rng.normal(0, 0.5, (3, 3, 4, 2)), 0).astype(np.float32)
        x[1, 0, 0, 0] = 2.5
        p = np.array([0.5, 1.0], np.float32)
        for mode, fn, ref in (("t", encode_threshold, naive.threshold_stream),
                              ("q", encode_quantize_pixels, naive.quantize_stream)):
            y, d = ref(x, p)
            st = np.zeros((3, 4, 2), np.float32)
            a, r = empty_delta(3, 4, 2)
            for t in range(3):
                args = (x[t], p, st) + ((np.arange(12, dtype=np.int32), 12) if mode == "q" else ())
                n, nnz = fn(*args, a, r)
                assert np.array_equal(naive.to_dense(a, n, r, 3, 4), d[t]) and np.array_equal(st, y[t])
        print("OK")
        """
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


# --- the (H*W, C) row kernels the engine runs (single pass, non-finite counted on the way) ---


def _rows_reference(mode, x, param, cand_lists):
    """naive.py semantics restricted to candidate pixels: only they are encoded."""
    t, h, w, c = x.shape
    state = np.zeros((h * w, c), np.float32)
    out = []
    for f in range(t):
        xf = x[f].reshape(h * w, c)
        d = np.zeros((h * w, c), np.float32)
        cand = cand_lists[f]
        if mode == "threshold":
            fire = np.abs(xf[cand] - state[cand]) > param
            new = np.where(fire, xf[cand], state[cand])
        else:
            new = (np.rint(xf[cand] / param) * param).astype(np.float32)
        d[cand] = new - state[cand]
        state[cand] = new
        out.append((d, state.copy()))
    return out


@pytest.mark.parametrize("mode", ["threshold", "quantize"])
def test_row_kernels_match_reference(mode):
    x = _stream(seed=21, t=8)
    t, h, w, c = x.shape
    param = np.array([0.2, 0.5, 0.05, 1.0, 0.3], np.float32)
    rng = np.random.default_rng(22)
    cand_lists = [np.arange(h * w, dtype=np.int32)] + [
        np.sort(rng.choice(h * w, rng.integers(0, h * w + 1), replace=False)).astype(np.int32) for _ in range(t - 1)
    ]
    expected = _rows_reference(mode, x, param, cand_lists)
    # with every pixel a candidate it is naive.py's stream exactly
    full_y, full_d = (naive.threshold_stream if mode == "threshold" else naive.quantize_stream)(x[:1], param)
    kern = encode._encode_threshold_rows if mode == "threshold" else encode._encode_quantize_rows
    state = np.zeros((h * w, c), np.float32)
    active, rows = empty_delta(h, w, c)
    for f in range(t):
        cand = cand_lists[f]
        n, nnz, bad = kern(x[f].reshape(h * w, c), param, state, cand, cand.size, active, rows)
        d, st = expected[f]
        assert bad == 0
        assert np.array_equal(_bits(naive.to_dense(active, n, rows, h, w).reshape(h * w, c)), _bits(d))
        assert np.array_equal(_bits(state), _bits(st))
        assert nnz == np.count_nonzero(d)
        assert np.array_equal(active[:n], cand[np.any(d[cand] != 0, axis=1)])  # candidate order, active only
        if f == 0:
            assert np.array_equal(_bits(naive.to_dense(active, n, rows, h, w)), _bits(full_d[0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_row_kernels_count_non_finite(bad):
    x = np.random.default_rng(23).normal(size=(12, 4)).astype(np.float32)
    x[5, 2] = bad
    x[9, 0] = bad
    p = np.full(4, 0.1, np.float32)
    active, rows = empty_delta(12, 1, 4)
    for kern in (encode._encode_threshold_rows, encode._encode_quantize_rows):
        cand = np.arange(12, dtype=np.int32)
        assert kern(x, p, np.zeros_like(x), cand, 12, active, rows)[2] == 2
        assert kern(x, p, np.zeros_like(x), cand, 6, active, rows)[2] == 1  # only candidates are looked at
        assert kern(x, p, np.zeros_like(x), np.array([0, 1, 10], np.int32), 3, active, rows)[2] == 0
