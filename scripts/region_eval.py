"""Region-weighted thresholds in the runtime, measured on labelled videos.

    python scripts/region_eval.py --model runs/headline2/delta/model.keras [--videos 280] [--frames 16]
        [--lambdas 2,4,9] [--match] [--json OUT]

Runs the delta engine over the first ``--frames`` frames (at the model's stride) of each
validation video of the embedded dataset: plain thresholds, then ``set_region("motion", lam)``
for each lambda, and the same engine in dense mode as the reference. ``--match`` also runs
each lambda with a global threshold gain (``set_region(..., gain=g)``) found by bisection so
that its MAC density equals the plain engine's on the first ``--match-videos`` videos: the
region at equal cost. Reports per setting: clip accuracy (mean of per-frame logits), MAC
density (executed / dense, frames t >= 1), per-frame top-1 agreement and logit MSE against
the dense network.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def evaluate(engine, clips, refs, labels) -> dict:
    acc, agree, mse, macs, dense = [], [], [], 0, 0
    for clip, ref, label in zip(clips, refs, labels):
        engine.reset()  # keeps the region; the motion prior restarts from the next frame
        logits, stats = engine.run(clip)
        acc.append(int(logits.mean(0).argmax() == label))
        agree.append(float(np.mean(logits.argmax(1) == ref.argmax(1))))
        mse.append(float(np.mean((logits - ref) ** 2)))
        macs += sum(s.macs for s in stats[1:])
        dense += int(engine.dense_macs.sum()) * (len(clip) - 1)
    return {"clip_accuracy": float(np.mean(acc)), "mac_density": macs / dense,
            "frame_top1_agreement": float(np.mean(agree)), "logit_mse": float(np.mean(mse))}


def main() -> None:
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--videos", type=int, default=280)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--lambdas", default="2,4,9")
    p.add_argument("--match", action="store_true", help="also each lambda at the plain engine's MAC density")
    p.add_argument("--match-videos", type=int, default=40)
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
    t0 = time.time()
    clips = [read_clip(path, args.frames, stride, (h, w)) for path, _ in videos]
    labels = [label for _, label in videos]
    dense = engine.clone(mode="dense")
    refs = []
    for clip in clips:
        dense.reset()
        refs.append(dense.run(clip)[0])

    rows = [{"setting": "plain", **evaluate(engine.clone(), clips, refs, labels)}]
    k = args.match_videos
    plain_sub = evaluate(engine.clone(), clips[:k], refs[:k], labels[:k])["mac_density"]
    for lam in (float(v) for v in args.lambdas.split(",")):
        e = engine.clone()
        e.set_region("motion", lam=lam)
        rows.append({"setting": f"motion, lambda {lam:g}", **evaluate(e, clips, refs, labels)})
        if not args.match:
            continue
        lo, hi = 1.0, 1.0 + lam  # gain 1 + lam is at least as sparse as plain everywhere
        for _ in range(8):  # bisection on the gain: density falls as the gain rises
            g = (lo * hi) ** 0.5
            e.set_region("motion", lam=lam, gain=g)
            if evaluate(e, clips[:k], refs[:k], labels[:k])["mac_density"] > plain_sub:
                lo = g
            else:
                hi = g
        e.set_region("motion", lam=lam, gain=hi)
        rows.append({"setting": f"motion, lambda {lam:g}, gain {hi:.3g} (matched)", **evaluate(e, clips, refs, labels)})
    print(f"{len(videos)} validation videos x {args.frames} frames (stride {stride}), {time.time() - t0:.0f} s")
    print("| setting | clip accuracy | MAC density | frame top-1 agreement with dense | logit MSE vs dense |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['setting']} | {r['clip_accuracy']:.3f} | {r['mac_density']:.4f} | {r['frame_top1_agreement']:.3f} | {r['logit_mse']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
