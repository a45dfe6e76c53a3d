"""Sparsity-penalty and threshold schedules for ``fit`` (Keras callbacks).

``PenaltySchedule`` (ProSparse, arXiv 2402.13516, and a depth-progressive variant after
Sigma-MoE-Tiny, arXiv 2512.16248)
    Every ``DeltaActivation``'s ``penalty_weight`` variable is set, before each training
    batch, to ``base * w(t_l)``: ``base`` is the layer's own configured weight
    (``penalty_weight_init``, which ``deltafy`` normalised by the layer's MACs), ``w`` the
    schedule, ``t_l`` the global step seen through the layer's depth delay (below).
    ``w`` is a warm-up at ``warmup_value`` until ``warmup``, then one ramp per stage
    ``(T_i, w_i)``: with ``T_0 = warmup``, ``w_0 = warmup_value``, for
    ``T_{i-1} <= t < T_i``

        ``w_t = w_{i-1} + (w_i - w_{i-1}) * sin(pi/2 * (t - T_{i-1}) / (T_i - T_{i-1}))``

    (``kind="sine"``: quarter-sine ramps that arrive flat at each plateau value;
    ``"linear"`` ramps linearly; ``"step"`` jumps to ``w_i`` at ``T_{i-1}``); after the
    last stage ``w = w_last``. ``PenaltySchedule.constant()`` is ``w = 1``: what training
    does without a schedule.

    Depth-progressive: ``depth_delay = D`` in ``[0, 1)`` makes shallow layers sparsify last.
    Delta layers are ranked by graph order, ``r = 0`` for the first (shallowest), ``1`` for
    the last; a layer's clock starts ``delay = D * (1 - r) * T_end`` steps late and runs
    faster, ``t_l = (t - delay) * T_end / (T_end - delay)``, so every layer reaches the
    final value at ``T_end`` (the last stage's end) and the deepest layer follows ``w``
    itself. ``layer_multipliers`` adds a constant factor per layer name.

``ThresholdShift`` (ProSparse's activation threshold shifting)
    A final short stage that raises the thresholds of threshold-mode delta layers:
    ``theta = theta_base * (1 + shift * u)`` (``relative=True``) or
    ``theta_base + shift * u``, ``u`` going linearly from 0 at ``start`` to 1 at ``end``.
    Quantize-mode layers (their step is trained) are left alone.

Both work on the optimizer's step counter (``model.optimizer.iterations``), so they
continue correctly after ``fit --resume``. :func:`fit_callbacks` builds them from the
values of fit's command-line flags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from deltanet.delta_activation import DeltaActivation

KINDS = ("sine", "linear", "step")


def _delta_layers(model) -> list[DeltaActivation]:
    return [layer for layer in model.layers if isinstance(layer, DeltaActivation)]


def _step_of(model) -> int:
    opt = getattr(model, "optimizer", None)
    if opt is None or not hasattr(opt, "iterations"):
        return 0
    return int(keras.ops.convert_to_numpy(opt.iterations))


class PenaltySchedule(keras.callbacks.Callback):
    """Per-step schedule of every delta layer's sparsity-penalty weight.

    Args:
        stages: ``[(T_1, w_1), (T_2, w_2), ...]``: stage ends (global steps, increasing,
            each ``> warmup``) and the value reached there (multipliers of each layer's base
            weight, ``>= 0``). Empty: the constant ``w = warmup_value``.
        warmup: steps at ``warmup_value`` before the first ramp. Defaults to 0.
        warmup_value: the multiplier during the warm-up. Defaults to 0.
        kind: ``"sine"`` (default), ``"linear"`` or ``"step"``.
        depth_delay: ``D`` in ``[0, 1)``, the depth-progressive delay (0: off).
        layer_multipliers: optional ``{layer name: factor}``.

    Example:

    >>> s = PenaltySchedule([(100, 0.5), (200, 1.0)], warmup=20)
    >>> [round(s(t), 4) for t in (0, 20, 60, 100, 150, 200, 500)]
    [0.0, 0.0, 0.3536, 0.5, 0.8536, 1.0, 1.0]
    """

    def __init__(
        self,
        stages: Sequence[Sequence[float]] = (),
        *,
        warmup: int = 0,
        warmup_value: float = 0.0,
        kind: str = "sine",
        depth_delay: float = 0.0,
        layer_multipliers: Mapping[str, float] | None = None,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.stages = [(int(t), float(w)) for t, w in stages]
        self.warmup = int(warmup)
        self.warmup_value = float(warmup_value)
        self.kind = kind
        self.depth_delay = float(depth_delay)
        self.layer_multipliers = {str(k): float(v) for k, v in (layer_multipliers or {}).items()}
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        if not 0.0 <= self.depth_delay < 1.0:
            raise ValueError(f"depth_delay must be in [0, 1), got {depth_delay}")
        prev = self.warmup
        for t, w in self.stages:
            if t <= prev:
                raise ValueError(f"stage ends must increase and exceed the warm-up ({self.warmup}), got {self.stages}")
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"stage values must be finite and >= 0, got {self.stages}")
            prev = t
        if not (self.warmup_value >= 0 and math.isfinite(self.warmup_value)):
            raise ValueError(f"warmup_value must be finite and >= 0, got {warmup_value}")
        if any(not (v >= 0 and math.isfinite(v)) for v in self.layer_multipliers.values()):
            raise ValueError("layer_multipliers must be finite and >= 0")

    @classmethod
    def constant(cls, value: float = 1.0) -> "PenaltySchedule":
        """``w = value`` at every step (``value=1``: each layer keeps its configured weight)."""
        return cls((), warmup=0, warmup_value=value)

    @property
    def end(self) -> int:
        """The last stage's end (the warm-up's end if there are no stages)."""
        return self.stages[-1][0] if self.stages else self.warmup

    def __call__(self, step: float) -> float:
        """The schedule value ``w`` at global step ``step`` (depth and layer factors excluded)."""
        t = float(step)
        if t < self.warmup or not self.stages:
            return self.warmup_value
        t_prev, w_prev = float(self.warmup), self.warmup_value
        for t_end, w in self.stages:
            if t < t_end:
                u = (t - t_prev) / (t_end - t_prev)
                if self.kind == "sine":
                    f = math.sin(math.pi / 2 * u)
                elif self.kind == "linear":
                    f = u
                else:
                    f = 1.0
                return w_prev + (w - w_prev) * f
            t_prev, w_prev = float(t_end), w
        return self.stages[-1][1]

    def layer_step(self, step: float, rank: float) -> float:
        """The step a layer of depth rank ``rank`` (0 shallowest, 1 deepest) sees at ``step``."""
        end = float(self.end)
        delay = self.depth_delay * (1.0 - float(rank)) * end
        if delay <= 0 or end <= 0:
            return float(step)
        if step < delay:
            return -1.0  # before its clock starts: the warm-up value
        return (float(step) - delay) * end / (end - delay)

    def layer_values(self, step: float, names: Sequence[str]) -> dict[str, float]:
        """Multiplier per layer (schedule at the layer's own step, times ``layer_multipliers``);
        ``names`` in graph order (depth rank ``i / (len - 1)``)."""
        n = len(names)
        out = {}
        for i, name in enumerate(names):
            rank = i / (n - 1) if n > 1 else 1.0
            out[name] = self(self.layer_step(step, rank)) * self.layer_multipliers.get(name, 1.0)
        return out

    def apply(self, model, step: int) -> dict[str, float]:
        """Assign every delta layer's ``penalty_weight = base * multiplier``; returns the multipliers."""
        layers = _delta_layers(model)
        values = self.layer_values(step, [la.name for la in layers])
        for layer in layers:
            layer.penalty_weight.assign(layer.penalty_weight_init * values[layer.name])
        return values

    # --- Keras callback hooks ----------------------------------------------------------------

    def on_train_batch_begin(self, batch, logs=None):
        self.apply(self.model, _step_of(self.model))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["penalty_schedule"] = self(_step_of(self.model))

    def get_config(self) -> dict:
        return {
            "stages": [list(s) for s in self.stages],
            "warmup": self.warmup,
            "warmup_value": self.warmup_value,
            "kind": self.kind,
            "depth_delay": self.depth_delay,
            "layer_multipliers": dict(self.layer_multipliers),
        }

    @classmethod
    def from_config(cls, config: dict) -> "PenaltySchedule":
        return cls(**config)


class ThresholdShift(keras.callbacks.Callback):
    """Raise the thresholds of threshold-mode delta layers during a final stage.

    Args:
        shift: ``> 0``; the relative raise (``relative=True``: thresholds end at
            ``(1 + shift)`` times their value) or the absolute one.
        start: global step where the raise begins.
        end: global step where it is complete (``> start``).
        relative: multiplicative (default) or additive.

    The thresholds at ``start`` are the base; after a resume inside the stage the base is
    recovered from the current thresholds by inverting the raise.
    """

    def __init__(self, shift: float, start: int, end: int, *, relative: bool = True):
        super().__init__()
        if not (float(shift) > 0 and math.isfinite(float(shift))):
            raise ValueError(f"shift must be finite and > 0, got {shift!r}")
        if not 0 <= int(start) < int(end):
            raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
        self.shift = float(shift)
        self.start = int(start)
        self.end = int(end)
        self.relative = bool(relative)
        self._base: dict[str, np.ndarray] | None = None
        self._u = 0.0

    def progress(self, step: float) -> float:
        """``u`` in ``[0, 1]`` at ``step``."""
        return float(np.clip((float(step) - self.start) / (self.end - self.start), 0.0, 1.0))

    def factor(self, step: float) -> float:
        """The multiplier (relative) or the addend (absolute) at ``step``."""
        u = self.progress(step)
        return 1.0 + self.shift * u if self.relative else self.shift * u

    def _layers(self, model):
        return [la for la in _delta_layers(model) if la.mode == "threshold"]

    def apply(self, model, step: int) -> None:
        layers = self._layers(model)
        u = self.progress(step)
        if self._base is None:
            # the thresholds now hold the raise of progress self._u (0 on a fresh start)
            cur = {la.name: np.asarray(keras.ops.convert_to_numpy(la.threshold), np.float64) for la in layers}
            if self.relative:
                self._base = {k: v / (1.0 + self.shift * self._u) for k, v in cur.items()}
            else:
                self._base = {k: np.maximum(v - self.shift * self._u, 0.0) for k, v in cur.items()}
        if u <= 0.0 and self._u <= 0.0:
            return
        for la in layers:
            base = self._base[la.name]
            value = base * (1.0 + self.shift * u) if self.relative else base + self.shift * u
            la.threshold.assign(value.astype(np.float32).reshape(tuple(la.threshold.shape)))
        self._u = u

    def on_train_begin(self, logs=None):
        self._base = None
        self._u = self.progress(_step_of(self.model))  # a resumed run's thresholds already hold this raise

    def on_train_batch_begin(self, batch, logs=None):
        self.apply(self.model, _step_of(self.model))

    def get_config(self) -> dict:
        return {"shift": self.shift, "start": self.start, "end": self.end, "relative": self.relative}

    @classmethod
    def from_config(cls, config: dict) -> "ThresholdShift":
        return cls(**config)


def sine_stages(
    total_steps: int,
    *,
    warmup_fraction: float = 0.1,
    levels: Sequence[float] = (0.25, 0.5, 1.0),
    end_fraction: float = 0.9,
) -> list[tuple[int, float]]:
    """ProSparse-style stages: after a warm-up of ``warmup_fraction`` of the steps, equal-length
    quarter-sine ramps to each of ``levels``, the last ending at ``end_fraction`` of the steps
    (the rest is a plateau at the final level)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= warmup_fraction < end_fraction <= 1.0:
        raise ValueError(f"need 0 <= warmup_fraction < end_fraction <= 1, got {warmup_fraction}, {end_fraction}")
    if not levels:
        raise ValueError("levels must not be empty")
    w0 = int(round(warmup_fraction * total_steps))
    w1 = max(int(round(end_fraction * total_steps)), w0 + len(levels))
    ends = [w0 + int(round((w1 - w0) * (i + 1) / len(levels))) for i in range(len(levels))]
    for i in range(1, len(ends)):
        ends[i] = max(ends[i], ends[i - 1] + 1)
    ends[0] = max(ends[0], w0 + 1)
    return [(e, float(v)) for e, v in zip(ends, levels)]


def fit_callbacks(
    *,
    schedule: str = "constant",
    total_steps: int,
    warmup: float = 0.1,
    depth_progressive: float = 0.0,
    threshold_shift: float = 0.0,
    shift_fraction: float = 0.1,
) -> list[keras.callbacks.Callback]:
    """The callbacks for fit's flags (``--schedule``, ``--warmup``, ``--depth-progressive``,
    ``--threshold-shift``, ``--shift-fraction``).

    * ``schedule="constant"`` and ``depth_progressive == 0``: no penalty callback (the weights
      stay as configured). ``"constant"`` with a depth delay: each layer's weight is 0 until
      its delayed clock starts, then its configured value (a one-stage ``"step"`` schedule).
    * ``schedule="sine"``: :func:`sine_stages` with ``warmup`` (fraction of the steps at 0).
    * ``threshold_shift > 0``: a :class:`ThresholdShift` over the last ``shift_fraction`` of
      the steps.
    """
    callbacks: list[keras.callbacks.Callback] = []
    total_steps = int(total_steps)
    if schedule not in ("constant", "sine"):
        raise ValueError(f"schedule must be 'constant' or 'sine', got {schedule!r}")
    if schedule == "sine":
        stages = sine_stages(total_steps, warmup_fraction=warmup)
        callbacks.append(
            PenaltySchedule(stages, warmup=int(round(warmup * total_steps)), kind="sine", depth_delay=depth_progressive)
        )
    elif depth_progressive > 0:
        # each layer off until its delayed clock starts, then at its configured weight
        callbacks.append(PenaltySchedule([(max(1, total_steps), 1.0)], warmup_value=0.0, kind="step", depth_delay=depth_progressive))
    if threshold_shift > 0:
        if not 0.0 < shift_fraction < 1.0:
            raise ValueError(f"shift_fraction must be in (0, 1), got {shift_fraction}")
        start = int(round((1.0 - shift_fraction) * total_steps))
        callbacks.append(ThresholdShift(threshold_shift, start, max(start + 1, total_steps)))
    return callbacks
