"""The TFLite float32 contender built two ways, timed side by side: ``python scripts/tflite_converter_ab.py``.

``from_concrete_functions`` on the per-frame model (what ``streaming.bench`` used up to session 3) keeps the
weights as resource variables (VAR_HANDLE / READ_VARIABLE ops), BatchNorm unfolded and the graph split into
many XNNPACK partitions; ``from_keras_model`` on a batch-1 input (``streaming.contenders.tflite_flatbuffer``)
freezes and folds them into one XNNPACK partition. Interleaved blocks of 25 frames, 2 threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="/work/models/seed-0.keras", help="clip model (default /work/models/seed-0.keras)")
    p.add_argument("--source", default="../shared/data/box.mp4", help="video (default ../shared/data/box.mp4)")
    p.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    args = p.parse_args()
    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    import deltanet
    from streaming import contenders as c
    from streaming.bench import read_frames
    from streaming.convert import to_plan

    model = deltanet.load_model(args.model)
    shape = to_plan(model).input_shape
    clip = read_frames(args.source, 100, shape)
    per_frame = deltanet.per_frame_model(model)

    @tf.function(input_signature=[tf.TensorSpec((1,) + tuple(shape), tf.float32)])
    def serve(x):
        return per_frame(x, training=False)

    old = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], per_frame).convert()
    new = c.tflite_flatbuffer(per_frame, shape)
    runs = {"from_concrete_functions": (old, c.tflite_contender(old, args.threads).run),
            "from_keras_model": (new, c.tflite_contender(new, args.threads).run)}
    times = {k: [] for k in runs}
    for _, run in runs.values():
        for f in clip[:10]:
            run(f)
    for b in range(4):
        for k, (_, run) in runs.items():
            for f in clip[b * 25 : (b + 1) * 25]:
                t0 = time.perf_counter()
                run(f)
                times[k].append((time.perf_counter() - t0) * 1e3)
    for k, (content, _) in runs.items():
        print(f"{k:<24} {len(content):>8} bytes  median {np.median(times[k]):.3f} ms per frame")


if __name__ == "__main__":
    main()
