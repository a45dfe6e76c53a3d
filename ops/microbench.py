"""Micro-benchmark of the delta MAC kernels: ``python -m ops.microbench``.

Times, after warm-up, one frame's delta accumulation with the element-wise and
pixel-wise kernels against a dense NumPy float32 layer (what a frame-by-frame runtime
would do), for

* a pointwise layer 56x56x24 -> 144,
* a 3x3 Conv2D 28x28x64 -> 64 (stride 1, same),
* a 3x3 DepthwiseConv2D 56x56x144 (stride 1, same; one kernel, listed under "elem"),

plus the encoders (full frame and a 10 % candidate list) against the NumPy expression,
at element densities 1, 5, 10, 25, 50 %, with two delta structures:

* ``pixel``: whole pixels change (every channel of an active pixel is non-zero;
  the fraction of active pixels is the density) -- the pixel-wise kernels' best case;
* ``elem``: independent random elements (almost every pixel is active at >= 10 %).

Each thread count runs in fresh subprocesses: the dense NumPy baseline with
``OPENBLAS_NUM_THREADS`` = the thread count, the delta kernels (serial kernels at 1
thread, the ``*_par`` kernels with ``NUMBA_NUM_THREADS`` = the count otherwise) with
single-threaded BLAS (numba's OpenMP workers and OpenBLAS's threads competing for the
same cores stall for milliseconds). Times are the 20th percentile of repeated calls on
the same delta, in microseconds per frame; calls slower than ``3 * p20 + 1 ms`` (a
thread that lost its core) are counted and reported under the table. Pin the process
(``taskset -c 0,1``) on a bigger machine to emulate a 2-core one.

Options: ``--threads 1 2`` (default), ``--quick`` (densities 1 % and 25 % only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DENSITIES = (0.01, 0.05, 0.10, 0.25, 0.50)


#: [stalled calls, timed calls] of this process (see ``_time``)
_STALLS = [0, 0]


def _time(fn, min_time=0.15, max_reps=2000):
    """20th percentile of the wall time of ``fn()`` in microseconds.

    A low percentile rather than the median: on a shared machine a call now and then
    loses the CPU. Calls slower than ``3 * p20 + 1 ms`` are counted as stalls.
    """
    import numpy as np

    fn()  # warm (compilation happened in warmup, this warms caches)
    times = []
    t_start = time.perf_counter()
    while len(times) < 7 or (time.perf_counter() - t_start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    p20 = float(np.percentile(times, 20))
    _STALLS[0] += int(np.sum(np.asarray(times) > 3 * p20 + 1e-3))
    _STALLS[1] += len(times)
    return p20 * 1e6


def _make_delta(rng, h, w, c, density, structure):
    import numpy as np

    if structure == "pixel":
        n = max(1, int(round(density * h * w)))
        pix = np.sort(rng.choice(h * w, n, replace=False)).astype(np.int32)
        d = np.zeros((h * w, c), np.float32)
        d[pix] = rng.normal(size=(n, c)).astype(np.float32)
    else:
        d = np.where(rng.random((h * w, c)) < density, rng.normal(size=(h * w, c)), 0).astype(np.float32)
    active = np.flatnonzero(np.any(d != 0, axis=1)).astype(np.int32)
    act_buf = np.zeros(h * w, np.int32)
    act_buf[: active.size] = active
    rows = np.zeros((h * w, c), np.float32)
    rows[: active.size] = d[active]
    return act_buf, int(active.size), rows, d.reshape(h, w, c)


def _dense_conv_f32(x, w, stride, pad_top, pad_left, out_h, out_w):
    import numpy as np

    kh, kw, cin, cout = w.shape
    pb = max((out_h - 1) * stride + kh - x.shape[0] - pad_top, 0)
    pr = max((out_w - 1) * stride + kw - x.shape[1] - pad_left, 0)
    xp = np.pad(x, ((pad_top, pb), (pad_left, pr), (0, 0)))
    out = np.zeros((out_h, out_w, cout), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[ky : ky + stride * (out_h - 1) + 1 : stride, kx : kx + stride * (out_w - 1) + 1 : stride]
            out += (np.ascontiguousarray(patch).reshape(-1, cin) @ w[ky, kx]).reshape(out_h, out_w, cout)
    return out


def _dense_depthwise_f32(x, w, pad_top, pad_left):
    import numpy as np

    kh, kw, c, _ = w.shape
    h, wd, _ = x.shape
    xp = np.pad(x, ((pad_top, kh - 1 - pad_top), (pad_left, kw - 1 - pad_left), (0, 0)))
    out = np.zeros((h, wd, c), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            out += xp[ky : ky + h, kx : kx + wd] * w[ky, kx, :, 0]
    return out


def _bench(threads, densities, min_time, what):
    import numba
    import numpy as np

    import ops
    from ops import conv, depthwise, pointwise
    from ops.geometry import conv_geometry

    if what == "delta":
        ops.warmup()
    numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    par = threads > 1
    results = []
    nan = float("nan")

    def timed(fn, kind):
        return _time(fn, min_time) if kind == what else nan

    # pointwise 56x56x24 -> 144
    h, w, cin, cout = 56, 56, 24, 144
    wt = rng.normal(size=(cin, cout)).astype(np.float32)
    acc = np.zeros((h, w, cout), np.float32)
    touched = np.zeros(h * w, np.int32)
    prod = np.zeros((h * w, cout), np.float32)
    x_dense = rng.normal(size=(h, w, cin)).astype(np.float32)
    t_dense = timed(lambda: x_dense.reshape(-1, cin) @ wt, "dense")
    nzbuf = np.zeros((threads, cin), np.int32)
    pe = pointwise._pointwise_elem_par if par else pointwise._pointwise_elem
    pp = pointwise._pointwise_pix_par if par else pointwise._pointwise_pix
    for structure in ("pixel", "elem"):
        for dens in densities:
            active, n, rows, _ = _make_delta(rng, h, w, cin, dens, structure)
            te = timed(lambda: pe(active, n, rows, wt, acc, touched, nzbuf), "delta")
            tp = timed(lambda: pp(active, n, rows, wt, acc, touched, prod), "delta")
            results.append(("pointwise 56x56x24->144", structure, dens, n / (h * w), te, tp, t_dense))

    # conv 3x3 28x28x64 -> 64 same
    h, w, cin, cout = 28, 28, 64, 64
    wt = rng.normal(size=(3, 3, cin, cout)).astype(np.float32)
    out_h, out_w, pt, pl = conv_geometry(h, w, 3, 3, 1, "same")
    acc = np.zeros((out_h, out_w, cout), np.float32)
    touched = np.zeros(out_h * out_w, np.int32)
    mark = np.zeros(out_h * out_w, np.uint8)
    gather = np.zeros((h * w, cin), np.float32)
    prod = np.zeros((h * w, cout), np.float32)
    x_dense = rng.normal(size=(h, w, cin)).astype(np.float32)
    t_dense = timed(lambda: _dense_conv_f32(x_dense, wt, 1, pt, pl, out_h, out_w), "dense")
    nzbuf = np.zeros((threads, cin), np.int32)
    ce = conv._conv2d_elem_par if par else conv._conv2d_elem
    cp = conv._conv2d_pix_par if par else conv._conv2d_pix
    for structure in ("pixel", "elem"):
        for dens in densities:
            active, n, rows, _ = _make_delta(rng, h, w, cin, dens, structure)
            te = timed(lambda: ce(active, n, rows, w, wt, 1, pt, pl, acc, touched, mark, nzbuf), "delta")
            tp = timed(lambda: cp(active, n, rows, w, wt, 1, pt, pl, acc, touched, mark, gather, prod), "delta")
            results.append(("conv3x3 28x28x64->64", structure, dens, n / (h * w), te, tp, t_dense))

    # depthwise 3x3 56x56x144
    h, w, c = 56, 56, 144
    wt = rng.normal(size=(3, 3, c, 1)).astype(np.float32)
    out_h, out_w, pt, pl = conv_geometry(h, w, 3, 3, 1, "same")
    acc = np.zeros((out_h, out_w, c), np.float32)
    touched = np.zeros(out_h * out_w, np.int32)
    mark = np.zeros(out_h * out_w, np.uint8)
    x_dense = rng.normal(size=(h, w, c)).astype(np.float32)
    t_dense = timed(lambda: _dense_depthwise_f32(x_dense, wt, pt, pl), "dense")
    nzbuf = np.zeros((threads, c), np.int32)
    dk = depthwise._depthwise_par if par else depthwise._depthwise
    for structure in ("pixel", "elem"):
        for dens in densities:
            active, n, rows, _ = _make_delta(rng, h, w, c, dens, structure)
            te = timed(lambda: dk(active, n, rows, w, wt, 1, pt, pl, acc, touched, mark, nzbuf), "delta")
            results.append(("depthwise3x3 56x56x144", structure, dens, n / (h * w), te, nan, t_dense))

    # encoders (serial), full frame and a 10 % candidate list; "elem" column = threshold,
    # "pix" column = quantize, "dense" = NumPy float32 x/step, rint, *step, x - y_prev
    from ops import encode

    for h, w, c in ((56, 56, 24), (56, 56, 144)):
        x0 = rng.normal(size=(h, w, c)).astype(np.float32)
        x1 = x0 + np.where(rng.random((h, w, 1)) < 0.1, 1.0, 0.0).astype(np.float32)
        param = np.full(c, 0.5, np.float32)
        active, rows = encode.empty_delta(h, w, c)
        cand = np.flatnonzero(rng.random(h * w) < 0.1).astype(np.int32)
        frames = [x0, x1]

        def run(kern, state, *cands):
            frames.reverse()
            return kern(frames[0], param, state, *cands, active, rows)

        for name, kt, kq, cands in (
            ("encode all", encode._encode_threshold, encode._encode_quantize, ()),
            ("encode 10% cand.", encode._encode_threshold_pixels, encode._encode_quantize_pixels, (cand, cand.size)),
        ):
            st_t = np.zeros((h, w, c), np.float32)
            st_q = np.zeros((h, w, c), np.float32)
            te = timed(lambda: run(kt, st_t, *cands), "delta")
            tq = timed(lambda: run(kq, st_q, *cands), "delta")
            td = timed(lambda: np.rint(x1 / param) * param - x0, "dense")
            results.append((f"{name} {h}x{w}x{c}", "-", nan, nan, te, tq, td))
    return results


def _print_table(all_results):
    print(
        "times in microseconds per frame (20th percentile); elem/pix = element-/pixel-wise delta kernel, "
        "dense = NumPy float32 dense layer; 'pix act' = fraction of active pixels;\n"
        "encoder rows: elem = threshold, pix = quantize, dense = NumPy rint(x/step)*step - y_prev"
    )
    header = f"{'layer':<28}{'struct':<7}{'dens':>6}{'pix act':>8}"
    for t in sorted(all_results):
        header += f"{'elem@' + str(t):>10}{'pix@' + str(t):>10}{'dense@' + str(t):>10}"
    print(header)
    print("-" * len(header))
    keys = [r[:3] for r in next(iter(all_results.values()))]
    for i, key in enumerate(keys):
        row0 = next(iter(all_results.values()))[i]
        if key[2] == key[2]:
            line = f"{key[0]:<28}{key[1]:<7}{key[2] * 100:>5.0f}%{row0[3] * 100:>7.0f}%"
        else:
            line = f"{key[0]:<28}{key[1]:<7}{'-':>6}{'-':>8}"
        for t in sorted(all_results):
            r = all_results[t][i]
            pix = "-" if r[5] != r[5] else f"{r[5]:.0f}"
            line += f"{r[4]:>10.0f}{pix:>10}{r[6]:>10.0f}"
        print(line)


def _child(threads, what, quick):
    """Run one measurement in a fresh process with the thread counts fixed by env vars."""
    # the delta kernels run with single-threaded BLAS: numba's OpenMP workers and
    # OpenBLAS's own threads fighting for the same cores stall for milliseconds
    blas = threads if what == "dense" else 1
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas))
    if threads > 1:  # (the serial kernels do not care; a non-default count disables the cache)
        env["NUMBA_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "ops.microbench", "--child", str(threads), "--what", what]
    out = subprocess.run(cmd + (["--quick"] if quick else []), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"benchmark child ({what}, {threads} thread(s)) failed")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return [tuple(r) for r in res["rows"]], res["stalls"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m ops.microbench", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="densities 1%% and 25%% only, shorter timing")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--what", choices=("dense", "delta"), default="delta", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    densities = (0.01, 0.25) if args.quick else DENSITIES
    min_time = 0.05 if args.quick else 0.15
    if args.child is not None:
        rows = _bench(args.child, densities, min_time, args.what)
        print(json.dumps({"rows": rows, "stalls": _STALLS}))
        return
    all_results = {}
    stalls = {}
    for t in args.threads:
        delta, s_delta = _child(t, "delta", args.quick)
        dense, s_dense = _child(t, "dense", args.quick)
        all_results[t] = [d[:6] + (n[6],) for d, n in zip(delta, dense)]
        stalls[t] = (s_delta, s_dense)
    _print_table(all_results)
    for t, (sd, sn) in stalls.items():
        print(
            f"stalled calls (> 3 x p20 + 1 ms) at {t} thread(s): delta kernels {sd[0]}/{sd[1]}, "
            f"dense NumPy {sn[0]}/{sn[1]}"
        )


if __name__ == "__main__":
    main()
