"""Hyper-parameter sweep on the embedded dataset, with the videos held in memory.

Used to choose ``training.fit``'s defaults on a GPU machine without TensorFlow (any Keras
backend: ``KERAS_BACKEND=jax``). Each configuration trains the same model that
``training.fit`` builds (``training.fit.build`` + ``compile_model``) on clips sampled in
NumPy exactly as the tf.data pipeline samples them (``training.video.clip_indices``:
random start per epoch for training, the centered clip for validation), then reports
validation accuracy and MAC density. The numbers that the README reports come from
``training.fit`` itself (scripts/headline.py), not from this script.

    KERAS_BACKEND=jax python scripts/sweep.py --json out.jsonl \
        --grid 'epochs=12,20' --grid 'delta_weight=1,2' [--baseline-too]

Each ``--grid key=v1,v2`` names a ``training.fit.FitConfig`` field; the sweep runs the
cross product.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_videos(entries, size, threads=8):
    """All frames of every video, resized: uint8 ``(videos, frames, size, size, 3)``."""
    import cv2

    from training.video import resize_frame

    def one(path):
        cap = cv2.VideoCapture(path)
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(resize_frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (size, size)))
        cap.release()
        return np.stack(frames)

    with ThreadPoolExecutor(threads) as pool:
        videos = list(pool.map(one, [p for p, _ in entries]))
    n = min(len(v) for v in videos)
    return np.stack([v[:n] for v in videos]), np.array([label for _, label in entries], np.int32)


def sample(videos, frames, stride, rng=None):
    from training.video import clip_indices

    idx = np.stack([clip_indices(videos.shape[1], frames, stride, rng=rng) for _ in range(len(videos))])
    return videos[np.arange(len(videos))[:, None], idx]


def run_one(cfg, train, val, class_names, seed_offset=0, save=None, test=None):
    import keras

    from deltanet.measure import measure_model
    from deltanet.schedules import fit_callbacks
    from training.fit import build, compile_model

    keras.utils.set_random_seed(cfg.seed)
    model = build(cfg, class_names)
    steps = int(np.ceil(len(train[0]) / cfg.batch_size))
    compile_model(model, cfg, steps)
    callbacks = [] if cfg.baseline else fit_callbacks(
        schedule=cfg.schedule, total_steps=cfg.epochs * steps, warmup=cfg.warmup,
        depth_progressive=cfg.depth_progressive, threshold_shift=cfg.threshold_shift, shift_fraction=cfg.shift_fraction,
    )
    rng = np.random.default_rng(cfg.seed + seed_offset)
    xv = sample(val[0], cfg.frames, cfg.stride)
    t0 = time.time()
    curve = []
    for epoch in range(cfg.epochs):
        xt = sample(train[0], cfg.frames, cfg.stride, rng)
        model.fit(xt, train[1], batch_size=cfg.batch_size, epochs=epoch + 1, initial_epoch=epoch, shuffle=True, verbose=0, callbacks=callbacks)
        curve.append(round(float(model.evaluate(xv, val[1], batch_size=32, verbose=0, return_dict=True)["accuracy"]), 4))
    seconds = time.time() - t0
    batches = [xv[i : i + 32] for i in range(0, len(xv), 32)]
    measured = measure_model(model, batches)
    result = {"val_accuracy": curve[-1], "curve": curve, "mac_density": measured["mac_density"], "seconds": round(seconds, 1)}
    if test is not None:  # reported for the claim only: choices are made on the validation figures
        xs = sample(test[0], cfg.frames, cfg.stride)
        result["test_accuracy"] = round(float(model.evaluate(xs, test[1], batch_size=32, verbose=0, return_dict=True)["accuracy"]), 4)
        result["test_mac_density"] = measure_model(model, [xs[i : i + 32] for i in range(0, len(xs), 32)])["mac_density"]
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        model.save(save)
    return result


def main() -> None:
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description="sweep training.fit settings on in-memory embedded clips")
    p.add_argument("--grid", action="append", default=[], help="FIELD=v1,v2,... (FitConfig field)")
    p.add_argument("--baseline-too", action="store_true", help="also train each configuration with --baseline")
    p.add_argument("--json", help="append one JSON line per run here")
    p.add_argument("--save-dir", help="also save each trained model here as SETTINGS.keras")
    p.add_argument("--test", action="store_true", help="also report test-split accuracy and MAC density (for claims, not for choosing)")
    args = p.parse_args()

    from training.fit import FitConfig
    from training.synthetic import make_embedded_dataset
    from training.ucf101 import load_dataset_index

    base = FitConfig()
    fields = {f.name: f.type for f in dataclasses.fields(FitConfig)}
    axes = []
    for item in args.grid:
        key, _, values = item.partition("=")
        if key not in fields:
            p.error(f"--grid: unknown FitConfig field {key!r}")
        kind = type(getattr(base, key))
        conv = (lambda v: v.lower() in ("1", "true", "yes")) if kind is bool else kind
        axes.append([(key, conv(v)) for v in values.split(",")])
    index = load_dataset_index(str(make_embedded_dataset(seed=0)), seed=base.seed)
    sizes = {dict(combo).get("size", base.size) for combo in itertools.product(*axes)} if axes else {base.size}
    if len(sizes) > 1:
        p.error(f"--grid size: one size per sweep (the videos are loaded once), got {sorted(sizes)}")
    (size,) = sizes
    t0 = time.time()
    train = load_videos(index.train, size)
    val = load_videos(index.val, size)
    test = load_videos(index.test, size) if args.test else None
    print(f"loaded {len(train[0])} + {len(val[0])} videos in {time.time() - t0:.0f}s", flush=True)
    for combo in itertools.product(*axes) if axes else [()]:
        for baseline in (False, True) if args.baseline_too else (False,):
            cfg = dataclasses.replace(base, **dict(combo), baseline=baseline)
            name = "_".join(f"{k}-{v}" for k, v in combo) or "defaults"
            save = str(Path(args.save_dir) / f"{name}{'_baseline' if baseline else ''}.keras") if args.save_dir else None
            res = run_one(cfg, train, val, index.class_names, save=save, test=test)
            rec = {"settings": dict(combo), "baseline": baseline, **res}
            print(json.dumps(rec), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
