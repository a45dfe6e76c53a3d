"""Time the training fast path's kernels (ops.threshold_clip) over the default model's 26 DeltaActivation shapes.

    python scripts/threshold_clip_kernels.py [--batch 8] [--frames 4] [--size 112] [--repeats 9]

One pass over every layer shape of the default delta model (batch x frames clips, the order
a training step visits them), each layer its own arrays, as a step sees them: forward (serial
and ``prange``), backward (both), and ``np.copyto`` of the same bytes (two streams: a floor
for a forward that reads ``x`` and writes ``y``). ``--cold`` evicts the caches (a 64 MiB sum)
before each pass. Inputs are temporally correlated ReLU outputs, thresholds 0.1. Prints the
median ms per pass. For a before/after of a kernel change, run it at both commits
(``git stash`` or a worktree), one after the other, on a quiet machine.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def layer_shapes(args) -> list[tuple[int, ...]]:
    """(batch, frames, ...features) of every DeltaActivation input of the default model."""
    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import deltanet
    from deltanet.measure import delta_layers

    model = deltanet.build_model(10, arch="mobilenet_v2_lite", size=args.size, penalty_weight=2.0)
    return [(args.batch, args.frames, *l.input.shape[2:]) for l in delta_layers(model)]


def main() -> None:
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="clips per batch (default: %(default)s)")
    p.add_argument("--frames", type=int, default=4, help="frames per clip (default: %(default)s)")
    p.add_argument("--size", type=int, default=112, help="frame size (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=9, help="timed passes (default: %(default)s)")
    p.add_argument("--cold", action="store_true", help="evict the caches before each pass (default: off)")
    args = p.parse_args()

    import numpy as np

    from ops.threshold_clip import aligned_empty, threshold_clip_backward, threshold_clip_forward

    rng = np.random.default_rng(0)
    layers = []
    for shape in layer_shapes(args):
        n, t, c = shape[0], shape[1], shape[-1]
        flat = (n, t, int(np.prod(shape[2:-1])), c)
        first = np.maximum(rng.standard_normal((n, 1, *flat[2:])), 0)
        x = np.maximum(first + 0.05 * rng.standard_normal(flat), 0).astype(np.float32)
        layers.append(
            dict(x=x, theta=np.full(c, 0.1, np.float32), y=aligned_empty(flat), g=rng.standard_normal(flat).astype(np.float32), g_x=aligned_empty(flat))
        )
    flush = np.ones(64 * 2**20 // 8)
    passes = {
        "forward serial": lambda: [threshold_clip_forward(d["x"], d["theta"], False, out=d["y"]) for d in layers],
        "forward prange": lambda: [threshold_clip_forward(d["x"], d["theta"], True, out=d["y"]) for d in layers],
        "backward serial": lambda: [threshold_clip_backward(d["y"], d["g"], 0.1, 0.0, False, out=d["g_x"]) for d in layers],
        "backward prange": lambda: [threshold_clip_backward(d["y"], d["g"], 0.1, 0.0, True, out=d["g_x"]) for d in layers],
        "copy (2 streams)": lambda: [np.copyto(d["g_x"], d["x"]) for d in layers],
    }
    for run in passes.values():  # compile and warm up
        run()
    megabytes = sum(d["x"].nbytes for d in layers) / 1e6
    print(f"{len(layers)} layers, {megabytes:.1f} MB of activations per pass, {'cold' if args.cold else 'warm'} caches")
    for name, run in passes.items():
        times = []
        for _ in range(args.repeats):
            if args.cold:
                flush.sum()
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        print(f"{name:18s} {statistics.median(times) * 1e3:7.2f} ms  [{min(times) * 1e3:.2f}-{max(times) * 1e3:.2f}]")


if __name__ == "__main__":
    main()
