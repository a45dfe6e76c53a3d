"""Where the engine's dense mode spends its time, beside TFLite fp32 in the same process.

    python scripts/dense_profile.py --model /work/models/seed-0.keras --source ../shared/data/box.mp4

Runs ``DeltaEngine(plan, mode="dense")`` unprofiled (its dense kernels parallel as the untuned
default has them, and all serial) and TFLite (XNNPACK) in interleaved blocks (same frames, same threads), then profiled dense frames, and prints the ratio dense/TFLite
(median of per-block ratios) and the profiled time per op kind (MAC steps split by kind:
Conv2D, pointwise, depthwise) and per MAC layer. Progress on stderr, the table on stdout.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from deltanet.cli import ArgumentParser, positive_int


def main(argv=None) -> int:
    p = ArgumentParser(prog="scripts/dense_profile.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a trained clip model (.keras)")
    p.add_argument("--source", required=True, help="a video file")
    p.add_argument("--frames", type=positive_int, default=100, help="frames (default 100)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for both (default 2)")
    p.add_argument("--block", type=positive_int, default=20, help="frames per interleaved block (default 20)")
    p.add_argument("--blas-threads", type=positive_int, default=1, help="BLAS threads (default 1, what DeltaEngine(threads=) sets)")
    args = p.parse_args(argv)

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    import deltanet
    from ops import interpreter as ip
    from streaming.bench import read_frames
    from streaming.contenders import tflite_runner
    from streaming.convert import to_plan
    from streaming.engine import DeltaEngine

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    clip_model = deltanet.load_model(args.model)
    plan = to_plan(clip_model)
    clip = read_frames(args.source, args.frames, plan.input_shape)
    tflite = tflite_runner(deltanet.per_frame_model(clip_model), args.threads, plan.input_shape)
    dense = DeltaEngine(plan, mode="dense", threads=args.threads)  # dense kernels: the default parallel choice
    serial = DeltaEngine(plan, mode="dense", threads=args.threads, dense_parallel={n: False for n in dense.layer_names})
    profiled = DeltaEngine(plan, mode="dense", threads=args.threads, profile=True)
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        for f in clip[:10]:
            dense.step(f), serial.step(f), tflite(f), profiled.step(f)
        times = {"dense": [], "serial": [], "tflite": []}
        ratios, serial_ratios = [], []
        for b0 in range(0, len(clip), args.block):
            block = {}
            for name, fn in (("dense", lambda f: dense.step(f)), ("serial", lambda f: serial.step(f)), ("tflite", tflite)):
                t = []
                for f in clip[b0 : b0 + args.block]:
                    t0 = time.perf_counter()
                    fn(f)
                    t.append((time.perf_counter() - t0) * 1e3)
                times[name] += t
                block[name] = np.median(t)
            ratios.append(block["dense"] / block["tflite"])
            serial_ratios.append(block["serial"] / block["tflite"])
        print(f"{len(clip)} frames, {args.threads} threads", file=sys.stderr)
        ns = []
        for f in clip:
            profiled.step(f)
            ns.append(profiled._ns.copy())  # per step (FrameStats sums them per MAC layer / phase)
        ns = np.stack(ns)
    p_ = profiled.program
    per_step = np.median(ns, axis=0) * 1e-3  # us
    kinds = {ip.MAC_CONV: "mac conv2d", ip.MAC_POINTWISE: "mac pointwise", ip.MAC_DEPTHWISE: "mac depthwise"}
    by_op: dict[str, float] = {}
    for s in range(len(p_.step_names)):
        op = int(p_.steps[s, ip.F_OP])
        name = kinds[int(p_.steps[s, ip.A0])] if op == ip.OP_MAC else ip.OP_NAMES[op]
        by_op[name] = by_op.get(name, 0.0) + per_step[s]
    print(f"dense engine {np.median(times['dense']):.3f} ms, TFLite {np.median(times['tflite']):.3f} ms per frame (medians); "
          f"dense / TFLite, median of {len(ratios)} per-block ratios: {np.median(ratios):.2f}")  # fmt: skip
    print(f"dense engine with every dense kernel serial {np.median(times['serial']):.3f} ms; serial / TFLite, median of "
          f"per-block ratios: {np.median(serial_ratios):.2f} ({sum(dense.dense_parallel.values())} of {len(dense.layer_names)} "
          f"MAC layers parallel in the default engine)")  # fmt: skip
    print(f"profiled dense frame: {per_step.sum():.0f} us")
    print("| op | us | share |\n| --- | --- | --- |")
    for name, us in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {us:.0f} | {us / per_step.sum():.0%} |")
    print("\n| MAC layer | kind | shape in -> out | us |\n| --- | --- | --- | --- |")
    for m in p_.mac_layers:
        print(f"| {m.name} | {kinds[m.kind]} {m.kernel_shape[0]}x{m.kernel_shape[1]}/{m.stride} | {m.in_shape} -> {m.out_shape} | "
              f"{per_step[m.step]:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
