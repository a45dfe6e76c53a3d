"""The one table of supported Keras layers: how ``deltafy`` treats each, how the converter
lowers it to engine plan steps, and what it costs in MACs.

Every reader goes through :func:`support_of`: ``deltafy`` (which layers it guards with a
``DeltaActivation``, wraps per frame or calls on clip tensors, and which it refuses),
``deltanet.graph`` (MAC counts, the layer groups), and ``streaming.convert`` (the plan steps).
A layer ``deltafy`` accepts therefore always converts: "trains but cannot deploy" cannot
happen. Each entry (:class:`Support`) has

* ``role``: ``"mac"`` (multiply-accumulates; its input is guarded), ``"merge"`` (several
  inputs, called on clip tensors) or ``"frame"`` (one input, wrapped in ``FrameWise``);
* ``refuse(layer, in_shapes, out_shape, leading)``: why the runtime cannot run this
  configuration (a dilated convolution, a softmax over space...), or ``None``. Shapes are
  per frame (no batch/time axes); ``leading`` is how many axes the layer itself sees before
  them, for layers that name an axis (1 for a frame model's layers and the ``FrameWise``-
  wrapped ones, 2 for a merge layer called on clip tensors);
* ``lower(b, layer)``: emit the layer's plan steps through the converter's builder ``b``
  (``streaming.convert.PlanBuilder``) and return the plan tensor holding its output;
* ``macs(layer, in_shape, out_shape)``: dense MACs per frame (MAC layers; ``ops.geometry``).

Lowering conventions (plan format: ``streaming.plan``): BatchNormalization folds into the
convolution before it when that convolution feeds nothing else, Rescaling/Normalization fold
into the input step when they come first; Dense is a 1x1 convolution; SeparableConv2D is
depthwise + pointwise; a MAC layer's own ``activation=`` becomes an activation step after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from ops.elementwise import ACTIVATIONS
from ops.geometry import axis_geometry, conv_macs

ROLES = ("mac", "merge", "frame")
Shape = Sequence[int]


@dataclass(frozen=True)
class Support:
    """What deltanet does with one Keras layer class (see the module docstring)."""

    layer: type
    role: str
    lower: Callable
    refuse: Callable | None = None
    macs: Callable | None = None


# --------------------------------------------------------------------------------------
# shared checks and helpers
# --------------------------------------------------------------------------------------


def activation_step(fn) -> tuple[str, float, float, float] | None:
    """A Keras activation (name or function) as a plan activation ``(kind, a0, a1, a2)``, or None."""
    if fn is None:
        name = "linear"
    elif callable(fn):
        name = keras.activations.serialize(fn)
        if isinstance(name, dict):
            name = name.get("config", name.get("class_name"))
    else:
        name = fn
    name = {"silu": "swish", "hard_silu": "hard_swish"}.get(name, name)
    if name == "relu":
        return ("relu", 0.0, -1.0, 0.0)
    if name == "relu6":
        return ("relu", 0.0, 6.0, 0.0)
    if name == "elu":
        return ("elu", 1.0, 0.0, 0.0)
    if name in ACTIVATIONS:
        return (name, 0.0, 0.0, 0.0)
    return None


def _is_channel_axis(axis, rank: int, leading: int) -> bool:
    """Whether ``axis`` (as a layer stores it: negative, or counting the leading axes) is the
    last axis of a ``rank``-D per-frame tensor."""
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] in (-1, leading + rank - 1)


def _refuse_conv(layer, in_shapes, out_shape, leading) -> str | None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"data_format={layer.data_format!r}"
    if layer.strides[0] != layer.strides[1]:
        return f"unequal strides {tuple(layer.strides)}"
    if any(d != 1 for d in layer.dilation_rate):
        return "dilated convolution"
    if getattr(layer, "groups", 1) != 1:
        return "grouped Conv2D"
    if activation_step(layer.activation) is None:
        return f"activation {layer.activation}"
    return None


def _refuse_dense(layer, in_shapes, out_shape, leading) -> str | None:
    if len(in_shapes[0]) not in (1, 3):
        return f"Dense on a rank-{len(in_shapes[0])} frame tensor"
    if activation_step(layer.activation) is None:
        return f"activation {layer.activation}"
    return None


def _pads(layer, in_shape) -> tuple[int, int]:
    """Leading (top, left) padding of a convolution or pooling layer (``ops.geometry``)."""
    kh, kw = layer.kernel_size if hasattr(layer, "kernel_size") else layer.pool_size
    stride = layer.strides[0]
    return axis_geometry(in_shape[0], kh, stride, layer.padding)[1], axis_geometry(in_shape[1], kw, stride, layer.padding)[1]


def _numpy(v) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v))


def _mac_step(b, op, name, src, kernel, bias, stride, pads, shape) -> str:
    return b.add(op, name=name, inputs=[src], shape=shape, kernel_key=b.array(f"{name}/kernel", kernel),
                 bias_key=b.array(f"{name}/bias", bias), stride=int(stride), pad_top=int(pads[0]), pad_left=int(pads[1]))  # fmt: skip


def _activation_after(b, layer, out) -> str:
    """A MAC layer's own ``activation=`` as a step after it (the MAC output stays pre-activation,
    so BatchNorm cannot fold across it)."""
    kind, a0, a1, a2 = activation_step(layer.activation)
    if kind == "linear":
        return out
    return b.add("activation", name=f"{b.name}/activation", inputs=[out], kind=kind, a0=a0, a1=a1, a2=a2)


# --------------------------------------------------------------------------------------
# MAC layers
# --------------------------------------------------------------------------------------


def _conv_macs(layer, in_shape, out_shape) -> int:
    kh, kw = layer.kernel_size
    return conv_macs(out_shape[0], out_shape[1], kh, kw, in_shape[-1] // layer.groups, out_shape[-1])


def _lower_conv_as(op):
    """Conv2D -> a ``conv2d`` step, DepthwiseConv2D -> a ``depthwise`` step (same fields)."""

    def lower(b, layer) -> str:
        bias = _numpy(layer.bias) if layer.use_bias else np.zeros(b.out_shape[-1])
        out = _mac_step(b, op, b.name, b.src, _numpy(layer.kernel), bias, layer.strides[0], _pads(layer, b.in_shape), b.out_shape)
        return _activation_after(b, layer, out)

    return lower


def _depthwise_macs(layer, in_shape, out_shape) -> int:
    kh, kw = layer.kernel_size
    return conv_macs(out_shape[0], out_shape[1], kh, kw, 1, out_shape[-1])


def _separable_macs(layer, in_shape, out_shape) -> int:
    kh, kw = layer.kernel_size
    mid = in_shape[-1] * layer.depth_multiplier
    return conv_macs(out_shape[0], out_shape[1], kh, kw, 1, mid) + conv_macs(out_shape[0], out_shape[1], 1, 1, mid, out_shape[-1])


def _lower_separable(b, layer) -> str:
    dw_kernel, pw_kernel = _numpy(layer.depthwise_kernel), _numpy(layer.pointwise_kernel)
    bias = _numpy(layer.bias) if layer.use_bias else np.zeros(pw_kernel.shape[-1])
    mid_shape = (b.out_shape[0], b.out_shape[1], dw_kernel.shape[2] * dw_kernel.shape[3])
    mid = _mac_step(b, "depthwise", f"{b.name}/depthwise", b.src, dw_kernel, np.zeros(mid_shape[2]), layer.strides[0],
                    _pads(layer, b.in_shape), mid_shape)  # fmt: skip
    out = _mac_step(b, "conv2d", b.name, mid, pw_kernel, bias, 1, (0, 0), b.out_shape)
    return _activation_after(b, layer, out)


def _dense_macs(layer, in_shape, out_shape) -> int:
    return conv_macs(1, 1, 1, 1, math.prod(in_shape), layer.units)


def _lower_dense(b, layer) -> str:
    kernel = _numpy(layer.kernel)
    bias = _numpy(layer.bias) if layer.use_bias else np.zeros(kernel.shape[1])
    out = _mac_step(b, "conv2d", b.name, b.src, kernel[None, None], bias, 1, (0, 0), b.out_shape)
    return _activation_after(b, layer, out)


# --------------------------------------------------------------------------------------
# merge layers (called on clip tensors)
# --------------------------------------------------------------------------------------


def _refuse_merge(layer, in_shapes, out_shape, leading) -> str | None:
    out = tuple(out_shape)
    for s in in_shapes:
        s = tuple(s)
        vector = len(s) == len(out) and all(d == 1 for d in s[:-1]) and s[-1] == out[-1]
        if s != out and not vector:
            return f"{type(layer).__name__} of shapes {[tuple(x) for x in in_shapes]} (only a (1, 1, C) input broadcasts)"
    return None


def _lower_merge(op):
    def lower(b, layer) -> str:
        return b.add(op, name=b.name, inputs=b.inputs)

    return lower


def _refuse_concat(layer, in_shapes, out_shape, leading) -> str | None:
    if not _is_channel_axis(layer.axis, len(out_shape), leading):
        return f"Concatenate on axis {layer.axis}, only channels"
    return None


# --------------------------------------------------------------------------------------
# per-frame layers
# --------------------------------------------------------------------------------------


def _refuse_batchnorm(layer, in_shapes, out_shape, leading) -> str | None:
    return None if _is_channel_axis(layer.axis, len(out_shape), leading) else f"BatchNormalization on axis {layer.axis}"


def _lower_batchnorm(b, layer) -> str:
    gamma = _numpy(layer.gamma) if layer.scale else 1.0
    beta = _numpy(layer.beta) if layer.center else 0.0
    mean, var = _numpy(layer.moving_mean), _numpy(layer.moving_variance)
    scale = (gamma / np.sqrt(var.astype(np.float64) + layer.epsilon)).astype(np.float32)
    offset = (beta - mean * scale).astype(np.float32)
    prev = b.producer(b.src)
    if prev is not None and prev["op"] in ("conv2d", "depthwise") and b.single_consumer():
        # fold: W' = W * scale (per output channel), b' = b * scale + offset
        k = b.arrays[prev["kernel_key"]]
        kh, kw, c, m = k.shape
        folded = k * (scale.reshape(1, 1, c, m) if prev["op"] == "depthwise" else scale)
        b.arrays[prev["kernel_key"]] = np.ascontiguousarray(folded, np.float32)
        b.arrays[prev["bias_key"]] = (b.arrays[prev["bias_key"]] * scale + offset).astype(np.float32)
        prev["folded"] = prev.get("folded", []) + [b.name]
        return b.src
    return _affine(b, scale, offset)


def _affine(b, scale, offset) -> str:
    """A per-channel ``x * scale + offset`` step, folded into the input step when it comes first."""
    prev = b.producer(b.src)
    if prev["op"] == "input" and np.all(b.arrays["input/scale"] == 1) and np.all(b.arrays["input/offset"] == 0):
        b.arrays["input/scale"] = np.ascontiguousarray(scale, np.float32)
        b.arrays["input/offset"] = np.ascontiguousarray(offset, np.float32)
        return b.src
    return b.add("affine", name=b.name, inputs=[b.src], scale_key=b.array(f"{b.name}/scale", scale),
                 offset_key=b.array(f"{b.name}/offset", offset))  # fmt: skip


def _lower_rescaling(b, layer) -> str:
    c = b.out_shape[-1]
    scale = np.broadcast_to(np.asarray(layer.scale, np.float32), (c,))
    offset = np.broadcast_to(np.asarray(layer.offset, np.float32), (c,))
    return _affine(b, scale, offset)


def _refuse_normalization(layer, in_shapes, out_shape, leading) -> str | None:
    return "Normalization(invert=True)" if layer.invert else None


def _lower_normalization(b, layer) -> str:
    c = b.out_shape[-1]
    mean = np.broadcast_to(_numpy(layer.mean).reshape(-1), (c,))
    var = np.broadcast_to(_numpy(layer.variance).reshape(-1), (c,))
    scale = 1.0 / np.maximum(np.sqrt(var), keras.backend.epsilon())
    return _affine(b, scale, -mean * scale)


def _lower_activation_layer(b, layer) -> str:
    if isinstance(layer, keras.layers.ReLU):
        mv = -1.0 if layer.max_value is None else float(layer.max_value)
        act = ("relu", float(layer.negative_slope), mv, float(layer.threshold))
    elif isinstance(layer, keras.layers.LeakyReLU):
        act = ("relu", float(layer.negative_slope), -1.0, 0.0)
    elif isinstance(layer, keras.layers.ELU):
        act = ("elu", float(layer.alpha), 0.0, 0.0)
    elif isinstance(layer, keras.layers.Softmax):
        act = ("softmax", 0.0, 0.0, 0.0)
    else:
        act = activation_step(layer.activation)
    return b.add("activation", name=b.name, inputs=[b.src], kind=act[0], a0=act[1], a1=act[2], a2=act[3])


def _refuse_activation(layer, in_shapes, out_shape, leading) -> str | None:
    return None if activation_step(layer.activation) is not None else f"activation {layer.activation}"


def _refuse_softmax(layer, in_shapes, out_shape, leading) -> str | None:
    return None if _is_channel_axis(layer.axis, len(out_shape), leading) else f"Softmax on axis {layer.axis}, only channels"


def _lower_identity(b, layer) -> str:
    return b.src


def _refuse_channels_first(layer, in_shapes, out_shape, leading) -> str | None:
    fmt = getattr(layer, "data_format", "channels_last")
    return None if fmt == "channels_last" else f"data_format={fmt!r}"


def _lower_zero_padding(b, layer) -> str:
    (top, bottom), (left, right) = layer.padding
    return b.add("pad", name=b.name, inputs=[b.src], top=int(top), bottom=int(bottom), left=int(left), right=int(right))


def _refuse_pool(layer, in_shapes, out_shape, leading) -> str | None:
    if layer.strides[0] != layer.strides[1]:
        return "pooling with unequal strides"
    return _refuse_channels_first(layer, in_shapes, out_shape, leading)


def _lower_pool(b, layer) -> str:
    kh, kw = layer.pool_size
    pt, pl = _pads(layer, b.in_shape)
    return b.add("pool", name=b.name, inputs=[b.src], is_max=isinstance(layer, keras.layers.MaxPooling2D), kh=int(kh), kw=int(kw),
                 stride=int(layer.strides[0]), pad_top=int(pt), pad_left=int(pl))  # fmt: skip


def _lower_global_pool(b, layer) -> str:
    return b.add("global_pool", name=b.name, inputs=[b.src], shape=(b.out_shape[-1],),
                 is_max=isinstance(layer, keras.layers.GlobalMaxPooling2D))  # fmt: skip


def _refuse_reshape(layer, in_shapes, out_shape, leading) -> str | None:
    target = tuple(layer.target_shape)
    vector = len(in_shapes[0]) in (1, 3) and all(d == 1 for d in target[:-1]) and all(d == 1 for d in tuple(in_shapes[0])[:-1])
    if len(target) == 1 or vector:
        return None
    return f"Reshape to {target}: only flattening (or a vector to (1, 1, C)) is supported"


def _lower_flatten(b, layer) -> str:
    if b.tensor_shape(b.src)[:2] == (1, 1):
        return b.src  # already a vector
    return b.add("flatten", name=b.name, inputs=[b.src], shape=(math.prod(b.in_shape),))


# --------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------

L = keras.layers
REGISTRY: tuple[Support, ...] = (
    Support(L.Conv2D, "mac", _lower_conv_as("conv2d"), _refuse_conv, _conv_macs),
    Support(L.DepthwiseConv2D, "mac", _lower_conv_as("depthwise"), _refuse_conv, _depthwise_macs),
    Support(L.SeparableConv2D, "mac", _lower_separable, _refuse_conv, _separable_macs),
    Support(L.Dense, "mac", _lower_dense, _refuse_dense, _dense_macs),
    Support(L.Add, "merge", _lower_merge("add"), _refuse_merge),
    Support(L.Subtract, "merge", _lower_merge("subtract"), _refuse_merge),
    Support(L.Multiply, "merge", _lower_merge("multiply"), _refuse_merge),
    Support(L.Average, "merge", _lower_merge("average"), _refuse_merge),
    Support(L.Maximum, "merge", _lower_merge("maximum"), _refuse_merge),
    Support(L.Minimum, "merge", _lower_merge("minimum"), _refuse_merge),
    Support(L.Concatenate, "merge", _lower_merge("concat"), _refuse_concat),
    Support(L.BatchNormalization, "frame", _lower_batchnorm, _refuse_batchnorm),
    Support(L.Rescaling, "frame", _lower_rescaling),
    Support(L.Normalization, "frame", _lower_normalization, _refuse_normalization),
    Support(L.ReLU, "frame", _lower_activation_layer),
    Support(L.LeakyReLU, "frame", _lower_activation_layer),
    Support(L.ELU, "frame", _lower_activation_layer),
    Support(L.Softmax, "frame", _lower_activation_layer, _refuse_softmax),
    Support(L.Activation, "frame", _lower_activation_layer, _refuse_activation),
    Support(L.Dropout, "frame", _lower_identity),
    Support(L.ZeroPadding2D, "frame", _lower_zero_padding, _refuse_channels_first),
    Support(L.AveragePooling2D, "frame", _lower_pool, _refuse_pool),
    Support(L.MaxPooling2D, "frame", _lower_pool, _refuse_pool),
    Support(L.GlobalAveragePooling2D, "frame", _lower_global_pool, _refuse_channels_first),
    Support(L.GlobalMaxPooling2D, "frame", _lower_global_pool, _refuse_channels_first),
    Support(L.Flatten, "frame", _lower_flatten, _refuse_channels_first),
    Support(L.Reshape, "frame", _lower_flatten, _refuse_reshape),
)
del L
_BY_CLASS = {s.layer: s for s in REGISTRY}


def support_of(layer) -> Support | None:
    """The entry of ``layer``'s class (its nearest registered base class), or None."""
    for cls in type(layer).__mro__:
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
    return None


def classes(role: str) -> tuple[type, ...]:
    """The registered layer classes with this role."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return tuple(s.layer for s in REGISTRY if s.role == role)


def refusal(layer, in_shapes: Sequence[Shape], out_shape: Shape, leading: int) -> str | None:
    """Why the runtime cannot run ``layer`` here (``"Name (reason)"``), or None if it can."""
    support = support_of(layer)
    if support is None:
        return f"{layer.name} ({type(layer).__name__})"
    reason = support.refuse(layer, in_shapes, out_shape, leading) if support.refuse else None
    return None if reason is None else f"{layer.name} ({reason})"


def layer_macs(layer, input_shape: Shape, output_shape: Shape) -> int:
    """Dense multiply-accumulates of one MAC layer for one frame (shapes without batch/time)."""
    support = support_of(layer)
    if support is None or support.macs is None:
        raise TypeError(f"{layer.name} ({type(layer).__name__}) is not a MAC layer")
    return int(support.macs(layer, tuple(input_shape), tuple(output_shape)))
