"""Where an epoch of ``training.fit`` spends its time: training batches, the gap before validation, validation,
the checkpoint. Diagnostic for the ~10 s epochs of issue #15 (docs/STATUS.md, session 8).

    python scripts/epoch_gaps.py [training.fit arguments]   # default: --epochs 6 --out <a temporary folder>

Prints one JSON line per epoch on stderr. If more than 4 s pass after a training batch without another batch or validation starting
(the first epoch's tracing included), every thread's stack at that moment is printed (``py-spy dump --native`` if installed, else ``faulthandler``): where the gap is spent.
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.fit as fit  # noqa: E402

GAP_DUMP_S = 4
_timer: threading.Timer | None = None


def _dump_stacks() -> None:
    """Every thread's stack: native frames too (TensorFlow's C++) when ``py-spy`` is installed."""
    spy = shutil.which("py-spy")
    if spy:
        r = subprocess.run([spy, "dump", "--native", "--pid", str(os.getpid())], capture_output=True, text=True)
        print(r.stdout + r.stderr, file=sys.stderr, flush=True)
    else:
        faulthandler.dump_traceback(all_threads=True)


def _arm() -> None:
    global _timer
    _disarm()
    _timer = threading.Timer(GAP_DUMP_S, _dump_stacks)
    _timer.daemon = True
    _timer.start()


def _disarm() -> None:
    if _timer is not None:
        _timer.cancel()


_checkpoint_callback = fit._checkpoint_callback


def _timed_checkpoint_callback(ckpt_dir, cfg):
    """fit's checkpoint callback wrapped in one that times each part of the epoch."""
    import keras

    inner = _checkpoint_callback(ckpt_dir, cfg)

    class EpochTiming(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            inner.set_model(model)

        def on_epoch_begin(self, epoch, logs=None):
            self.start = self.last = time.perf_counter()
            self.batches = []
            self.val_start = self.val_end = None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.batches.append(now - self.last)
            self.last = now
            _arm()  # re-armed by every batch: fires on a stall

        def on_test_begin(self, logs=None):
            _disarm()
            self.val_start = time.perf_counter()

        def on_test_end(self, logs=None):
            self.val_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            _disarm()
            t = time.perf_counter()
            inner.on_epoch_end(epoch, logs)
            ckpt = time.perf_counter() - t
            b = sorted(self.batches)
            row = dict(
                epoch=epoch, total_s=time.perf_counter() - self.start, train_s=sum(self.batches),
                first_batch_s=self.batches[0], median_batch_s=b[len(b) // 2], max_batch_s=b[-1],
                gap_train_to_val_s=(self.val_start - self.last) if self.val_start else None,
                val_s=(self.val_end - self.val_start) if self.val_start else None, checkpoint_s=ckpt,
            )  # fmt: skip
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), file=sys.stderr, flush=True)

    return EpochTiming()


def main(argv: list[str]) -> None:
    fit._checkpoint_callback = _timed_checkpoint_callback
    defaults = ["--epochs", "6"] + ([] if "--out" in argv else ["--out", tempfile.mkdtemp(prefix="epoch_gaps_")])
    sys.exit(fit.main(defaults + argv))


if __name__ == "__main__":
    main(sys.argv[1:])
