"""Keras clip model -> engine ``Plan`` (this module imports Keras; the engine does not).

Folds BatchNormalization into the preceding convolution, maps Dense to a 1x1 convolution,
splits SeparableConv2D into depthwise + pointwise, and gives every MAC layer whose input is
not already a ``DeltaActivation`` an exact (threshold 0) change encoder, so baseline models
run as exact delta networks too.
"""

from __future__ import annotations

import numpy as np

from ops.elementwise import ACTIVATIONS
from streaming.plan import Plan, validate_plan


class ConversionError(ValueError):
    """The model cannot be converted; names every unsupported layer."""


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _activation_step(name):
    """Keras activation name or function -> (kind, a0, a1, a2), or None if unknown."""
    import keras

    if callable(name):
        name = keras.activations.serialize(name)
        if isinstance(name, dict):
            name = name.get("config", name.get("class_name"))
    name = {"silu": "swish", None: "linear"}.get(name, name)
    if name == "relu":
        return ("relu", 0.0, -1.0, 0.0)
    if name == "relu6":
        return ("relu", 0.0, 6.0, 0.0)
    if name == "elu":
        return ("elu", 1.0, 0.0, 0.0)
    if name in ACTIVATIONS:
        return (name, 0.0, 0.0, 0.0)
    return None


