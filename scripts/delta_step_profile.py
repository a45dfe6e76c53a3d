"""Where the delta model's extra training-step time goes: its DeltaActivation layers stripped part by part.

    python scripts/delta_step_profile.py [--steps 10] [--frames 4] [--size 112] [--batch 8]

Builds the default delta model several times, each with ``DeltaActivation.call`` cut down to
one more part of its work (the variants below), plus the baseline, and times
``train_on_batch`` on one random batch, alternating the models so that all see the same load.
The variants change what is computed (they are a profile, not a model): ``identity`` is the
cost of having the layers at all; ``forward_only`` .. ``fused+penalty`` add the parts of the
backend-neutral ``keras.ops`` pass one at a time; ``fast`` and ``fast+penalty`` the same with
TensorFlow's numba fast path (``deltanet.threshold_clip_tf``); ``full`` is the layer as it is
(in a TensorFlow training step: the fast path, the penalty and the density counters).
Prints median ms per step.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]


def _variants():
    from keras import ops

    from deltanet import delta_activation as da

    def identity(self, inputs, training=None):
        return ops.cast(ops.cast(inputs, "float32"), self.compute_dtype)

    def forward_only(self, inputs, training=None):  # the threshold recursion, stop_gradient around it
        x = ops.cast(inputs, "float32")
        y, *_ = da._threshold_clip(ops.stop_gradient(x), ops.cast(self.threshold, "float32"))
        return ops.cast(x + ops.stop_gradient(y - x), self.compute_dtype)

    def fused(self, inputs, training=None):  # + the hand-written gradient, no penalty, no counters
        y, *_ = da._threshold_clip(ops.cast(inputs, "float32"), ops.cast(self.threshold, "float32"))
        return ops.cast(y, self.compute_dtype)

    def fused_penalty(self, inputs, training=None):  # + the penalty (add_loss)
        y, l1, l2, nonzero, count, _ = da._threshold_clip(ops.cast(inputs, "float32"), ops.cast(self.threshold, "float32"))
        if training:
            self.add_loss(self._penalty(l1, l2, count))
        return ops.cast(y, self.compute_dtype)

    def fast(self, inputs, training=None):  # the TensorFlow fast path, no penalty, no counters
        from deltanet.threshold_clip_tf import threshold_clip_tf

        y, *_ = threshold_clip_tf(ops.cast(inputs, "float32"), ops.cast(self.threshold, "float32"))
        return ops.cast(y, self.compute_dtype)

    def fast_penalty(self, inputs, training=None):  # + the penalty
        from deltanet.threshold_clip_tf import threshold_clip_tf

        y, l1, l2, nonzero, count, _ = threshold_clip_tf(ops.cast(inputs, "float32"), ops.cast(self.threshold, "float32"))
        if training:
            self.add_loss(self._penalty(l1, l2, count))
        return ops.cast(y, self.compute_dtype)

    return {
        "identity": identity,
        "forward_only": forward_only,
        "fused": fused,
        "fused+penalty": fused_penalty,
        "fast": fast,
        "fast+penalty": fast_penalty,
        "full": da.DeltaActivation.call,  # the layer: fast path + penalty + density counters
    }


def main() -> None:
    from step_time import compiled_model, random_batch, step_arguments, time_alternating

    p = step_arguments(__doc__.splitlines()[0])
    p.set_defaults(steps=10)
    args = p.parse_args()

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    from deltanet.delta_activation import DeltaActivation

    x, y = random_batch(args)
    original = DeltaActivation.call
    models = {}
    for name, call in [("baseline", None), *_variants().items()]:
        m = compiled_model(args, baseline=call is None)
        DeltaActivation.call = call or original
        try:
            for _ in range(3):  # the first call traces the step with this variant's call
                m.train_on_batch(x, y)
        finally:
            DeltaActivation.call = original
        models[name] = m
        print(f"built {name}", file=sys.stderr)
    time_alternating(models, x, y, args.steps)


if __name__ == "__main__":
    main()
