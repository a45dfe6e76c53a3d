"""Time one training step of the default delta model vs the baseline, side by side.

    python scripts/step_time.py [--steps 20] [--frames 4] [--size 112] [--batch 8] [--keras-ops] [--parallel-kernels] [--numpy-function]

Random inputs (the data pipeline is not timed); after warm-up, alternating models so that
all see the same machine load. Prints median milliseconds per step with the range over the steps, the
ratio to the baseline, the process's CPU milliseconds per step (all threads) and page faults.
``--keras-ops`` adds the delta model with the backend-neutral ``keras.ops`` threshold pass
instead of TensorFlow's numba fast path (``deltanet.threshold_clip_tf``): the before/after of
issue #15's delta step. ``--parallel-kernels`` adds the delta model on the other kernel flavour
than the default ``threshold_clip_tf.PARALLEL`` (``delta_serial`` now that the default runs the
kernels on numba's threads, ``delta_parallel`` otherwise). ``delta`` runs the native op where it
builds (``deltanet.native_op``); ``--numpy-function`` adds ``delta_numpy_function``, the same
kernels through ``tf.numpy_function`` (the fallback; ``DELTANET_NATIVE_OP=0`` while it is traced).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_arguments(description: str):
    """The batch and model options shared by the step-timing scripts."""
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description=description)
    p.add_argument("--steps", type=int, default=20, help="timed steps per model (default: %(default)s)")
    p.add_argument("--frames", type=int, default=4, help="frames per clip (default: %(default)s)")
    p.add_argument("--size", type=int, default=112, help="frame size (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="clips per batch (default: %(default)s)")
    p.add_argument("--arch", default="mobilenet_v2_lite", help="architecture (default: %(default)s)")
    return p


def random_batch(args):
    """One random batch of uint8 clips and labels (the data pipeline is not timed)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch, args.frames, args.size, args.size, 3)).astype("uint8")
    return x, rng.integers(0, 10, (args.batch,))


def compiled_model(args, baseline: bool, jit: bool = False):
    import keras

    import deltanet

    keras.utils.set_random_seed(0)
    m = deltanet.build_model(10, arch=args.arch, size=args.size, baseline=baseline, penalty_weight=2.0)
    m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    return m


def time_alternating(models: dict, x, y, steps: int) -> None:
    """``train_on_batch`` each model in turn, ``steps`` rounds; print median ms/step (and the
    range), the ratio to ``models["baseline"]``, median CPU ms and mean minor page faults per step."""
    times = {k: [] for k in models}
    cpu = {k: [] for k in models}
    faults = dict.fromkeys(models, 0)
    for _ in range(steps):
        for name, m in models.items():
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            m.train_on_batch(x, y)
            times[name].append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu[name].append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
            faults[name] += r1.ru_minflt - r0.ru_minflt
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        spread = f"[{min(times[k]) * 1000:.0f}-{max(times[k]) * 1000:.0f}]"
        print(
            f"{k:16s} {v * 1000:7.1f} ms/step {spread:>11s}  {v / med['baseline']:.2f}x baseline  "
            f"{statistics.median(cpu[k]) * 1000:7.1f} CPU ms/step  {faults[k] // steps:7d} page faults/step"
        )


def main() -> None:
    p = step_arguments(__doc__.splitlines()[0])
    p.add_argument("--jit", action="store_true", help="compile with XLA (jit_compile=True) (default: off)")
    p.add_argument("--keras-ops", action="store_true", help="also time the delta model on the keras.ops pass (default: off)")
    p.add_argument(
        "--parallel-kernels", action="store_true",
        help="also time the delta model on the other kernel flavour than the default (threshold_clip_tf.PARALLEL): "
             "delta_serial when the default is the prange kernels, else delta_parallel (default: off)"
    )
    p.add_argument(
        "--numpy-function", action="store_true",
        help="also time the delta model with the kernels called through tf.numpy_function instead of the native op (default: off)",
    )
    args = p.parse_args()

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    from deltanet import delta_activation, threshold_clip_tf

    x, y = random_batch(args)
    fast, parallel = threshold_clip_tf.threshold_clip_tf, threshold_clip_tf.PARALLEL
    other = "delta_serial" if parallel else "delta_parallel"
    contenders = ["baseline", "delta"] + ["delta_keras_ops"] * args.keras_ops + [other] * args.parallel_kernels
    contenders += ["delta_numpy_function"] * args.numpy_function
    from deltanet import native_op

    print(f"delta fast path: {'native op' if native_op.load() is not None else 'numpy_function (native op unavailable)'}", flush=True)
    models = {}
    for name in contenders:
        m = compiled_model(args, name == "baseline", args.jit)
        # the step is traced on its first call: with the keras.ops pass in place of the fast
        # path, or with the fast path's kernels on numba's threads
        threshold_clip_tf.threshold_clip_tf = delta_activation._threshold_clip if name == "delta_keras_ops" else fast
        threshold_clip_tf.PARALLEL = name == "delta_parallel" or (parallel and name in ("delta", "delta_keras_ops", "delta_numpy_function"))
        setting = os.environ.get("DELTANET_NATIVE_OP")
        if name in ("delta_numpy_function", "delta_serial", "delta_parallel"):
            os.environ["DELTANET_NATIVE_OP"] = "0"  # the kernel flavours are the numpy_function path's
        try:
            for _ in range(3):
                m.train_on_batch(x, y)
        finally:
            threshold_clip_tf.threshold_clip_tf, threshold_clip_tf.PARALLEL = fast, parallel
            if setting is None:
                os.environ.pop("DELTANET_NATIVE_OP", None)
            else:
                os.environ["DELTANET_NATIVE_OP"] = setting
        models[name] = m
    time_alternating(models, x, y, args.steps)


if __name__ == "__main__":
    main()
