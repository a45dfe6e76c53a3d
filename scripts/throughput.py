"""Training throughput in clips/s, on one device or several (``--distribute``).

Builds and compiles the model exactly as ``python -m training.fit`` does (same
architecture, loss, optimizer, delta penalty), then times ``model.fit`` on the embedded
dataset:

* ``--source memory`` (default): ``--pool`` training clips of the embedded dataset are
  decoded once (OpenCV, resized to ``--size``) into a few ready batches that are fed again
  and again. This measures the training step, host-to-device copies included, and not the
  video decoder; it needs no TensorFlow, so it also runs on a JAX-only machine
  (``KERAS_BACKEND=jax``).
* ``--source pipeline``: the real ``training.pipeline`` tf.data input (decoding every clip
  every step, random clip starts), as ``training.fit`` trains. Needs TensorFlow.

One warm-up ``fit`` of ``--warmup`` steps (compilation) is followed by a timed ``fit`` of
``--steps`` steps; clips/s = steps x global batch / wall-clock seconds of the timed call
(which ends synchronised: Keras reads the metrics back at the end of the epoch). Also
reported: the decode rate of the pool (clips/s with ``--decode-threads`` threads).

Prints one JSON line (and appends it to ``--json`` if given). Examples::

    python scripts/throughput.py --size 224 --batch-size 32                  # one device
    KERAS_BACKEND=jax python scripts/throughput.py --distribute data-parallel --batch-size 64
    DELTANET_LOGICAL_CPUS=2 python scripts/throughput.py --distribute mirrored --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--distribute", choices=("none", "mirrored", "data-parallel"), default="none")
    p.add_argument("--data", default="embedded", help="'embedded' or a UCF101-layout/class-folder root")
    p.add_argument("--arch", default="mobilenet_v2_lite")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--width", type=float, default=0.35)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (clips per step, all devices together)")
    p.add_argument("--baseline", action="store_true", help="the dense model (no delta layers)")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--source", choices=("memory", "pipeline"), default="memory")
    p.add_argument("--pool", type=int, default=None, help="memory source: clips decoded (default: 2 batches)")
    p.add_argument("--decode-threads", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--json", default=None, help="append the result line to this file")
    return p.parse_args(argv)


def _device_info() -> dict:
    import keras

    info = {"backend": keras.backend.backend(), "host": platform.node(), "cpus": os.cpu_count()}
    try:
        devices = keras.distribution.list_devices()
        info["devices"] = devices
    except Exception:  # noqa: BLE001 - informational only
        pass
    if info["backend"] == "jax":
        import jax

        info["jax"] = jax.__version__
        info["device_kind"] = jax.devices()[0].device_kind
    elif info["backend"] == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    info["keras"] = keras.__version__
    return info


def decode_pool(index, n: int, args) -> tuple:
    """``n`` training clips (and labels) decoded with OpenCV, and the decode rate."""
    import numpy as np

    from training.video import read_clip

    entries = [index.train[i % len(index.train)] for i in range(n)]
    rng = np.random.default_rng(0)
    seeds = rng.integers(0, 2**31, n)

    def one(i):
        path, label = entries[i]
        clip = read_clip(path, args.frames, args.stride, (args.size, args.size), rng=np.random.default_rng(seeds[i]))
        return clip, label

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.decode_threads)) as pool:
        results = list(pool.map(one, range(n)))
    seconds = time.perf_counter() - t0
    clips = np.stack([c for c, _ in results])
    labels = np.array([lab for _, lab in results], np.int32)
    return clips, labels, n / seconds


def memory_batches(clips, labels, batch_size: int, steps: int):
    """A ``keras.utils.PyDataset`` of ``steps`` batches cycling over ready-made arrays."""
    import keras
    import numpy as np

    n = len(clips) // batch_size
    batches = [
        (np.ascontiguousarray(clips[i * batch_size : (i + 1) * batch_size]), labels[i * batch_size : (i + 1) * batch_size])
        for i in range(n)
    ]

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, i):
            return batches[i % len(batches)]

    return Batches()


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.distribute == "mirrored" or args.source == "pipeline":
        from deltanet.cli import import_tensorflow_quietly

        import_tensorflow_quietly()
    import keras
    import numpy as np

    from training import distribute
    from training.fit import FitConfig, build, compile_model
    from training.ucf101 import load_dataset_index

    dist = distribute.setup(args.distribute, batch_size=args.batch_size)  # before any TF op
    keras.utils.set_random_seed(0)
    data = args.data
    if data == "embedded":
        from training.synthetic import make_embedded_dataset

        data = str(make_embedded_dataset(seed=0, progress=False))
    index = load_dataset_index(data, split=1, seed=0)
    cfg = FitConfig(
        data=args.data,
        arch=args.arch,
        size=args.size,
        width=args.width,
        frames=args.frames,
        stride=args.stride,
        batch_size=args.batch_size,
        baseline=args.baseline,
        distribute=args.distribute,
        epochs=1,
    )

    decode_rate = None
    if args.source == "memory":
        pool = args.pool or 2 * args.batch_size
        pool = max(args.batch_size, pool - pool % args.batch_size)
        clips, labels, decode_rate = decode_pool(index, pool, args)
        warm = memory_batches(clips, labels, args.batch_size, args.warmup)
        timed = memory_batches(clips, labels, args.batch_size, args.steps)
    else:
        from training.pipeline import make_clip_dataset

        def dataset():
            ds = make_clip_dataset(
                index.train,
                frames=args.frames,
                stride=args.stride,
                size=(args.size, args.size),
                batch_size=args.batch_size,
                training=True,
                drop_remainder=True,
            ).repeat()
            return distribute.whole_replica_batches(ds, dist.replicas, args.batch_size) if dist.replicas > 1 else ds

        warm = timed = dataset()

    with dist.scope():
        model = build(cfg, index.class_names)
        compile_model(model, cfg, args.warmup + args.steps)
        dist.prepare_model(model)

    t0 = time.perf_counter()
    model.fit(warm, epochs=1, steps_per_epoch=args.warmup, verbose=0)
    warmup_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    history = model.fit(timed, epochs=1, steps_per_epoch=args.steps, verbose=0)
    seconds = time.perf_counter() - t0
    loss = float(history.history["loss"][-1])
    if not np.isfinite(loss):
        raise SystemExit(f"non-finite training loss {loss}")

    result = {
        "clips_per_s": round(args.steps * args.batch_size / seconds, 2),
        "frames_per_s": round(args.steps * args.batch_size * args.frames / seconds, 1),
        "step_ms": round(1000 * seconds / args.steps, 2),
        "seconds": round(seconds, 3),
        "warmup_seconds": round(warmup_seconds, 1),
        "decode_clips_per_s": None if decode_rate is None else round(decode_rate, 1),
        "replicas": dist.replicas,
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "params": int(model.count_params()),
        "loss": round(loss, 4),
        **_device_info(),
    }
    line = json.dumps(result)
    print(line, flush=True)
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
