"""Where the delta model's extra training-step time goes: its DeltaActivation layers stripped part by part.

    python scripts/delta_step_profile.py [--steps 10] [--frames 4] [--size 112] [--batch 8] [--trace]

Builds the default delta model several times, each with ``DeltaActivation.call`` cut down to
one more part of its work (the variants below), plus the baseline, and times
``train_on_batch`` on one random batch, alternating the models so that all see the same load.
The variants change what is computed (they are a profile, not a model): ``identity`` is the
cost of having the layers at all; ``pyfunc_only`` that of the fast path's two
``numpy_function`` calls per layer with no kernel in them (outputs from its pool, unwritten); ``forward_only`` .. ``fused+penalty`` add the parts of the
backend-neutral ``keras.ops`` pass one at a time; ``fast`` and ``fast+penalty`` the same with
TensorFlow's numba fast path (``deltanet.threshold_clip_tf``); ``full`` is the layer as it is
(in a TensorFlow training step: the fast path, the penalty and the density counters).
Prints median ms per step. ``--trace`` instead traces ``--steps`` steps of the baseline and of
the delta model with TensorFlow's profiler and prints, per op type, the executor threads'
milliseconds per step in each and the difference (largest first): where the delta step's
extra time is spent, ``numpy_function`` calls (``PyFunc``) included.
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

    def pyfunc_only(self, inputs, training=None):  # the fast path's two numpy_function calls, no kernels
        import tensorflow as tf

        from deltanet import threshold_clip_tf as T

        x = ops.cast(inputs, "float32")

        @tf.custom_gradient
        def passthrough(x):
            # arrays from the fast path's pool, left unwritten: what TensorFlow's numpy_function
            # machinery costs at these sizes (conversions, scheduling, the arrays' memory) without any kernel
            y = tf.numpy_function(lambda a: T._outputs.take(a.shape), [x], tf.float32, stateful=False)
            y.set_shape(x.shape)

            def grad(g):
                g_x = tf.numpy_function(lambda a: T._outputs.take(a.shape), [g], tf.float32, stateful=False)
                g_x.set_shape(x.shape)
                return g_x

            return y, grad

        return ops.cast(passthrough(x), self.compute_dtype)

    return {
        "identity": identity,
        "pyfunc_only": pyfunc_only,
        "forward_only": forward_only,
        "fused": fused,
        "fused+penalty": fused_penalty,
        "fast": fast,
        "fast+penalty": fast_penalty,
        "full": da.DeltaActivation.call,  # the layer: fast path + penalty + density counters
    }


def _op_type_ms(logdir: str, steps: int) -> dict[str, float]:
    """Milliseconds per step that TensorFlow's executor threads spent in each op type."""
    import collections

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    ms = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name in ("ExecutorState::Process", "ParallelFor"):  # containers of the ops
                    continue
                node, _, op = name.rpartition(":")
                kernel = next((k for k in ("threshold_clip_forward", "threshold_clip_backward") if k in node), None)
                ms[f"{op} ({kernel})" if kernel else op] += event.duration_ps / 1e9 / steps
    return ms


def trace(models: dict, x, y, steps: int) -> None:
    """Print the op types whose time differs most between the baseline and the delta model."""
    import tempfile

    import tensorflow as tf

    per_model = {}
    for name, m in models.items():
        with tempfile.TemporaryDirectory() as logdir:
            tf.profiler.experimental.start(logdir)
            for _ in range(steps):
                m.train_on_batch(x, y)
            tf.profiler.experimental.stop()
            per_model[name] = _op_type_ms(logdir, steps)
    base, delta = per_model["baseline"], per_model["full"]
    print(f"{'op type':48s} {'baseline':>9s} {'delta':>9s} {'extra':>9s}  (thread ms per step)")
    for op in sorted(set(base) | set(delta), key=lambda k: base.get(k, 0) - delta.get(k, 0))[:25]:
        print(f"{op[:48]:48s} {base.get(op, 0):9.2f} {delta.get(op, 0):9.2f} {delta.get(op, 0) - base.get(op, 0):9.2f}")
    print(f"{'all ops':48s} {sum(base.values()):9.2f} {sum(delta.values()):9.2f} {sum(delta.values()) - sum(base.values()):9.2f}")


def main() -> None:
    from step_time import compiled_model, random_batch, step_arguments, time_alternating

    p = step_arguments(__doc__.splitlines()[0])
    p.set_defaults(steps=10)
    p.add_argument("--trace", action="store_true", help="trace the baseline and the delta model per op type (default: off)")
    args = p.parse_args()

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    from deltanet.delta_activation import DeltaActivation

    x, y = random_batch(args)
    original = DeltaActivation.call
    models = {}
    variants = {"full": original} if args.trace else _variants()
    for name, call in [("baseline", None), *variants.items()]:
        m = compiled_model(args, baseline=call is None)
        DeltaActivation.call = call or original
        try:
            for _ in range(3):  # the first call traces the step with this variant's call
                m.train_on_batch(x, y)
        finally:
            DeltaActivation.call = original
        models[name] = m
        print(f"built {name}", file=sys.stderr)
    (trace if args.trace else time_alternating)(models, x, y, args.steps)


if __name__ == "__main__":
    main()
