"""How far apart two float32 runs of the *same* Keras delta model are on a real video.

    python scripts/keras_vs_keras.py --model runs/headline2/delta/model.keras --source ../shared/data/box.mp4 [--frames 300]

Runs the clip model's per-frame logits (as ``streaming.bench`` does for its exactness check)
twice in child processes, with TensorFlow's oneDNN convolutions on and off
(``TF_ENABLE_ONEDNN_OPTS=1`` / ``0``: two valid float32 summation orders), and prints the
same statistics the bench prints for the delta engine against Keras: max relative logit
error, frames over 1e-4, the first such frame, top-1 agreement. A thresholded delta model
amplifies last-bit differences (an element on the other side of its threshold stays off by
up to theta until it fires again), so this is the floor for any float32 implementation.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _child(model: str, source: str, frames: int, out: str) -> None:
    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import deltanet
    from streaming.bench import read_frames

    clip_model = deltanet.load_model(model)
    shape = clip_model.input_shape[2:4]
    clip = read_frames(source, frames, shape)
    logits = deltanet.frame_logits_model(clip_model).predict(clip[None].astype(np.float32), verbose=0, batch_size=1)[0]
    np.save(out, logits)


def main() -> None:
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.model, args.source, args.frames, args.child)
        return
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flag in ("1", "0"):
            out = os.path.join(tmp, f"onednn{flag}.npy")
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=flag)
            subprocess.run([sys.executable, __file__, "--model", args.model, "--source", args.source,
                            "--frames", str(args.frames), "--child", out], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runs[flag] = np.load(out)
    a, b = runs["1"], runs["0"]
    rel = np.abs(a - b).max(axis=1) / np.maximum(np.abs(a).max(axis=1), 1e-30)
    over = rel > 1e-4
    print(f"{len(a)} frames: Keras (oneDNN on) vs Keras (oneDNN off): max_rel_logit_error {rel.max():.3g}, "
          f"frames_over_1e-4 {int(over.sum())}, first_frame_over_1e-4 {int(np.argmax(over)) if over.any() else None}, "
          f"top1_agreement {float(np.mean(a.argmax(1) == b.argmax(1))):.3f}")


if __name__ == "__main__":
    main()
