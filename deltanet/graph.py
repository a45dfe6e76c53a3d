"""Walking Keras functional graphs, and what each layer costs in MACs.

Used by ``deltafy`` (frame model -> clip model) and by the streaming converter
(clip model -> engine plan), so both see the same graph in the same order. What each layer
*is* to deltanet (MAC, merge or per-frame layer, its MAC count, whether the runtime can run
it) comes from ``deltanet.registry``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

from deltanet import registry, upstream

#: Layer groups of the support registry (``deltanet.registry``): MAC layers (a
#: ``DeltaActivation`` guards each one's input), multi-input layers (called directly on clip
#: tensors) and single-input per-frame layers (wrapped in ``FrameWise``).
MAC_LAYERS = registry.classes("mac")
MERGE_LAYERS = registry.classes("merge")
FRAME_LAYERS = registry.classes("frame")
layer_macs = registry.layer_macs


def as_functional(model: keras.Model) -> keras.Model:
    """Return ``model`` as a functional model (a ``Sequential`` is re-traced on a new ``Input``)."""
    if isinstance(model, keras.Sequential):
        if not model.built or model.inputs is None:
            raise ValueError(
                f"Sequential model {model.name!r} has no known input shape: build it first "
                "(e.g. start it with keras.Input(shape=...))"
            )
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
        x = inputs
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    if not upstream.is_graph_model(model):
        raise ValueError(
            f"{type(model).__name__} {model.name!r} is a subclassed model; deltanet needs a functional "
            "or Sequential model whose graph it can read"
        )
    return model


def graph_nodes(model: keras.Model) -> list:
    """The model's non-input nodes in execution (topological) order."""
    return upstream.graph_nodes(model)


def refused_layers(model: keras.Model, leading: int = 1) -> list[str]:
    """``"name (reason)"`` of every layer of ``model`` the runtime cannot run (``deltanet.registry``).

    ``leading``: the axes before the per-frame shape (1: a frame model's batch; 2: a clip model).
    """

    def frame(t):
        return tuple(int(d) for d in t.shape[leading:])

    bad = []
    for node in graph_nodes(model):
        reason = registry.refusal(node.operation, [frame(t) for t in node.input_tensors], frame(node.outputs[0]), leading)
        if reason is not None:
            bad.append(reason)
    return sorted(set(bad))


def _prod(shape: Sequence[int | None]) -> int:
    return int(math.prod(int(s) for s in shape))


def cost_per_nonzero(layer: keras.layers.Layer, input_shape: Sequence[int], output_shape: Sequence[int]) -> float:
    """Average MACs that one non-zero input element of ``layer`` costs: dense MACs / input elements."""
    return layer_macs(layer, input_shape, output_shape) / _prod(input_shape)
