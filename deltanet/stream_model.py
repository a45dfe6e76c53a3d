"""Per-frame models for deployment: one frame in, per-frame logits out (plus explicit state).

A clip model (``build_model`` / ``clip_classifier``) works on whole clips
``(batch, time, H, W, 3)``. A deployed model sees one frame at a time. This module rebuilds
the clip model's per-frame network (sharing its layers, so its weights) with every
``DeltaActivation`` replaced by a small per-frame layer that applies the same maths
(``deltanet.delta_activation.quantize_frame`` / ``threshold_frame``) with the same
step / threshold values:

* ``stateless_frame_model(clip_model)``: ``(batch, H, W, 3)`` -> ``(batch, classes)``.
  A baseline becomes ``per_frame_model``; in ``mode="quantize"`` each ``DeltaActivation``
  becomes a ``FrameQuantize`` (``y_t = q * round(x_t / q)`` does not depend on earlier
  frames). ``mode="threshold"`` has state (the reference ``r_{t-1}``): ``ValueError``, use
  the stateful model.
* ``stateful_frame_model(clip_model)``: dict in, dict out, state passed explicitly (the way
  MoViNet stream models pass their states), so the model itself is a pure function that
  every export format (SavedModel, TFLite, ONNX) can carry::

      inputs  = {"frame": (batch, H, W, 3),
                 "<delta_name>_ref": (batch, ...features)  # one per threshold DeltaActivation
                }
      outputs = {"logits": (batch, classes),
                 "<delta_name>_ref": (batch, ...features)  # the new reference r_t
                }

  ``<delta_name>`` is the name of the ``DeltaActivation`` in the clip model (e.g.
  ``rescale_delta``); the state tensors are float32 whatever the dtype policy (as in the
  layer). Start a stream with ``initial_states(model)`` (zeros: ``r_{-1} = 0``), then feed
  every output ``*_ref`` back as the next frame's input of the same name. Frame by frame
  this reproduces ``frame_logits_model(clip_model)`` on the whole clip.

  Decision for ``mode="quantize"`` and baselines: the stateful model has **no** state
  tensors (inputs ``{"frame"}``, outputs ``{"logits"}``): a quantized output does not depend
  on the previous one (``y_{t-1}`` only matters to a delta runtime, which keeps it itself).
  So the dict interface is the same for every model, and ``initial_states`` returns ``{}``.

Both layers (``FrameQuantize``, ``FrameThreshold``) are registered Keras classes, so the
per-frame models save and load as ``.keras`` files with the default safe mode (through
``deltanet.load_model``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from deltanet.delta_activation import DeltaActivation, quantize_frame, threshold_frame
from deltanet.frame_wise import FrameWise
from deltanet.graph import graph_nodes
from deltanet.models import frame_logits_model, per_frame_model

#: Name of the frame input of the stateful model (and of the stateless one).
FRAME_INPUT = "frame"
#: Name of the per-frame logits output of the stateful model.
LOGITS_OUTPUT = "logits"
#: Suffix of the state tensors: ``<delta_name>_ref`` in and out.
STATE_SUFFIX = "_ref"


def _delta_shape(da_weight) -> tuple[int, ...]:
    return tuple(int(s) for s in da_weight.shape)


@keras.saving.register_keras_serializable(package="deltanet")
class FrameQuantize(keras.layers.Layer):
    """One frame of a ``mode="quantize"`` ``DeltaActivation``: ``y = quantize_frame(x, step)``.

    ``step`` is a non-trainable weight (per channel or scalar); ``from_delta`` copies it from
    a trained ``DeltaActivation``. Arithmetic in float32, output cast to the compute dtype.

    Args:
        per_channel: one step per channel (last axis) instead of one scalar.
        **kwargs: base ``Layer`` arguments.
    """

    def __init__(self, per_channel: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.per_channel = bool(per_channel)

    @classmethod
    def from_delta(cls, delta: DeltaActivation) -> "FrameQuantize":
        if delta.mode != "quantize":
            raise ValueError(f"{delta.name} is a mode={delta.mode!r} DeltaActivation, not quantize")
        layer = cls(per_channel=delta.per_channel, name=delta.name, dtype=delta.dtype_policy)
        layer.build((None,) + _delta_shape(delta.step) if delta.per_channel else (None, None))
        layer.step.assign(ops.convert_to_numpy(delta.step))
        return layer

    def build(self, input_shape):
        shape = (input_shape[-1],) if self.per_channel else ()
        self.step = self.add_weight(name="step", shape=shape, initializer="ones", trainable=False, dtype="float32")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        return ops.cast(quantize_frame(x, ops.cast(self.step, "float32")), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["per_channel"] = self.per_channel
        return config


@keras.saving.register_keras_serializable(package="deltanet")
class FrameThreshold(keras.layers.Layer):
    """One frame of a ``mode="threshold"`` ``DeltaActivation``, state explicit.

    Called on ``[x_t, r_{t-1}]``, returns ``r_t = threshold_frame(x_t, r_{t-1}, threshold)``,
    which is both the layer's output (``y_t = r_t``) and the state for the next frame.
    Arithmetic and the returned reference are float32 (as in ``DeltaActivation``).

    Args:
        per_channel: one threshold per channel (last axis) instead of one scalar.
        **kwargs: base ``Layer`` arguments.
    """

    def __init__(self, per_channel: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.per_channel = bool(per_channel)

    @classmethod
    def from_delta(cls, delta: DeltaActivation) -> "FrameThreshold":
        if delta.mode != "threshold":
            raise ValueError(f"{delta.name} is a mode={delta.mode!r} DeltaActivation, not threshold")
        layer = cls(per_channel=delta.per_channel, name=delta.name, dtype="float32")
        shape = (None,) + _delta_shape(delta.threshold) if delta.per_channel else (None, None)
        layer.build([shape, shape])
        layer.threshold.assign(ops.convert_to_numpy(delta.threshold))
        return layer

    def build(self, input_shape):
        x_shape = input_shape[0]
        shape = (x_shape[-1],) if self.per_channel else ()
        self.threshold = self.add_weight(
            name="threshold", shape=shape, initializer="zeros", trainable=False, dtype="float32"
        )

    def call(self, inputs):
        x, reference = inputs
        x = ops.cast(x, "float32")
        reference = ops.cast(reference, "float32")
        return threshold_frame(x, reference, ops.cast(self.threshold, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config["per_channel"] = self.per_channel
        return config


# --- rebuilding the per-frame graph -------------------------------------------------------------


def _frames_model(clip_model: keras.Model) -> keras.Model:
    try:
        return frame_logits_model(clip_model)
    except ValueError:
        return clip_model  # already per-frame outputs (a deltafy result)


def _delta_modes(frames_model: keras.Model) -> set[str]:
    return {node.operation.mode for node in graph_nodes(frames_model) if isinstance(node.operation, DeltaActivation)}


def _frame_layer(layer):
    """The layer to call on frame tensors in place of a clip-graph layer."""
    if isinstance(layer, FrameWise):
        return layer.layer
    if isinstance(layer, keras.layers.Concatenate) and layer.axis >= 0:
        # deltafy shifted a positive axis by one for the time axis; shift it back.
        config = layer.get_config()
        config["axis"] = layer.axis - 1
        config["name"] = layer.name.removesuffix("_clip")
        return keras.layers.Concatenate.from_config(config)
    return layer


def _rebuild(frames_model: keras.Model, frame, on_delta):
    """Call the frame-level layers of ``frames_model`` on ``frame``; ``on_delta(layer, x)`` maps
    each ``DeltaActivation`` input to its output. Returns the output tensor."""
    tensors = {id(frames_model.input): frame}
    for node in graph_nodes(frames_model):
        layer = node.operation
        args = [tensors[id(t)] for t in node.input_tensors]
        if isinstance(layer, DeltaActivation):
            out = on_delta(layer, args[0])
        else:
            out = _frame_layer(layer)(args if len(args) > 1 else args[0])
        tensors[id(node.outputs[0])] = out
    return tensors[id(frames_model.output)]


def _frame_input(frames_model: keras.Model):
    return keras.Input(tuple(frames_model.input.shape[2:]), dtype=frames_model.input.dtype, name=FRAME_INPUT)


def stateless_frame_model(clip_model: keras.Model) -> keras.Model:
    """The per-frame model of a baseline or ``mode="quantize"`` clip model.

    Input ``(batch, H, W, 3)`` frames (``"frame"``), output per-frame logits. Shares the clip
    model's layers; quantize-mode ``DeltaActivation``s become ``FrameQuantize`` with the same
    step values.

    Raises:
        ValueError: the model has ``mode="threshold"`` delta layers (their output depends on the
            previous frame): use ``stateful_frame_model``.
    """
    frames_model = _frames_model(clip_model)
    modes = _delta_modes(frames_model)
    if "threshold" in modes:
        raise ValueError(
            f"{clip_model.name} has threshold-mode DeltaActivations, whose output depends on the previous "
            "frame's reference: use deltanet.stream_model.stateful_frame_model (explicit state in and out)"
        )
    if not modes:
        return per_frame_model(clip_model)
    frame = _frame_input(frames_model)
    logits = _rebuild(frames_model, frame, lambda layer, x: FrameQuantize.from_delta(layer)(x))
    name = frames_model.name.removesuffix("_frames") + "_per_frame"
    return keras.Model(frame, logits, name=name)


def stateful_frame_model(clip_model: keras.Model) -> keras.Model:
    """The per-frame model with explicit state (dict inputs and outputs), for any clip model.

    Inputs ``{"frame", "<delta_name>_ref"...}``, outputs ``{"logits", "<delta_name>_ref"...}``:
    one state per threshold-mode ``DeltaActivation`` (none for baselines and quantize mode).
    See the module docstring for the protocol; ``initial_states`` gives the first states.
    """
    frames_model = _frames_model(clip_model)
    frame = _frame_input(frames_model)
    state_in, state_out = {}, {}

    def on_delta(layer, x):
        if layer.mode == "quantize":
            return FrameQuantize.from_delta(layer)(x)
        key = layer.name + STATE_SUFFIX
        state_in[key] = keras.Input(tuple(x.shape[1:]), dtype="float32", name=key)
        state_out[key] = FrameThreshold.from_delta(layer)([x, state_in[key]])
        return state_out[key]

    logits = _rebuild(frames_model, frame, on_delta)
    name = frames_model.name.removesuffix("_frames") + "_stream"
    return keras.Model({FRAME_INPUT: frame, **state_in}, {LOGITS_OUTPUT: logits, **state_out}, name=name)


def state_specs(model: keras.Model) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{state name: (shape without batch, dtype)}`` of a ``stateful_frame_model``."""
    inputs = model.input if isinstance(model.input, dict) else {}
    return {
        name: (tuple(int(s) for s in t.shape[1:]), str(t.dtype)) for name, t in inputs.items() if name != FRAME_INPUT
    }


def initial_states(model: keras.Model, batch: int = 1) -> dict[str, np.ndarray]:
    """The states of the first frame: zeros (``r_{-1} = 0``), one array per state input."""
    return {name: np.zeros((batch,) + shape, dtype) for name, (shape, dtype) in state_specs(model).items()}


def stream(model: keras.Model, frames, states: dict | None = None):
    """Run a ``stateful_frame_model`` over ``frames`` ``(batch, time, H, W, 3)``, carrying states.

    Returns ``(logits (batch, time, classes), final states)``: a convenience (and the
    reference the export checks use), one model call per frame.
    """
    frames = np.asarray(frames)
    states = dict(initial_states(model, frames.shape[0]) if states is None else states)
    logits = []
    for t in range(frames.shape[1]):
        out = model({FRAME_INPUT: frames[:, t], **states}, training=False)
        logits.append(ops.convert_to_numpy(out[LOGITS_OUTPUT]))
        states = {k: ops.convert_to_numpy(v) for k, v in out.items() if k != LOGITS_OUTPUT}
    return np.stack(logits, axis=1), states
