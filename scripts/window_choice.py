"""Choose the streaming prediction window on the validation split (never on test).

    python scripts/window_choice.py --model /work/models/seed-0.keras --windows 1,2,4,7,8,12,16,32

Streams every val video once through the engine and the dense per-frame Keras network
(``training.evaluate.stream_video``), then scores the live smoothing
(``streaming.prediction``) for each window: accuracy at the last frame and mean over frames.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    from deltanet.cli import ArgumentParser, import_tensorflow_quietly

    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="clip model (.keras); repeat for several")
    p.add_argument("--windows", default="1,2,4,7,8,12,16,32", help="comma-separated windows")
    p.add_argument("--subset", choices=("val",), default="val", help="only val: choices are never made on test")
    args = p.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    import_tensorflow_quietly()
    import deltanet
    from streaming.engine import DeltaEngine
    from training.evaluate import _embedded, predict, stream_video, summarize_streams
    from training.ucf101 import load_dataset_index
    from training.video import read_video

    index = load_dataset_index(str(_embedded()))
    print("| model | window | delta last | delta mean | dense last | dense mean |\n| --- | --- | --- | --- | --- | --- |")
    for path in args.model:
        model = deltanet.load_model(path)
        engine = DeltaEngine.from_keras(model)
        dense = deltanet.per_frame_model(model)
        results = [stream_video(engine, dense, read_video(v), label) for v, label in index.val]
        for w in windows:
            s, d, _, _ = summarize_streams(predict(results, w), engine, [])
            print(f"| {Path(path).name} | {w} | {s['accuracy_last_frame']:.3f} | {s['accuracy_mean']:.3f} | "
                  f"{d['accuracy_last_frame']:.3f} | {d['accuracy_mean']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
