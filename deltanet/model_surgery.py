"""Graph surgery on Keras models (no loading, no deltanet models): what ``deltafy``, the
streaming converter and ``deltanet.pretrained`` share.

* :func:`flatten`: inline every nested functional or Sequential model (weights shared), so
  each layer is a node of one graph;
* :func:`split_separable`: every ``SeparableConv2D`` as its depthwise and pointwise halves
  (same weights), so a delta layer can control the pointwise half's input too;
* :func:`with_rescaling`: a ``Rescaling(scale, offset)`` in front;
* :func:`strip_softmax`: a final softmax removed, so the model returns logits.

Split from ``deltanet.pretrained`` so that ``deltafy`` can use it without importing
``deltanet.models`` (which imports ``deltafy``): no import cycle.
"""

from __future__ import annotations

import keras

from deltanet import upstream
from deltanet.graph import as_functional, graph_nodes


def _call_flat(model: keras.Model, inputs: list, split: bool = False) -> list:
    """Call ``model``'s layers (not the model) on ``inputs``, recursing into nested models;
    ``split``: each ``SeparableConv2D`` as its two halves (:func:`split_separable`)."""
    model = as_functional(model)
    tensors = {id(t): x for t, x in zip(model.inputs, inputs)}
    for node in graph_nodes(model):
        args = [tensors[id(t)] for t in node.input_tensors]
        layer = node.operation
        if isinstance(layer, keras.Model):
            outs = _call_flat(layer, args, split)
        elif split and isinstance(layer, keras.layers.SeparableConv2D):
            outs = [_split_call(layer, args[0])]
        else:
            out = layer(args if len(args) > 1 else args[0])
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
        for t, o in zip(node.outputs, outs):
            tensors[id(t)] = o
    return [tensors[id(t)] for t in model.outputs]


def _rebuild(model: keras.Model, inputs: list, outputs: list) -> keras.Model:
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)


def _fresh_inputs(model: keras.Model) -> list:
    return [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in model.inputs]


def is_nested(model: keras.Model) -> bool:
    """True when a node of ``model`` (functional or Sequential) is itself a model."""
    return any(isinstance(node.operation, keras.Model) for node in graph_nodes(as_functional(model)))


def flatten(model: keras.Model, *, copy: bool = False) -> keras.Model:
    """``model`` with every nested functional/Sequential model inlined.

    The result reuses the same layer objects (weights shared), which then belong to two
    graphs; ``copy=True`` gives it layers of its own instead (same weights, copied), for
    tools that read a layer's ``input``/``output`` (the streaming converter). Returns the model
    itself (as functional) when nothing is nested. Subclassed models are refused by
    ``as_functional``: their graph cannot be read.
    """
    model = as_functional(model)
    if not is_nested(model):
        return model
    inputs = _fresh_inputs(model)
    flat = _rebuild(model, inputs, _call_flat(model, inputs))
    if copy:
        own = keras.models.clone_model(flat)
        own.set_weights(flat.get_weights())
        return own
    return flat


def _split_call(layer: keras.layers.SeparableConv2D, x):
    """``layer(x)`` computed by a ``DepthwiseConv2D`` then a 1x1 ``Conv2D`` holding its weights."""
    if any(d != 1 for d in layer.dilation_rate):
        raise ValueError(f"{layer.name}: dilated SeparableConv2D is not supported")
    dw = keras.layers.DepthwiseConv2D(layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                      depth_multiplier=layer.depth_multiplier, use_bias=False, name=f"{layer.name}_depthwise")
    pw = keras.layers.Conv2D(layer.filters, 1, use_bias=layer.use_bias, activation=layer.activation, name=f"{layer.name}_pointwise")
    y = pw(dw(x))
    dw.set_weights([keras.ops.convert_to_numpy(layer.depthwise_kernel)])
    pw.set_weights([keras.ops.convert_to_numpy(layer.pointwise_kernel)] + ([keras.ops.convert_to_numpy(layer.bias)] if layer.use_bias else []))
    return y


def split_separable(model: keras.Model) -> keras.Model:
    """``model`` (flattened) with every ``SeparableConv2D`` replaced by its depthwise and 1x1 halves.

    Same function, weights copied. Why: the streaming engine runs the two halves as two MAC
    layers, and the 1x1 half multiplies every depthwise output that changed (a 3x3 kernel
    spreads one input change over 9 pixels). As one Keras layer, the delta layer in front
    of it would only see (and calibration, training and the MAC count would only control)
    the input of the depthwise half; split, ``deltafy`` guards the 1x1 half's input too.
    """
    model = flatten(model)
    if not any(isinstance(node.operation, keras.layers.SeparableConv2D) for node in graph_nodes(model)):
        return model
    inputs = _fresh_inputs(model)
    return _rebuild(model, inputs, _call_flat(model, inputs, split=True))


def with_rescaling(model: keras.Model, scale: float, offset: float) -> keras.Model:
    """A flattened ``model`` that first applies ``Rescaling(scale, offset)`` (``x * scale + offset``)."""
    model = as_functional(model)
    if len(model.inputs) != 1:
        raise ValueError(f"--rescale needs a single-input model, {model.name!r} has {len(model.inputs)} inputs")
    (inp,) = _fresh_inputs(model)
    x = keras.layers.Rescaling(scale, offset=offset, name="input_rescale")(inp)
    return _rebuild(model, [inp], _call_flat(model, [x]))


def _is_softmax(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and keras.activations.serialize(layer.activation) in ("softmax", {"class_name": "softmax"})


def strip_softmax(model: keras.Model) -> tuple[keras.Model, bool]:
    """``(model without its final softmax, True)``, or ``(model, False)`` if it does not end in one.

    A final ``Softmax``/``Activation("softmax")`` layer is dropped; a final ``Dense`` or
    ``Conv2D`` with ``activation="softmax"`` is rebuilt with a linear activation (same weights).
    """
    model = flatten(model)
    if len(model.outputs) != 1:
        return model, False
    # the node of *this* graph: a shared layer (flatten re-calls them) has several
    layer, (layer_input,) = upstream.producing_node_inputs(model.outputs[0])
    if _is_softmax(layer):
        return _rebuild(model, list(model.inputs), [layer_input]), True
    if getattr(layer, "activation", None) is not None and keras.activations.serialize(layer.activation) == "softmax":
        config = dict(layer.get_config(), activation="linear", name=layer.name + "_logits")
        linear = type(layer).from_config(config)
        y = linear(layer_input)
        linear.set_weights(layer.get_weights())
        return _rebuild(model, list(model.inputs), [y]), True
    return model, False
