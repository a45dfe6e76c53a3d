"""Where a delta frame's time goes: per op kind, milliseconds and elements looked at.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/delta_profile.py --model M.keras \
        --source ../shared/data/box.mp4 --tune-frames 60 --frames 120

Tunes a delta engine as ``streaming.bench`` does (on the first ``--tune-frames`` frames, never
timed), then runs the next ``--frames`` frames profiled and prints, per op kind (MAC steps split
by kind and by whether they ran their dense fallback), the median milliseconds per delta frame,
the elements that kind of step looked at (listed pixels x channels: an encoder's input pixels, every
other step's output pixels) and nanoseconds per
element: the per-element cost that, not the MACs, decides a small model's delta frame. The
unprofiled frame time of the same engine is printed beside the profiled sum (the clock reads
cost a little). Progress on stderr, the tables on stdout.
"""

from __future__ import annotations

import sys
import numpy as np

from deltanet.cli import ArgumentParser, add_crop_argument, fail, positive_int
from engine_setup import missing_file, tuned_engine


def main(argv=None) -> int:
    p = ArgumentParser(prog="scripts/delta_profile.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a clip model (.keras)")
    p.add_argument("--source", required=True, help="a video file")
    p.add_argument("--tune-frames", type=positive_int, default=60, help="frames for tuning, not timed (default 60)")
    p.add_argument("--frames", type=positive_int, default=120, help="frames to profile after them (default 120)")
    p.add_argument("--threads", type=positive_int, default=2, help="engine threads (default 2)")
    p.add_argument("--layers", action="store_true", help="also print every step")
    add_crop_argument(p)
    args = p.parse_args(argv)
    complaint = missing_file(args)
    if complaint:
        return fail(p.prog, complaint)

    from ops import interpreter as ip

    print(f"tuning on {args.tune_frames} frames", file=sys.stderr)
    engine, tune_clip, timed = tuned_engine(args.model, args.source, args.tune_frames + args.frames, args.tune_frames, args.threads,
                                            args.crop)  # fmt: skip
    plain = engine.clone(profile=False)
    prof = engine.clone(profile=True)
    for e in (plain, prof):  # the keyframe, then a delta frame from the tuning segment (warm-up)
        e.step(tune_clip[-2])
        e.step(tune_clip[-1])
    prog = prof.program
    steps, tensors = prog.steps, prog.tensors
    n_s = steps.shape[0]
    kinds = {ip.MAC_CONV: "conv2d", ip.MAC_POINTWISE: "pointwise", ip.MAC_DEPTHWISE: "depthwise"}
    ns, elems, fell, total, density = [], [], [], [], []
    print(f"profiling {len(timed)} frames", file=sys.stderr)
    for f in timed:
        _, st = plain.step(f)
        total.append(st.total_ms)
        _, sp = prof.step(f)
        ns.append(prof._ns.copy())
        el = np.zeros(n_s)
        for s in range(n_s):
            # encoders look at their input's listed pixels (candidates), every other step at its output's
            t = prog.inputs[steps[s, ip.F_IN0]] if steps[s, ip.F_OP] == ip.OP_ENCODE else steps[s, ip.F_OUT]
            el[s] = prof._nlst[t] * tensors[t, ip.T_C]
        elems.append(el)
        fell.append(prof._ran_dense.copy())
        density.append(sp.mac_density)
    ns, elems, fell = np.stack(ns), np.stack(elems), np.stack(fell)

    def kind_of(s: int, frame: int) -> str:
        op = int(steps[s, ip.F_OP])
        if op != ip.OP_MAC:
            return ip.OP_NAMES[op]
        mi = int(steps[s, ip.A0 + 11])
        return f"mac {kinds[int(steps[s, ip.A0])]}" + (" (fell back: dense)" if fell[frame, mi] else "")

    by: dict[str, list] = {}
    for fi in range(len(timed)):
        per: dict[str, list] = {}
        for s in range(n_s):
            k = kind_of(s, fi)
            acc = per.setdefault(k, [0.0, 0.0])
            acc[0] += ns[fi, s]
            acc[1] += elems[fi, s]
        for k, (t, e) in per.items():
            by.setdefault(k, []).append((t, e))
    prof_total = ns.sum(axis=1) * 1e-6
    print(f"{len(timed)} delta frames of {args.source} after {len(tune_clip)} tuning frames, {args.threads} threads; "
          f"MAC density median {np.median(density):.3f}")  # fmt: skip
    print(f"unprofiled frame {np.median(total):.3f} ms (median), profiled steps sum {np.median(prof_total):.3f} ms; "
          f"frames with any fallback {int(fell.any(axis=1).sum())}/{len(timed)}")  # fmt: skip
    print("\n| op kind | ms per frame (mean) | share | elements per frame (mean) | ns per element |")
    print("| --- | --- | --- | --- | --- |")
    n = len(timed)
    rows = []
    for k, v in by.items():
        t = sum(a for a, _ in v) / n * 1e-6
        e = sum(b for _, b in v) / n
        rows.append((k, t, e))
    grand = sum(t for _, t, _ in rows)
    for k, t, e in sorted(rows, key=lambda r: -r[1]):
        per_el = f"{t * 1e6 / e:.2f}" if e > 0 else "-"
        print(f"| {k} | {t:.4f} | {t / grand:.0%} | {e:.0f} | {per_el} |")
    if args.layers:
        print("\n| step | op | out shape | ms (mean) | listed elements (mean) |\n| --- | --- | --- | --- | --- |")
        for s in range(n_s):
            o = steps[s, ip.F_OUT]
            shape = (int(tensors[o, ip.T_H]), int(tensors[o, ip.T_W]), int(tensors[o, ip.T_C]))
            print(f"| {prog.step_names[s]} | {kind_of(s, 0).split(' (')[0]} | {shape} | {ns[:, s].mean() * 1e-6:.4f} | "
                  f"{elems[:, s].mean():.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
