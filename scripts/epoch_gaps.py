"""Where an epoch of ``training.fit`` spends its time: training batches, the gap before validation, validation,
the checkpoint. Diagnostic for the ~10 s epochs of issue #15 (docs/STATUS.md, session 8).

    python scripts/epoch_gaps.py [training.fit arguments]   # default: --epochs 6 --out <a temporary folder>

Prints one JSON line per epoch on stderr. If more than 4 s pass after a training batch without another batch or validation starting
(the first epoch's tracing included), ``faulthandler`` prints every thread's Python stack at that moment (where the gap is spent).
"""

from __future__ import annotations

import faulthandler
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.fit as fit  # noqa: E402

GAP_DUMP_S = 4
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
            faulthandler.dump_traceback_later(GAP_DUMP_S, repeat=False)  # re-armed by every batch: fires on a stall

        def on_test_begin(self, logs=None):
            faulthandler.cancel_dump_traceback_later()
            self.val_start = time.perf_counter()

        def on_test_end(self, logs=None):
            self.val_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            faulthandler.cancel_dump_traceback_later()
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
