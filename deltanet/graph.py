"""Walking Keras functional graphs, and what each layer costs in MACs.

Used by ``deltafy`` (frame model -> clip model) and by the streaming converter
(clip model -> engine plan), so both see the same graph in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

#: Layers whose work is multiply-accumulates; a ``DeltaActivation`` guards each one's input.
MAC_LAYERS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)

#: Multi-input layers that work on any rank (called directly on clip tensors).
MERGE_LAYERS = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
)

#: Single-input per-frame layers that deltafy knows how to wrap (besides the MAC layers).
FRAME_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.ZeroPadding2D,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Dropout,
    keras.layers.Rescaling,
    keras.layers.Normalization,
)


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
    if not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            f"{type(model).__name__} {model.name!r} is a subclassed model; deltanet needs a functional "
            "or Sequential model whose graph it can read"
        )
    return model


def graph_nodes(model: keras.Model) -> list:
    """The model's non-input nodes in execution (topological) order."""
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return nodes


def unsupported_layers(model: keras.Model, supported: Sequence[type]) -> list[str]:
    """Names (with class) of the layers in ``model`` that are not instances of ``supported``."""
    bad = []
    for node in graph_nodes(model):
        op = node.operation
        if not isinstance(op, tuple(supported)):
            bad.append(f"{op.name} ({type(op).__name__})")
    return sorted(set(bad))


def _prod(shape: Sequence[int | None]) -> int:
    return int(math.prod(int(s) for s in shape))


def layer_macs(layer: keras.layers.Layer, input_shape: Sequence[int], output_shape: Sequence[int]) -> int:
    """Dense multiply-accumulates of one MAC layer for one frame (shapes without the batch axis)."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        cin = input_shape[-1]
        m = layer.depth_multiplier
        ho, wo, cout = output_shape
        return int(ho * wo * kh * kw * cin * m + ho * wo * cin * m * cout)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        ho, wo, c = output_shape
        return int(ho * wo * kh * kw * c)
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        ho, wo, cout = output_shape
        return int(ho * wo * kh * kw * (input_shape[-1] // layer.groups) * cout)
    if isinstance(layer, keras.layers.Dense):
        return int(_prod(input_shape) * layer.units)
    raise TypeError(f"{layer.name} ({type(layer).__name__}) is not a MAC layer")


def cost_per_nonzero(layer: keras.layers.Layer, input_shape: Sequence[int], output_shape: Sequence[int]) -> float:
    """Average MACs that one non-zero input element of ``layer`` costs: dense MACs / input elements."""
    return layer_macs(layer, input_shape, output_shape) / _prod(input_shape)
