"""What predicts a delta frame's cost: per frame, the delta engine's time over its own dense mode's,
against the share of input pixels where the first encoder fired and the share of tiles holding one.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/occupancy_cost.py --model M.keras \
        --clips ../shared/data/box.mp4 ../shared/data/real/bikes.mp4 --frames 130

A tuned engine (on each clip's first ``--tune-frames`` frames, never timed) and the same engine in
dense mode step through the same frames, alternating frame by frame; per clip it prints the
correlation of ``delta ms / dense ms`` with the fired-pixel share and with the share of 4x4, 8x8
and 16x16 tiles holding a fired pixel, then the ratio's median per quartile of the 8x8 share.
This is the measurement behind ``ops.interpreter.REFRESH_TILE`` (docs/bench.md "Session 15").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from deltanet.cli import ArgumentParser, fail, positive_int

TILES = (4, 8, 16)


def main(argv=None) -> int:
    p = ArgumentParser(prog="scripts/occupancy_cost.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a clip model (.keras)")
    p.add_argument("--clips", nargs="+", required=True, help="videos")
    p.add_argument("--frames", type=positive_int, default=130, help="frames per clip, the tuning ones included (default 130)")
    p.add_argument("--tune-frames", type=positive_int, default=30, help="frames for tuning, not measured (default 30)")
    p.add_argument("--threads", type=positive_int, default=2, help="engine threads (default 2)")
    args = p.parse_args(argv)
    for path in [args.model, *args.clips]:
        if not Path(path).is_file():
            return fail(p.prog, f"no such file {path!r}")

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import deltanet
    from streaming.bench import read_frames
    from streaming.convert import to_plan
    from streaming.engine import DeltaEngine
    from streaming.tuning import tune

    plan = to_plan(deltanet.load_model(args.model))
    h, w, _ = plan.input_shape
    print("| clip | pixels fired | corr. | " + " | ".join(f"{t}x{t} tiles | corr." for t in TILES)
          + " | delta / dense per quartile of the 8x8 share |")  # fmt: skip
    print("|" + " --- |" * (4 + 2 * len(TILES)))
    for clip_path in args.clips:
        print(f"{clip_path}", file=sys.stderr)
        clip = read_frames(clip_path, args.frames, plan.input_shape)
        tuning, frames = clip[: args.tune_frames], clip[args.tune_frames :]
        engine = DeltaEngine(plan, threads=args.threads)
        tune(engine, tuning)
        delta, dense = engine.clone(), engine.clone(mode="dense")
        for e in (delta, dense):  # warm, then start the measured frames from a reset
            for f in tuning[-3:]:
                e.step(f)
            e.reset()
        rows = []
        for f in frames:
            t0 = time.perf_counter()
            delta.step(f)
            t_delta = time.perf_counter() - t0
            active, _ = delta.delta_of(0)  # the first MAC layer's input: the first encoder's fired pixels
            y, x = active // w, active % w
            shares = []
            for t in TILES:
                hit = np.zeros((-(-h // t), -(-w // t)), bool)
                hit[y // t, x // t] = True
                shares.append(hit.mean())
            t0 = time.perf_counter()
            dense.step(f)
            t_dense = time.perf_counter() - t0
            rows.append((len(active) / (h * w), *shares, t_delta / t_dense))
        rows = np.array(rows[1:])  # the first is the delta engine's keyframe
        corr = np.corrcoef(rows.T)[-1, :-1]
        cells = [Path(clip_path).name, f"{rows[:, 0].min():.2f}-{rows[:, 0].max():.2f}", f"{corr[0]:.2f}"]
        for k in range(len(TILES)):
            cells += [f"{rows[:, 1 + k].min():.2f}-{rows[:, 1 + k].max():.2f}", f"{corr[1 + k]:.2f}"]
        quartiles = np.array_split(np.argsort(rows[:, 1 + TILES.index(8)]), 4)
        cells.append(", ".join(f"{np.median(rows[q, -1]):.2f}" for q in quartiles))
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
