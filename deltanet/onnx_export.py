"""A Keras model with dict inputs and outputs as an ONNX model (tf2onnx), shared by ``training.export`` and
``streaming.bench``.

tf2onnx 1.17 mishandles dict-structured ``tf.function``s, so the model is traced with a flat signature
and a list output, and the graph outputs (tf2onnx calls them ``Identity:0``...) get their names back.
"""

from __future__ import annotations

from deltanet.cli import quiet_stderr_fd

ONNX_OPSET = 17


class OnnxUnavailable(RuntimeError):
    """tf2onnx cannot be imported or cannot convert the model; the message says why, in one line."""


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def keras_to_onnx(model, output_names: dict[str, str] | None = None, opset: int = ONNX_OPSET):
    """``model`` (dict inputs, dict outputs) as an ``onnx.ModelProto``.

    Inputs keep their keys as names; output ``k`` is called ``output_names.get(k, k)`` (ONNX forbids an
    input and an output of the same name, which a stateful model's states would otherwise have).
    """
    import tensorflow as tf

    try:
        with quiet_stderr_fd():
            import tf2onnx
    except Exception as e:  # noqa: BLE001 - e.g. a protobuf that tf2onnx cannot use
        raise OnnxUnavailable(f"tf2onnx fails to import here: {first_line(e)}") from e
    tf2onnx.logging.set_level(tf2onnx.logging.ERROR)
    inputs = model.input
    names = list(inputs)
    specs = [tf.TensorSpec(inputs[k].shape, inputs[k].dtype, name=k) for k in names]
    out_keys = sorted(model.output)

    def flat(*args):
        outputs = model(dict(zip(names, args)), training=False)
        return [outputs[k] for k in out_keys]

    function = tf.function(flat, input_signature=specs)
    try:
        with quiet_stderr_fd():
            model_proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=opset)
    except Exception as e:  # noqa: BLE001 - tf2onnx raises many types
        raise OnnxUnavailable(f"tf2onnx {tf2onnx.__version__} cannot convert {model.name}: {first_line(e)}") from e
    _rename_outputs(model_proto, [(output_names or {}).get(k, k) for k in out_keys])
    return model_proto


def _rename_outputs(model_proto, new_names: list[str]) -> None:
    """Give the graph outputs (in order) the names ``new_names``."""
    graph = model_proto.graph
    if len(graph.output) != len(new_names):
        raise OnnxUnavailable(f"tf2onnx produced {len(graph.output)} outputs, expected {len(new_names)}")
    mapping = {o.name: n for o, n in zip(graph.output, new_names)}
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for value in list(graph.value_info) + list(graph.output):
        if value.name in mapping:
            value.name = mapping[value.name]
