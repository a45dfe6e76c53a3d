"""Time one training step of the default delta model vs the baseline, side by side.

    python scripts/step_time.py [--steps 20] [--frames 4] [--size 112] [--batch 8]

Random inputs (the data pipeline is not timed); after warm-up, alternating models so that
both see the same machine load. Prints median seconds per step and the ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--arch", default="mobilenet_v2_lite")
    p.add_argument("--jit", action="store_true", help="compile with XLA (jit_compile=True)")
    args = p.parse_args()

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import numpy as np

    import deltanet

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch, args.frames, args.size, args.size, 3)).astype("uint8")
    y = rng.integers(0, 10, (args.batch,))
    models = {}
    for name, baseline in (("baseline", True), ("delta", False)):
        keras.utils.set_random_seed(0)
        m = deltanet.build_model(10, arch=args.arch, size=args.size, baseline=baseline, penalty_weight=2.0)
        m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=args.jit)
        for _ in range(3):
            m.train_on_batch(x, y)
        models[name] = m
    times = {k: [] for k in models}
    for _ in range(args.steps):
        for name, m in models.items():
            t0 = time.perf_counter()
            m.train_on_batch(x, y)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:9s} {v * 1000:7.1f} ms/step")
    print(f"delta / baseline {med['delta'] / med['baseline']:.2f}x")


if __name__ == "__main__":
    main()
