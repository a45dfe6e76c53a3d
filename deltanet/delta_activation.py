"""``DeltaActivation``: the layer that decides what a delta runtime transmits at each frame."""

from __future__ import annotations

import keras
from keras import ops

from deltanet.constraints import MinValue

MODES = ("threshold", "quantize")


def quantize_frame(x, step):
    """One frame of ``mode="quantize"``: ``step * round(x / step)`` (round half to even)."""
    return ops.round(x / step) * step


def threshold_fire(x, reference, threshold):
    """One frame of ``mode="threshold"``: ``(new reference, fired mask, x - last reference)``."""
    change = x - reference
    fired = ops.greater(ops.abs(change), threshold)
    return ops.where(fired, x, reference), fired, change


def threshold_frame(x, reference, threshold):
    """One frame of ``mode="threshold"``: the new reference (= the output) given the last one."""
    return threshold_fire(x, reference, threshold)[0]


def _straight_through(forward, backward):
    """Value of ``forward``, gradient of ``backward``.

    Written as ``forward + (backward - stop_gradient(backward))`` rather than the usual
    ``backward + stop_gradient(forward - backward)``: ``b - b`` is exactly 0, so the value is
    bit-identical to ``forward``, which the frame-by-frame runtime must reproduce.
    """
    return ops.stop_gradient(forward) + (backward - ops.stop_gradient(backward))


#: Longest known clip length that inference computes with the unrolled pass (``_threshold_clip``);
#: longer clips use the scan. Training always unrolls (its hand-written gradient needs it).
UNROLL_FRAMES = 32


def _threshold_clip(x, theta):
    """Threshold mode over a clip of known length, in one unrolled pass.

    Returns ``(y, sum|d|, sum d^2, non-zero deltas, delta elements, non-zero outputs)``, the
    delta statistics over frames ``t >= 1``, the last over every frame of ``y``.
    ``d_t = r_t - r_{t-1}`` is non-zero exactly where the element fired, and equals the fired
    ``x_t - r_{t-1}``. The gradient is written by hand (``keras.ops.custom_gradient``):
    ``y`` passes gradients straight through, and ``sum|d|``/``sum d^2`` send ``sign(d)``/``2d`` to
    ``x_t`` where it fired (pulling ``x_t`` towards what was last sent). Letting autodiff
    differentiate the ``where``/slice/stack chain instead cost about as much as the rest of the
    network's training step (scripts/step_time.py).
    """
    steps = x.shape[1]

    @ops.custom_gradient
    def fused(x, theta):
        reference = ops.zeros_like(x[:, 0])
        refs, deltas = [], []
        for t in range(steps):
            reference, fired, change = threshold_fire(x[:, t], reference, theta)
            refs.append(reference)
            if t:
                deltas.append(ops.where(fired, change, 0.0))
        y = ops.stack(refs, axis=1)
        d = ops.stack(deltas, axis=1)
        stats = (
            ops.sum(ops.abs(d)),
            ops.sum(ops.square(d)),
            ops.cast(ops.count_nonzero(d), "float32"),
            ops.cast(ops.size(d), "float32"),
            ops.cast(ops.count_nonzero(y), "float32"),
        )

        def grad(*args, upstream=None):
            # TF passes one upstream gradient per output, JAX one tuple of them.
            ups = upstream if upstream is not None else (args[0] if len(args) == 1 else args)
            g_y, g_l1, g_l2 = ups[0], ups[1], ups[2]
            g_d = g_l1 * ops.sign(d) + (2.0 * g_l2) * d
            g_x = g_y + ops.concatenate([ops.zeros_like(g_y[:, :1]), g_d], axis=1)
            return g_x, ops.zeros_like(theta)

        return (y, *stats), grad

    return fused(x, theta)


PENALTIES = ("l1", "hoyer")


