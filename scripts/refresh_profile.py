"""A refresh frame against a dense frame, step by step: what refresh frames cost beyond dense mode.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/refresh_profile.py --model M.keras \
        --source ../shared/data/real/bikes.mp4 --frames 90

Tunes a delta engine on the first ``--tune-frames`` frames, then runs the rest profiled twice: as
refresh frames (``refresh_at=0``: every delta frame refreshes) and in dense mode. Prints the median
microseconds per frame of both, and every step whose median differs by more than ``--min-us``
(the first encoder's pass, the copies of references that cannot trade buffers). Progress on stderr.
"""

from __future__ import annotations

import sys
import numpy as np

from deltanet.cli import ArgumentParser, fail, positive_int
from engine_setup import missing_file, tuned_engine


def main(argv=None) -> int:
    p = ArgumentParser(prog="scripts/refresh_profile.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a clip model (.keras)")
    p.add_argument("--source", required=True, help="a video")
    p.add_argument("--frames", type=positive_int, default=90, help="frames, the tuning ones included (default 90)")
    p.add_argument("--tune-frames", type=positive_int, default=30, help="frames for tuning, not profiled (default 30)")
    p.add_argument("--threads", type=positive_int, default=2, help="engine threads (default 2)")
    p.add_argument("--min-us", type=float, default=2.0, help="print steps differing by more than this (default 2)")
    args = p.parse_args(argv)
    complaint = missing_file(args)
    if complaint:
        return fail(p.prog, complaint)

    from ops import interpreter as ip

    print(f"tuning on {args.tune_frames} frames", file=sys.stderr)
    engine, _, frames = tuned_engine(args.model, args.source, args.frames, args.tune_frames, args.threads)
    runs = {"refresh": engine.clone(refresh_at=0.0, profile=True), "dense": engine.clone(mode="dense", profile=True)}
    us = {}
    for name, e in runs.items():
        e.warmup()
        per = []
        for f in frames:
            e.step(f)
            per.append(e._ns.copy())
        us[name] = np.median(np.stack(per[1:]), axis=0) / 1e3  # the first frame is a keyframe
    prog = runs["refresh"].program
    print(f"{len(frames) - 1} frames of {args.source}, {args.threads} threads: refresh frame {us['refresh'].sum():.0f} us of steps, "
          f"dense frame {us['dense'].sum():.0f} us (medians per step, summed)")  # fmt: skip
    print("| step | op | reference | refresh us | dense us |\n| --- | --- | --- | --- | --- |")
    steps = prog.steps
    for s in range(len(prog.step_names)):
        if abs(us["refresh"][s] - us["dense"][s]) <= args.min_us:
            continue
        op = int(steps[s, ip.F_OP])
        how = "-"
        if op == ip.OP_ENCODE:
            how = "buffers swapped" if steps[s, ip.A0 + 4] == 1 else "copied"
        print(f"| {prog.step_names[s]} | {ip.OP_NAMES[op]} | {how} | {us['refresh'][s]:.1f} | {us['dense'][s]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
