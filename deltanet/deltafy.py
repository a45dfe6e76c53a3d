"""``deltafy``: turn a per-frame Keras model into a clip model whose MAC layers receive deltas."""

from __future__ import annotations

import math

import keras

from deltanet.delta_activation import DeltaActivation
from deltanet.frame_wise import FrameWise
from deltanet.upstream import producer_of
from deltanet.graph import (
    FRAME_LAYERS,
    MAC_LAYERS,
    MERGE_LAYERS,
    cost_per_nonzero,
    graph_nodes,
    refused_layers,
)
from deltanet.model_surgery import flatten

SUPPORTED_LAYERS = MAC_LAYERS + MERGE_LAYERS + FRAME_LAYERS


class UnsupportedLayerError(ValueError):
    """The model contains layers that deltanet cannot convert or the runtime cannot run (all of them are named)."""


def _frame_shape(tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.shape[1:])


def deltafy(
    frame_model: keras.Model,
    *,
    mode: str = "threshold",
    threshold: float = 0.1,
    step: float = 0.05,
    penalty_weight: float = 0.0,
    penalty: str = "l1",
    per_channel: bool = True,
    insert_deltas: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Turn a per-frame model into a clip model with a ``DeltaActivation`` before every MAC layer.

    The clip model takes ``(batch, time, ...frame_shape)`` (time length free) and returns the
    per-frame outputs ``(batch, time, ...)``. It shares the frame model's layers (and so its
    weights): every per-frame layer is wrapped in ``FrameWise``, merge layers (``Add``,
    ``Concatenate``...) work on clip tensors directly. Each tensor that feeds a MAC layer
    (``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D``, ``Dense``) -- the network input and
    the residual streams included -- passes through one ``DeltaActivation`` on its way to the
    MAC layers only (other consumers, such as a residual ``Add``, see the original tensor).
    Each inserted layer's ``cost_per_nonzero`` is the MACs its consumers spend per input
    element. This is the "refinement phase" of arXiv 2107.07305: take a trained model,
    deltafy, fine-tune with a penalty.

    Args:
        frame_model: a functional or Sequential per-frame Keras model; nested models (a
            pretrained base called inside a wrapper) are inlined (``deltanet.model_surgery.flatten``).
        mode, threshold, step, penalty, per_channel: passed to every ``DeltaActivation``.
        penalty_weight: weight of the whole model's penalty. Each layer gets
            ``penalty_weight * (its input elements per frame) / (model MACs per frame)``, so
            the summed penalties are ``penalty_weight`` times the MAC-weighted mean ``|d|``
            (``sum_l macs_l * mean|d_l| / sum_l macs_l``): one weight means the same thing
            for any network size.
        insert_deltas: ``False`` builds the same clip model without delta layers (a baseline).
        name: name of the clip model. Defaults to ``frame_model.name + "_clip"``.

    Returns:
        The clip model.

    Raises:
        UnsupportedLayerError: naming every layer of ``frame_model`` that it cannot convert or
            that the streaming runtime cannot run (``deltanet.registry``: one table for both).
    """
    model = flatten(frame_model)  # a pretrained base inside a wrapper: one graph (as_functional inside)
    bad = refused_layers(model)
    if bad:
        raise UnsupportedLayerError(
            f"deltafy cannot convert {len(bad)} layer(s) of {model.name!r}: {', '.join(bad)}. "
            f"Supported: {', '.join(sorted({c.__name__ for c in SUPPORTED_LAYERS}))}"
        )
    if len(model.inputs) != 1:
        raise ValueError(f"deltafy supports single-input models, {model.name!r} has {len(model.inputs)} inputs")

    nodes = graph_nodes(model)
    # Pass 1: what one non-zero element of each MAC-feeding tensor costs downstream.
    cost, elements = {}, {}
    for node in nodes:
        if isinstance(node.operation, MAC_LAYERS):
            (src,) = node.input_tensors
            out = node.outputs[0]
            cost[id(src)] = cost.get(id(src), 0.0) + cost_per_nonzero(
                node.operation, _frame_shape(src), _frame_shape(out)
            )
            elements[id(src)] = math.prod(_frame_shape(src))
    total_macs = sum(cost[k] * elements[k] for k in cost) or 1.0

    frame_input = model.inputs[0]
    clip_input = keras.Input(shape=(None,) + _frame_shape(frame_input), dtype=frame_input.dtype, name="frames")
    clip = {id(frame_input): clip_input}  # frame tensor -> clip tensor
    guarded = {}  # frame tensor -> its DeltaActivation output
    used_names = {layer.name for layer in model.layers}

    def delta_of(frame_tensor):
        key = id(frame_tensor)
        if key not in guarded:
            producer = producer_of(frame_tensor)
            base = "input" if producer is None or producer is producer_of(frame_input) else producer.name
            layer_name = f"{base}_delta"
            while layer_name in used_names:
                layer_name += "_"
            used_names.add(layer_name)
            guarded[key] = DeltaActivation(
                mode=mode,
                threshold=threshold,
                step=step,
                # cost * weight summed over layers = penalty_weight * MAC-weighted mean |d|
                penalty_weight=penalty_weight * elements[key] / total_macs,
                cost_per_nonzero=cost[key],
                penalty=penalty,
                per_channel=per_channel,
                name=layer_name,
            )(clip[key])
        return guarded[key]

    for node in nodes:
        layer = node.operation
        if isinstance(layer, MAC_LAYERS) and insert_deltas:
            inputs = [delta_of(t) for t in node.input_tensors]
        else:
            inputs = [clip[id(t)] for t in node.input_tensors]
        if isinstance(layer, MERGE_LAYERS):
            if isinstance(layer, keras.layers.Concatenate) and layer.axis >= 0:
                # A positive axis counts the batch axis; the clip tensor has time in front.
                config = layer.get_config()
                config["axis"] = layer.axis + 1
                config["name"] = f"{layer.name}_clip"
                layer = keras.layers.Concatenate.from_config(config)
            outputs = layer(inputs)
        else:
            if len(inputs) != 1:
                raise UnsupportedLayerError(f"{layer.name} ({type(layer).__name__}) has {len(inputs)} inputs")
            outputs = FrameWise(layer, name=f"{layer.name}_frames")(inputs[0])
        clip[id(node.outputs[0])] = outputs

    outputs = [clip[id(t)] for t in model.outputs]
    return keras.Model(clip_input, outputs[0] if len(outputs) == 1 else outputs, name=name or f"{model.name}_clip")