@keras.saving.register_keras_serializable(package="deltanet")
class DeltaActivation(keras.layers.Layer):
    """Transmit only frame-to-frame changes of activations, and learn to keep them sparse.

    Works on clip tensors ``(batch, time, ...features)`` (time on axis 1, channels last).
    Frame ``t`` produces an output ``y_t`` and a transmitted delta ``d_t = y_t - y_{t-1}``
    (``y_{-1} = 0``), which is exactly what a frame-by-frame delta runtime sends to the
    next layer. The NumPy reference of both modes is ``tests/naive.py``.

    * ``mode="threshold"`` (delta networks, hysteresis): per element a reference
      ``r_t = where(|x_t - r_{t-1}| > theta, x_t, r_{t-1})``, ``r_{-1} = 0``; ``y_t = r_t``.
      The output never drifts: ``|y_t - x_t| <= theta`` at every frame. ``theta`` is a
      per-channel (or per-layer) non-trainable weight, set at construction or by calibration.
      Gradients pass straight through (``dy/dx = 1``).
    * ``mode="quantize"`` (Yousefzadeh & Sifalakis, arXiv 2107.07305):
      ``y_t = q * round(x_t / q)`` (round half to even) with a trainable positive step ``q``.
      ``round`` has a straight-through gradient, so the task loss sees LSQ's step gradient
      ``round(x/q) - x/q``; the delta penalty is computed on the number of quanta that
      changed times a constant ``q``, whose gradient w.r.t. ``q`` is negative: the penalty
      *grows* the step (more zero deltas), the task loss pulls it back.

    In training only, the layer adds the penalty
    ``penalty_weight * cost_per_nonzero * mean(|d_t|)`` over frames ``t >= 1`` (``penalty="l1"``),
    or ``penalty_weight * cost_per_nonzero * (sum|d|)^2 / (n * sum d^2)`` (``penalty="hoyer"``,
    the Hoyer-square measure divided by the element count ``n``: scale-invariant, in ``[1/n, 1]``).
    ``cost_per_nonzero`` is the number of MACs one non-zero input of this layer costs
    downstream, so the summed penalties approximate executed MACs.

    The layer also measures itself: ``temporal_density`` (fraction of non-zero ``d_t``,
    ``t >= 1``) and ``spatial_density`` (fraction of non-zero ``y_t``), averaged over the
    batches seen since ``reset_density()``; see ``deltanet.density`` for the definitions.

    The arithmetic runs in float32 whatever the dtype policy (a step or threshold of 1e-2
    means little in float16), and the output is cast back to the compute dtype.

    Args:
        mode: ``"threshold"`` or ``"quantize"``. Defaults to ``"threshold"``.
        threshold: initial ``theta`` for threshold mode, ``>= 0``. Defaults to ``0.1``.
        step: initial ``q`` for quantize mode, ``> 0``. Defaults to ``0.05``.
        per_channel: one ``theta``/``q`` per channel (last axis) instead of one per layer.
            Defaults to ``True``.
        learn_step: train ``q`` in quantize mode. Defaults to ``True``.
        penalty_weight: weight of the sparsity penalty (a non-trainable variable, so
            schedules can change it during ``fit``). Defaults to ``0.0``.
        cost_per_nonzero: downstream MACs per non-zero input element. Defaults to ``1.0``.
        penalty: ``"l1"`` or ``"hoyer"``. Defaults to ``"l1"``.
        min_step: lower bound on ``q``. Defaults to ``1e-4``.
        **kwargs: base ``Layer`` arguments (``name``, ``dtype``, ...).

    Input shape:
        ``(batch, time, ...features)``, rank >= 3.

    Output shape:
        Same as the input.

    Example:

    >>> layer = DeltaActivation(mode="threshold", threshold=0.5)
    >>> x = np.array([[[0.0], [0.3], [0.7], [0.8]]], "float32")  # (batch=1, time=4, 1)
    >>> np.asarray(layer(x))[0, :, 0].tolist()
    [0.0, 0.0, 0.699999988079071, 0.699999988079071]
    """

    def __init__(
        self,
        mode: str = "threshold",
        threshold: float = 0.1,
        step: float = 0.05,
        per_channel: bool = True,
        learn_step: bool = True,
        penalty_weight: float = 0.0,
        cost_per_nonzero: float = 1.0,
        penalty: str = "l1",
        min_step: float = 1e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"DeltaActivation mode must be one of {MODES}, received mode={mode!r}")
        if penalty not in PENALTIES:
            raise ValueError(f"DeltaActivation penalty must be one of {PENALTIES}, received penalty={penalty!r}")
        if not float(threshold) >= 0:
            raise ValueError(f"DeltaActivation threshold must be >= 0, received threshold={threshold!r}")
        if not float(min_step) > 0:
            raise ValueError(f"DeltaActivation min_step must be > 0, received min_step={min_step!r}")
        if not float(step) >= float(min_step):
            raise ValueError(f"DeltaActivation step must be >= min_step={min_step}, received step={step!r}")
        if not float(penalty_weight) >= 0:
            raise ValueError(f"DeltaActivation penalty_weight must be >= 0, received penalty_weight={penalty_weight!r}")
        if not float(cost_per_nonzero) >= 0:
            raise ValueError(
                f"DeltaActivation cost_per_nonzero must be >= 0, received cost_per_nonzero={cost_per_nonzero!r}"
            )
        self.mode = mode
        self.threshold_init = float(threshold)
        self.step_init = float(step)
        self.per_channel = bool(per_channel)
        self.learn_step = bool(learn_step)
        self.penalty_weight_init = float(penalty_weight)
        self.cost_per_nonzero = float(cost_per_nonzero)
        self.penalty = penalty
        self.min_step = float(min_step)
        self.supports_masking = False

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(
                f"DeltaActivation expects clip tensors (batch, time, ...features) of rank >= 3, "
                f"received input_shape={input_shape}"
            )
        channels = input_shape[-1]
        if self.per_channel and channels is None:
            raise ValueError(f"DeltaActivation(per_channel=True) needs a known last axis, received {input_shape}")
        shape = (channels,) if self.per_channel else ()
        if self.mode == "quantize":
            self.step = self.add_weight(
                name="step",
                shape=shape,
                initializer=keras.initializers.Constant(self.step_init),
                constraint=MinValue(self.min_step),
                trainable=self.learn_step,
                dtype="float32",
            )
        else:
            self.threshold = self.add_weight(
                name="threshold",
                shape=shape,
                initializer=keras.initializers.Constant(self.threshold_init),
                trainable=False,
                dtype="float32",
            )
        self.penalty_weight = self.add_weight(
            name="penalty_weight",
            shape=(),
            initializer=keras.initializers.Constant(self.penalty_weight_init),
            trainable=False,
            dtype="float32",
        )
        # Running sums of per-batch densities; read through `temporal_density`/`spatial_density`.
        for name in ("temporal_density_sum", "spatial_density_sum", "density_batches"):
            setattr(
                self,
                name,
                self.add_weight(name=name, shape=(), initializer="zeros", trainable=False, dtype="float32", aggregation="mean"),
            )

    # --- the two modes -------------------------------------------------------------------------

    def _quantize(self, x):
        q = ops.cast(self.step, "float32")  # variables autocast to float16 under mixed precision
        n = x / q
        n_hard = _straight_through(ops.round(n), n)
        y = n_hard * q
        # Quanta changed between frames, times a constant q: the value is |d_t|, the gradient
        # w.r.t. q is -|x_t - x_{t-1}| / q <= 0, so the penalty grows the step.
        d = ops.stop_gradient(q) * (n_hard[:, 1:] - n_hard[:, :-1])
        return y, d

    def _threshold(self, x):
        theta = ops.cast(self.threshold, "float32")
        frames = ops.moveaxis(ops.stop_gradient(x), 1, 0)

        def advance(reference, frame):
            reference = threshold_frame(frame, reference, theta)
            return reference, reference

        _, refs = ops.scan(advance, ops.zeros_like(frames[0]), frames)
        r = ops.moveaxis(refs, 0, 1)
        y = _straight_through(r, x)
        # Fired deltas x_t - r_{t-1}: the value is d_t, the gradient pulls x_t towards what was
        # last sent.
        fired = ops.not_equal(r[:, 1:], r[:, :-1])
        d = ops.where(fired, x[:, 1:] - ops.stop_gradient(r[:, :-1]), ops.zeros_like(x[:, 1:]))
        return y, d

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        steps = x.shape[1]
        if self.mode == "threshold" and steps is not None and steps >= 2 and (training or steps <= UNROLL_FRAMES):
            # Known clip length (training, fixed-length clips): one fused pass; in TensorFlow
            # CPU training steps the same pass as two numba kernels (tf.numpy_function needs
            # Python at run time, so inference graphs and exports keep the keras.ops version).
            # Inference on a long clip takes the scan instead: the unrolled pass builds a graph
            # that grows with the clip (model.predict on one 500-frame clip of a tiny model
            # spent 82 s building it, under 5 s with the scan; same values, tested).
            clip = _threshold_clip
            if training and keras.backend.backend() == "tensorflow":
                from deltanet import threshold_clip_tf

                if threshold_clip_tf.applies():
                    clip = threshold_clip_tf.threshold_clip_tf
            y, l1, l2, nonzero, count, nonzero_y = clip(x, ops.cast(self.threshold, "float32"))
        else:
            y, d = self._quantize(x) if self.mode == "quantize" else self._threshold(x)
            l1, l2 = ops.sum(ops.abs(d)), ops.sum(ops.square(d))
            nonzero = ops.cast(ops.count_nonzero(d), "float32")
            count = ops.cast(ops.size(d), "float32")
            nonzero_y = None
        if training:
            self.add_loss(self._penalty(l1, l2, count))
        self._update_density(y, nonzero, count, nonzero_y)
        return ops.cast(y, self.compute_dtype)

    def _penalty(self, l1, l2, count):
        """``l1 = sum|d|``, ``l2 = sum d^2`` and ``count`` = number of delta elements."""
        if self.penalty == "hoyer":
            measure = ops.square(l1) / (count * l2 + 1e-12)
        else:
            measure = l1 / ops.maximum(count, 1.0)
        return ops.cast(self.penalty_weight, "float32") * self.cost_per_nonzero * measure

    def _update_density(self, y, nonzero, count, nonzero_y=None):
        # Same definitions as deltanet.density (tested against it). Frames t >= 1 only.
        # ``nonzero_y``: the non-zero outputs if the fused pass counted them already.
        if y.shape[1] is not None and y.shape[1] < 2:
            return
        if nonzero_y is None:
            nonzero_y = ops.cast(ops.count_nonzero(y), "float32")
        spatial = nonzero_y / ops.cast(ops.size(y), "float32")
        temporal = nonzero / ops.maximum(count, 1.0)
        self.temporal_density_sum.assign_add(temporal)
        self.spatial_density_sum.assign_add(spatial)
        # Data-dependent on purpose: TF also runs a constant increment in the step that hits
        # the end of a dataset of unknown length, counting one batch too many.
        self.density_batches.assign_add(ops.cast(ops.greater(ops.size(y), 0), "float32"))

    # --- measurements ------------------------------------------------------------------------

    @property
    def temporal_density(self) -> float:
        """Mean fraction of non-zero deltas (frames ``t >= 1``) since ``reset_density()``."""
        n = float(ops.convert_to_numpy(self.density_batches))
        return float(ops.convert_to_numpy(self.temporal_density_sum)) / n if n else float("nan")

    @property
    def spatial_density(self) -> float:
        """Mean fraction of non-zero outputs since ``reset_density()``."""
        n = float(ops.convert_to_numpy(self.density_batches))
        return float(ops.convert_to_numpy(self.spatial_density_sum)) / n if n else float("nan")

    def reset_density(self) -> None:
        for v in (self.temporal_density_sum, self.spatial_density_sum, self.density_batches):
            v.assign(0.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "threshold": self.threshold_init,
                "step": self.step_init,
                "per_channel": self.per_channel,
                "learn_step": self.learn_step,
                "penalty_weight": self.penalty_weight_init,
                "cost_per_nonzero": self.cost_per_nonzero,
                "penalty": self.penalty,
                "min_step": self.min_step,
            }
        )
        return config
