"""Serial vs parallel dense MAC kernels (``ops.dense``) at the layer shapes of the models this project runs.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/dense_kernels.py --threads 2

Times ``_conv_dense`` (one thread: im2col + one single-threaded sgemm; depthwise direct) against
``_conv_dense_par`` (the output rows split into one block per thread) on random inputs, each the
fastest of ``--reps`` runs after a warm-up, alternated, and prints ms, GMAC/s, the ratio and the
largest difference between the two. The evidence behind ``streaming.engine.DENSE_PARALLEL_MACS``
(the untuned default; ``streaming.tuning.tune_dense_parallel`` measures each layer).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deltanet.cli import ArgumentParser, positive_int  # noqa: E402

# name, input H=W, Cin, Cout (depthwise: 0), kernel, stride
SHAPES = [
    ("default: block 1x1 14x14x32->192", 14, 32, 192, 1, 1),
    ("default: block 1x1 28x28x16->96", 28, 16, 96, 1, 1),
    ("default: block 1x1 56x56x16->16", 56, 16, 16, 1, 1),
    ("default: depthwise 3x3 56x56x48 s2", 56, 48, 0, 3, 2),
    ("default: stem 3x3 s2 112x112x3->16", 112, 3, 16, 3, 2),
    ("fer: 3x3 62x62x8->8", 62, 8, 8, 3, 1),
    ("mobilenet_v2: 1x1 56x56x24->144", 56, 24, 144, 1, 1),
    ("mobilenet_v2: depthwise 3x3 112x112x96 s2", 112, 96, 0, 3, 2),
    ("mobilenet_v2: stem 3x3 s2 224x224x3->32", 224, 3, 32, 3, 2),
    ("resnet18: 3x3 56x56x64->64", 56, 64, 64, 3, 1),
    ("resnet18: 3x3 28x28x128->128", 28, 128, 128, 3, 1),
    ("resnet18: stem 7x7 s2 224x224x3->64", 224, 3, 64, 7, 2),
]


def main(argv=None) -> int:
    p = ArgumentParser(prog="scripts/dense_kernels.py", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=positive_int, default=2, help="numba threads, one row block each (default 2)")
    p.add_argument("--reps", type=positive_int, default=30, help="timed runs per kernel and round (default 30)")
    args = p.parse_args(argv)
    import numba
    from threadpoolctl import threadpool_limits

    from ops.dense import _conv_dense, _conv_dense_par

    threadpool_limits(limits=1, user_api="blas")  # as DeltaEngine(threads=) runs BLAS
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    def best(fn):
        fn()
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts) * 1e3

    print(f"| layer | dense MMACs | serial ms | GMAC/s | parallel ({args.threads} blocks) ms | speedup | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, hw, cin, cout, k, s in SHAPES:
        depthwise = cout == 0
        x = rng.standard_normal((hw, hw, cin)).astype(np.float32)
        w = (rng.standard_normal((k, k, cin, 1 if depthwise else cout)) * 0.1).astype(np.float32)
        pad = (k - 1) // 2
        oh = (hw + 2 * pad - k) // s + 1
        oc = cin if depthwise else cout
        bias = rng.standard_normal(oc).astype(np.float32)
        a, b = np.zeros((oh, oh, oc), np.float32), np.zeros((oh, oh, oc), np.float32)
        col = np.zeros(oh * oh * k * k * cin, np.float32)
        pointwise = not depthwise and k == 1 and s == 1
        serial = lambda: _conv_dense(x, w, s, pad, pad, bias, a, col, depthwise, pointwise)  # noqa: E731
        par = lambda: _conv_dense_par(x, w, s, pad, pad, bias, b, col, depthwise, pointwise, args.threads)  # noqa: E731
        t_s, t_p = min(best(serial), best(serial)), 0.0
        t_p = min(best(par), best(par))
        t_s = min(t_s, best(serial))
        macs = oh * oh * k * k * cin * (1 if depthwise else cout)
        print(f"| {name} | {macs / 1e6:.2f} | {t_s:.4f} | {macs / t_s / 1e6:.1f} | {t_p:.4f} | {t_s / t_p:.2f}x | {np.abs(a - b).max():.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