def _to_plan_shape(shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 1:
        return (1, 1, shape[0])
    raise ConversionError(f"cannot represent a per-frame tensor of shape {shape}")


def to_plan(model) -> Plan:
    """Convert a clip model (``build_model``/``deltafy`` result, or its per-frame-logits part)."""
    import keras

    from deltanet.delta_activation import DeltaActivation
    from deltanet.frame_wise import FrameWise
    from deltanet.graph import graph_nodes
    from deltanet.models import CLIP_HEAD, model_info
    from deltanet.pretrained import flatten
    from deltanet.temporal_mean import TemporalMean

    model = flatten(model, copy=True)  # nested models (a clip model inside a wrapper) become one graph
    info = model_info(model)
    try:
        frames_model = keras.Model(model.input, model.get_layer(CLIP_HEAD).input)
    except ValueError:
        frames_model = model
    if len(frames_model.input.shape) != 5:
        raise ConversionError(
            f"expected a clip model with input (batch, time, H, W, C), got input shape {frames_model.input.shape}"
        )
    nodes = graph_nodes(frames_model)
    tensors: dict[str, tuple[int, int, int]] = {}
    arrays: dict[str, np.ndarray] = {}
    steps: list[dict] = []
    names: dict[int, str] = {}  # id(KerasTensor) -> plan tensor name
    producer: dict[str, dict] = {}  # plan tensor -> step that produced it
    consumers: dict[int, int] = {}
    for node in nodes:
        for t in node.input_tensors:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    unsupported = []

    def add_step(step, shape):
        tensors[step["output"]] = _to_plan_shape(shape)
        steps.append(step)
        producer[step["output"]] = step
        return step["output"]

    def array(key, value):
        arrays[key] = np.ascontiguousarray(np.asarray(value, np.float32))
        return key

    frame_shape = tuple(int(s) for s in frames_model.input.shape[2:])
    c_in = frame_shape[2]
    names[id(frames_model.input)] = add_step(
        {
            "op": "input",
            "name": "input",
            "inputs": [],
            "output": "frame",
            "scale_key": array("input/scale", np.ones(c_in)),
            "offset_key": array("input/offset", np.zeros(c_in)),
        },
        frame_shape,
    )

    def shape_of(t):
        return tuple(int(s) for s in t.shape[2:])

    for node in nodes:
        layer = node.operation
        ins = [names[id(t)] for t in node.input_tensors if id(t) in names]
        out_t = node.outputs[0]
        inner = layer.layer if isinstance(layer, FrameWise) else layer
        lname = inner.name
        out_shape = shape_of(out_t)
        out_name = lname

        if isinstance(layer, TemporalMean):
            continue
        if isinstance(inner, DeltaActivation):
            c = out_shape[-1]
            var = inner.step if inner.mode == "quantize" else inner.threshold
            param = np.broadcast_to(np.asarray(keras.ops.convert_to_numpy(var), np.float32), (c,))
            names[id(out_t)] = add_step(
                {"op": "encode", "name": lname, "inputs": ins, "output": out_name, "mode": inner.mode,
                 "param_key": array(f"{lname}/param", param)},
                out_shape,
            )
            continue
        if not isinstance(layer, FrameWise) and isinstance(inner, (keras.layers.Add, keras.layers.Concatenate)):
            if isinstance(inner, keras.layers.Concatenate) and inner.axis not in (-1, len(out_t.shape) - 1):
                unsupported.append(f"{lname} (Concatenate on axis {inner.axis}, only channels)")
                continue
            op = "add" if isinstance(inner, keras.layers.Add) else "concat"
            names[id(out_t)] = add_step({"op": op, "name": lname, "inputs": ins, "output": out_name}, out_shape)
            continue
        if not isinstance(layer, FrameWise):
            unsupported.append(f"{lname} ({type(inner).__name__})")
            continue

        in_shape = shape_of(node.input_tensors[0])
        src = ins[0] if ins else None
        if isinstance(inner, keras.layers.SeparableConv2D):
            dw_kernel = keras.ops.convert_to_numpy(inner.depthwise_kernel)
            pw_kernel = keras.ops.convert_to_numpy(inner.pointwise_kernel)
            bias = keras.ops.convert_to_numpy(inner.bias) if inner.use_bias else np.zeros(pw_kernel.shape[-1])
            stride, pads = _conv_geometry(inner, in_shape)
            mid_shape = (out_shape[0], out_shape[1], dw_kernel.shape[2] * dw_kernel.shape[3])
            mid = add_step(
                {"op": "depthwise", "name": f"{lname}/depthwise", "inputs": [src], "output": f"{lname}/depthwise",
                 "kernel_key": array(f"{lname}/depthwise_kernel", dw_kernel),
                 "bias_key": array(f"{lname}/depthwise_bias", np.zeros(mid_shape[2])),
                 "stride": stride, "pad_top": pads[0], "pad_left": pads[1]},
                mid_shape,
            )
            names[id(out_t)] = add_step(
                {"op": "conv2d", "name": lname, "inputs": [mid], "output": out_name,
                 "kernel_key": array(f"{lname}/kernel", pw_kernel), "bias_key": array(f"{lname}/bias", bias),
                 "stride": 1, "pad_top": 0, "pad_left": 0},
                out_shape,
            )
            _activation_after(inner, lname, out_name, out_shape, add_step, names, out_t, unsupported)
            continue
        if isinstance(inner, (keras.layers.DepthwiseConv2D, keras.layers.Conv2D)):
            if isinstance(inner, keras.layers.Conv2D) and inner.groups != 1:
                unsupported.append(f"{lname} (grouped Conv2D)")
                continue
            if any(d != 1 for d in inner.dilation_rate):
                unsupported.append(f"{lname} (dilated convolution)")
                continue
            depthwise = isinstance(inner, keras.layers.DepthwiseConv2D)
            kernel = keras.ops.convert_to_numpy(inner.kernel)
            cout = out_shape[-1]
            bias = keras.ops.convert_to_numpy(inner.bias) if inner.use_bias else np.zeros(cout)
            stride, pads = _conv_geometry(inner, in_shape)
            names[id(out_t)] = add_step(
                {"op": "depthwise" if depthwise else "conv2d", "name": lname, "inputs": [src], "output": out_name,
                 "kernel_key": array(f"{lname}/kernel", kernel), "bias_key": array(f"{lname}/bias", bias),
                 "stride": stride, "pad_top": pads[0], "pad_left": pads[1]},
                out_shape,
            )
            _activation_after(inner, lname, out_name, out_shape, add_step, names, out_t, unsupported)
            continue
        if isinstance(inner, keras.layers.Dense):
            kernel = keras.ops.convert_to_numpy(inner.kernel)
            bias = keras.ops.convert_to_numpy(inner.bias) if inner.use_bias else np.zeros(kernel.shape[1])
            if len(in_shape) not in (1, 3):
                unsupported.append(f"{lname} (Dense on a rank-{len(in_shape)} frame tensor)")
                continue
            names[id(out_t)] = add_step(
                {"op": "conv2d", "name": lname, "inputs": [src], "output": out_name,
                 "kernel_key": array(f"{lname}/kernel", kernel[None, None]), "bias_key": array(f"{lname}/bias", bias),
                 "stride": 1, "pad_top": 0, "pad_left": 0},
                out_shape,
            )
            _activation_after(inner, lname, out_name, out_shape, add_step, names, out_t, unsupported)
            continue
        if isinstance(inner, keras.layers.BatchNormalization):
            gamma = keras.ops.convert_to_numpy(inner.gamma) if inner.scale else 1.0
            beta = keras.ops.convert_to_numpy(inner.beta) if inner.center else 0.0
            mean = keras.ops.convert_to_numpy(inner.moving_mean)
            var = keras.ops.convert_to_numpy(inner.moving_variance)
            if inner.axis not in (-1, len(out_t.shape) - 1, [len(out_t.shape) - 1]):
                unsupported.append(f"{lname} (BatchNormalization on axis {inner.axis})")
                continue
            scale = (gamma / np.sqrt(var.astype(np.float64) + inner.epsilon)).astype(np.float32)
            offset = (beta - mean * scale).astype(np.float32)
            prev = producer.get(src)
            if prev is not None and prev["op"] in ("conv2d", "depthwise") and consumers.get(id(node.input_tensors[0])) == 1:
                # Fold: W' = W * scale (per output channel), b' = b * scale + offset.
                k = arrays[prev["kernel_key"]]
                if prev["op"] == "depthwise":
                    kh, kw, c, m = k.shape
                    arrays[prev["kernel_key"]] = np.ascontiguousarray(k * scale.reshape(1, 1, c, m))
                else:
                    arrays[prev["kernel_key"]] = np.ascontiguousarray(k * scale)
                arrays[prev["bias_key"]] = (arrays[prev["bias_key"]] * scale + offset).astype(np.float32)
                prev["folded"] = prev.get("folded", []) + [lname]
                names[id(out_t)] = src
                continue
            names[id(out_t)] = add_step(
                {"op": "affine", "name": lname, "inputs": [src], "output": out_name,
                 "scale_key": array(f"{lname}/scale", scale), "offset_key": array(f"{lname}/offset", offset)},
                out_shape,
            )
            continue
        if isinstance(inner, (keras.layers.Rescaling, keras.layers.Normalization)):
            c = out_shape[-1]
            if isinstance(inner, keras.layers.Rescaling):
                scale = np.broadcast_to(np.asarray(inner.scale, np.float32), (c,))
                offset = np.broadcast_to(np.asarray(inner.offset, np.float32), (c,))
            else:
                mean = np.broadcast_to(keras.ops.convert_to_numpy(inner.mean).reshape(-1), (c,))
                var = np.broadcast_to(keras.ops.convert_to_numpy(inner.variance).reshape(-1), (c,))
                if inner.invert:
                    unsupported.append(f"{lname} (Normalization(invert=True))")
                    continue
                scale = 1.0 / np.maximum(np.sqrt(var), keras.backend.epsilon())
                offset = -mean * scale
            if producer[src]["op"] == "input" and np.all(arrays["input/scale"] == 1) and np.all(arrays["input/offset"] == 0):
                arrays["input/scale"] = np.ascontiguousarray(scale, np.float32)
                arrays["input/offset"] = np.ascontiguousarray(offset, np.float32)
                names[id(out_t)] = src
                continue
            names[id(out_t)] = add_step(
                {"op": "affine", "name": lname, "inputs": [src], "output": out_name,
                 "scale_key": array(f"{lname}/scale", scale), "offset_key": array(f"{lname}/offset", offset)},
                out_shape,
            )
            continue
        act = None
        if isinstance(inner, keras.layers.ReLU):
            mv = -1.0 if inner.max_value is None else float(inner.max_value)
            act = ("relu", float(inner.negative_slope), mv, float(inner.threshold))
        elif isinstance(inner, keras.layers.LeakyReLU):
            act = ("relu", float(inner.negative_slope), -1.0, 0.0)
        elif isinstance(inner, keras.layers.ELU):
            act = ("elu", float(inner.alpha), 0.0, 0.0)
        elif isinstance(inner, keras.layers.Softmax):
            act = ("softmax", 0.0, 0.0, 0.0)
        elif isinstance(inner, keras.layers.Activation):
            act = _activation_step(inner.activation)
            if act is None:
                unsupported.append(f"{lname} (activation {inner.activation})")
                continue
        if act is not None:
            names[id(out_t)] = add_step(
                {"op": "activation", "name": lname, "inputs": [src], "output": out_name, "kind": act[0],
                 "a0": act[1], "a1": act[2], "a2": act[3]},
                out_shape,
            )
            continue
        if isinstance(inner, keras.layers.Dropout):
            names[id(out_t)] = src
            continue
        if isinstance(inner, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = inner.padding
            names[id(out_t)] = add_step(
                {"op": "pad", "name": lname, "inputs": [src], "output": out_name, "top": top, "bottom": bottom, "left": left, "right": right},
                out_shape,
            )
            continue
        if isinstance(inner, (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)):
            kh, kw = inner.pool_size
            sh, sw = inner.strides
            if sh != sw:
                unsupported.append(f"{lname} (pooling with unequal strides)")
                continue
            pads = (_same_pads(in_shape[0], kh, sh)[0], _same_pads(in_shape[1], kw, sw)[0]) if inner.padding == "same" else (0, 0)
            names[id(out_t)] = add_step(
                {"op": "pool", "name": lname, "inputs": [src], "output": out_name,
                 "is_max": isinstance(inner, keras.layers.MaxPooling2D), "kh": kh, "kw": kw, "stride": sh,
                 "pad_top": pads[0], "pad_left": pads[1]},
                out_shape,
            )
            continue
        if isinstance(inner, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
            names[id(out_t)] = add_step(
                {"op": "global_pool", "name": lname, "inputs": [src], "output": out_name,
                 "is_max": isinstance(inner, keras.layers.GlobalMaxPooling2D)},
                (out_shape[-1],),
            )
            continue
        if isinstance(inner, (keras.layers.Flatten, keras.layers.Reshape)):
            if isinstance(inner, keras.layers.Reshape) and len(inner.target_shape) != 1:
                unsupported.append(f"{lname} (Reshape to {inner.target_shape}: only flattening is supported)")
                continue
            if tensors[src][:2] == (1, 1):
                names[id(out_t)] = src  # already a vector
                continue
            names[id(out_t)] = add_step(
                {"op": "flatten", "name": lname, "inputs": [src], "output": out_name}, (int(np.prod(in_shape)),)
            )
            continue
        unsupported.append(f"{lname} ({type(inner).__name__})")

    if unsupported:
        raise ConversionError(
            f"the streaming runtime cannot convert {len(unsupported)} layer(s) of {model.name!r}: {', '.join(sorted(set(unsupported)))}"
        )
    output = names[id(frames_model.output)]
    steps = _insert_exact_encoders(steps, tensors, arrays)
    plan = Plan(tuple(int(s) for s in frame_shape), tensors, steps, arrays, output, info)
    validate_plan(plan)
    return plan


def _conv_geometry(layer, in_shape):
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    if sh != sw:
        raise ConversionError(f"{layer.name}: unequal strides {layer.strides} are not supported")
    if layer.padding == "same":
        return sh, (_same_pads(in_shape[0], kh, sh)[0], _same_pads(in_shape[1], kw, sw)[0])
    return sh, (0, 0)


def _activation_after(inner, lname, out_name, out_shape, add_step, names, out_t, unsupported):
    """A MAC layer's own ``activation=`` argument becomes an activation step after it."""
    act = _activation_step(getattr(inner, "activation", None))
    if act is None:
        unsupported.append(f"{lname} (activation {inner.activation})")
        return
    if act[0] == "linear":
        return
    steps_out = f"{lname}/activation"
    # The MAC output itself stays pre-activation; BatchNorm cannot be folded across it.
    names[id(out_t)] = add_step(
        {"op": "activation", "name": steps_out, "inputs": [out_name], "output": steps_out, "kind": act[0],
         "a0": act[1], "a1": act[2], "a2": act[3]},
        out_shape,
    )


def _insert_exact_encoders(steps, tensors, arrays):
    """Give every MAC step whose input is not an encode output an exact change encoder.

    Threshold 0 fires on any change, so the transmitted deltas reproduce the input exactly:
    the MAC layer still only works where its input changed.
    """
    produced_by = {s["output"]: s for s in steps}
    out = []
    added = {}
    for s in steps:
        if s["op"] in ("conv2d", "depthwise"):
            src = s["inputs"][0]
            if produced_by[src]["op"] != "encode":
                if src not in added:
                    name = f"{src}/exact_delta"
                    c = tensors[src][2]
                    arrays[f"{name}/param"] = np.zeros(c, np.float32)
                    tensors[name] = tensors[src]
                    enc = {"op": "encode", "name": name, "inputs": [src], "output": name, "mode": "threshold",
                           "param_key": f"{name}/param", "exact": True}
                    out.append(enc)
                    added[src] = name
                s = dict(s, inputs=[added[src]])
        out.append(s)
    return out
