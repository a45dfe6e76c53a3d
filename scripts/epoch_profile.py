"""Where one epoch of the default ``python -m training.fit`` goes, phase by phase, in one process.

    python scripts/epoch_profile.py [--baseline] [--epochs 2] [--frame-cache on|off]

Builds exactly what ``training.fit`` builds (``load_data``, ``build``, ``compile_model``,
its callbacks) and times, side by side under the same machine load:

* ``pipeline_decoded`` / ``pipeline_cached``: one pass over the training dataset with no
  model, decoding every clip from its file (``--frame-cache off``) / sampling it from the
  frame cache (``on``);
* ``step``: ``train_on_batch`` on one fixed batch, once per training batch (the pure step,
  what ``scripts/step_time.py`` measures);
* ``fit_epoch``: ``model.fit`` for one epoch with fit's callbacks and validation, the last
  of ``--epochs`` (the first one traces and compiles);
* ``validation``: ``model.evaluate`` on the validation clips; ``checkpoint``: one
  ``model.save`` as the epoch checkpoint does; ``density_read``: reading the density counters.

Prints wall and CPU seconds (all threads of this process) per phase and each as a fraction
of ``fit_epoch``. The machine is shared: only the ratios inside one run mean anything, and
CPU seconds say more than wall seconds on a loaded machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every thread of this process) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    from deltanet.cli import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", action="store_true", help="profile the model without delta layers")
    p.add_argument("--epochs", type=int, default=2, help="fit epochs; the last one is timed")
    p.add_argument("--frame-cache", default="on", choices=("on", "off"), help="the pipeline fit_epoch trains on")
    args = p.parse_args()

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import numpy as np

    from training import fit

    out = tempfile.mkdtemp(prefix="epoch_profile_")
    phases: dict[str, tuple[float, float]] = {}
    pipelines = {}
    for mode in ("off", "on"):
        cfg = fit.FitConfig(baseline=args.baseline, out=out, frame_cache=mode)
        t0, c0 = time.perf_counter(), time.process_time()
        index, pipelines[mode], val_ds, _ = fit.load_data(cfg)
        phases[f"data_setup_{mode}"] = (time.perf_counter() - t0, time.process_time() - c0)
    cfg.frame_cache = args.frame_cache
    train_ds = pipelines[args.frame_cache]
    keras.utils.set_random_seed(cfg.seed)
    steps = int(np.ceil(len(index.train) / cfg.batch_size))
    model = fit.build(cfg, index.class_names)
    fit.compile_model(model, cfg, steps)
    x, y = next(iter(train_ds))
    x, y = np.asarray(x), np.asarray(y)
    for _ in range(3):
        model.train_on_batch(x, y)

    for mode, name in (("off", "pipeline_decoded"), ("on", "pipeline_cached")):
        phases[name] = _timed(lambda: [None for _ in pipelines[mode]])
    phases["step"] = _timed(lambda: [model.train_on_batch(x, y) for _ in range(steps)])
    callbacks = [fit._checkpoint_callback(Path(cfg.out) / "checkpoint", cfg), fit._density_callback()]
    t_fit = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            t_fit.append(time.perf_counter() - self.t0)

    model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, callbacks=[*callbacks, EpochTimer()], verbose=0)
    phases["fit_epoch"] = t_fit[-1]  # CPU not measured: the callback sees wall time only
    phases["validation"] = _timed(lambda: model.evaluate(val_ds, verbose=0))
    phases["checkpoint"] = _timed(lambda: fit._atomic_save_model(model, Path(cfg.out) / "probe.keras"))
    density = callbacks[1]
    phases["density_read"] = _timed(density._read) if density._layers() else (0.0, 0.0)
    epoch = phases["fit_epoch"]
    for k, v in phases.items():
        wall, cpu = (v, None) if isinstance(v, float) else v
        cpu_txt = f"cpu {cpu:7.2f} s" if cpu is not None else " " * 13
        print(f"{k:17s} wall {wall:7.2f} s  {cpu_txt}  {wall / epoch:6.1%} of fit_epoch", file=sys.stderr)
    print(json.dumps({"baseline": args.baseline, "steps": steps, "frame_cache": args.frame_cache,
                      **{k: v if isinstance(v, float) else {"wall": round(v[0], 3), "cpu": round(v[1], 3)}
                         for k, v in phases.items()}}))


if __name__ == "__main__":
    main()
