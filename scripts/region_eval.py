"""Region-weighted thresholds in the runtime, measured on labelled videos.

    python scripts/region_eval.py --model runs/headline2/delta/model.keras [--videos 280] [--frames 16]
        [--lambdas 2,4,9] [--json OUT]

Runs the delta engine over the first ``--frames`` frames (at the model's stride) of each
validation video of the embedded dataset: plain thresholds, then ``set_region("motion", lam)``
for each lambda, and the same engine in dense mode as the reference. Reports per setting:
clip accuracy (mean of per-frame logits), executed MAC density (frames t >= 1), the per-frame
top-1 agreement and logit MSE against the dense network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--videos", type=int, default=280)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--lambdas", default="2,4,9")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from streaming.engine import DeltaEngine
    from training.synthetic import make_embedded_dataset
    from training.ucf101 import load_dataset_index
    from training.video import read_clip

    engine = DeltaEngine.from_keras(args.model)
    stride = int(engine.info.get("stride", 1))
    index = load_dataset_index(str(make_embedded_dataset(seed=0)))
    videos = index.val[: args.videos]
    h, w, _ = engine.input_shape
    settings = [("plain", None)] + [(f"motion, lambda {lam:g}", float(lam)) for lam in map(float, args.lambdas.split(","))]
    dense = engine.clone(mode="dense")
    engines = {}
    for name, lam in settings:
        e = engine.clone()
        if lam is not None:
            e.set_region("motion", lam=lam)
        engines[name] = e
    acc = {n: [] for n, _ in settings}
    agree = {n: [] for n, _ in settings}
    mse = {n: [] for n, _ in settings}
    macs = {n: 0 for n, _ in settings}
    dense_macs = 0
    t0 = time.time()
    for path, label in videos:
        clip = read_clip(path, args.frames, stride, (h, w))
        ref, _ = dense.run(clip)
        dense.reset()
        dense_macs += int(engine.dense_macs.sum()) * (len(clip) - 1)
        for name, e in engines.items():
            logits, stats = e.run(clip)
            e.reset()  # keeps the region; the motion prior restarts from the next frame
            acc[name].append(int(logits.mean(0).argmax() == label))
            agree[name].append(float(np.mean(logits.argmax(1) == ref.argmax(1))))
            mse[name].append(float(np.mean((logits - ref) ** 2)))
            macs[name] += sum(s.macs for s in stats[1:])
    rows = []
    for name, _ in settings:
        rows.append({
            "setting": name, "clip_accuracy": float(np.mean(acc[name])), "mac_density": macs[name] / dense_macs,
            "frame_top1_agreement": float(np.mean(agree[name])), "logit_mse": float(np.mean(mse[name])),
        })
    print(f"{len(videos)} validation videos x {args.frames} frames (stride {stride}), {time.time() - t0:.0f} s")
    print("| setting | clip accuracy | MAC density | frame top-1 agreement with dense | logit MSE vs dense |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['setting']} | {r['clip_accuracy']:.3f} | {r['mac_density']:.4f} | {r['frame_top1_agreement']:.3f} | {r['logit_mse']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
