"""``relu_ify``: swap smooth activations for ReLU before deltafying (ProSparse, arXiv 2402.13516).

Swish, hard-swish and GELU are non-zero for negative inputs, so a negative pre-activation
that changes a little still sends a (small) delta. After ReLU, a negative-to-negative
change is an exact zero delta: the delta layers after each activation start sparser and
the sparsity penalty has less to fight. The swapped model needs fine-tuning
(``python -m training.fit --init``) to recover accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras

from deltanet.graph import as_functional, graph_nodes
from deltanet.upstream import shallow_copy

#: activation names replaced by default (Keras spellings and aliases)
SMOOTH = ("swish", "silu", "hard_swish", "hard_silu", "gelu")


def _activation_name(fn) -> str | None:
    if fn is None:
        return None
    if isinstance(fn, str):
        return fn
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        return getattr(fn, "__name__", None)
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return name if isinstance(name, str) else getattr(fn, "__name__", None)


def relu_ify(frame_model: keras.Model, replace: Iterable[str] = SMOOTH, *, name: str | None = None) -> keras.Model:
    """A copy of a per-frame model with the activations in ``replace`` changed to ReLU, sharing weights.

    * ``Activation(a)`` layers with ``a`` in ``replace`` become ``ReLU`` layers of the same name.
    * Layers with a fused ``activation`` attribute in ``replace`` (``Conv2D(activation="swish")``,
      ``Dense(activation="gelu")``...) are replaced by a shallow copy with ``activation=relu``:
      the copy holds the very same weight variables (training one trains the other).
    * Every other layer is reused as is.

    Args:
        frame_model: a functional or Sequential per-frame model (single input).
        replace: activation names to replace. Defaults to :data:`SMOOTH`.
        name: the new model's name. Defaults to ``frame_model.name + "_relu"``.

    Returns:
        The new per-frame model, ready for ``deltanet.deltafy`` / ``clip_classifier``.
    """
    model = as_functional(frame_model)
    if len(model.inputs) != 1:
        raise ValueError(f"relu_ify supports single-input models, {model.name!r} has {len(model.inputs)} inputs")
    replace = set(replace)
    inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    tensors = {id(model.inputs[0]): inputs}
    swapped = {}
    for node in graph_nodes(model):
        layer = node.operation
        if id(layer) not in swapped:
            new = layer
            if isinstance(layer, keras.layers.Activation) and _activation_name(layer.activation) in replace:
                new = keras.layers.ReLU(name=layer.name)
            elif not isinstance(layer, keras.layers.Activation) and _activation_name(getattr(layer, "activation", None)) in replace:
                new = shallow_copy(layer, activation=keras.activations.relu)
            swapped[id(layer)] = new
        new = swapped[id(layer)]
        args = [tensors[id(t)] for t in node.input_tensors]
        out = new(args if len(args) > 1 else args[0])
        outs = out if isinstance(out, (list, tuple)) else [out]
        for t, o in zip(node.outputs, outs):
            tensors[id(t)] = o
    outputs = [tensors[id(t)] for t in model.outputs]
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=name or f"{model.name}_relu")
