"""Epoch time of the default ``training.fit`` with and without the frame cache, side by side.

    python scripts/epoch_ab.py [--rounds 2] [--baseline] [--steps N]

One model (built and compiled as ``training.fit`` builds it), one process; after a warm-up
epoch on each, it alternates full training epochs (fit's callbacks and validation) on the
two training pipelines, decoded every epoch (``--frame-cache off``, the old pipeline) and
sampled from the frame cache (``on``), so both see the same machine load. Prints the median
epoch seconds of each and their ratio, and one JSON line on stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="timed epochs per pipeline (after one warm-up each)")
    p.add_argument("--baseline", action="store_true", help="the model without delta layers")
    p.add_argument("--steps", type=int, default=None, help="train on the first N batches of each epoch only (a smoke test)")
    args = p.parse_args()

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import numpy as np

    from training import fit

    out = Path(tempfile.mkdtemp(prefix="epoch_ab_"))
    datasets = {}
    for mode in ("off", "on"):
        cfg = fit.FitConfig(baseline=args.baseline, out=str(out), frame_cache=mode)
        t0 = time.perf_counter()
        index, train_ds, val_ds, _ = fit.load_data(cfg)
        datasets[mode] = train_ds.take(args.steps) if args.steps else train_ds
        print(f"data setup ({mode}): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    keras.utils.set_random_seed(cfg.seed)
    model = fit.build(cfg, index.class_names)
    steps = args.steps or int(np.ceil(len(index.train) / cfg.batch_size))
    fit.compile_model(model, cfg, steps)
    callbacks = [fit._checkpoint_callback(out / "checkpoint", cfg), fit._density_callback()]
    times: dict[str, list[float]] = {k: [] for k in datasets}
    for r in range(args.rounds + 1):
        for mode, ds in datasets.items():
            t0 = time.perf_counter()
            model.fit(ds, validation_data=val_ds, epochs=1, callbacks=callbacks, verbose=0)
            if r:  # round 0 traces and fills the validation cache
                times[mode].append(time.perf_counter() - t0)
            print(f"round {r} frame_cache={mode}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median epoch: decoded {med['off']:.1f} s, frame cache {med['on']:.1f} s, "
          f"ratio {med['off'] / med['on']:.2f}x ({steps} steps)", file=sys.stderr)
    print(json.dumps({"baseline": args.baseline, "steps": steps, "epoch_s": times,
                      "ratio_off_over_on": round(med["off"] / med["on"], 3)}))


if __name__ == "__main__":
    main()
