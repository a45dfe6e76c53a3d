"""Keras clip model -> engine ``Plan`` (this module imports Keras; the engine does not).

Walks the clip model's graph and lets ``deltanet.registry`` lower each layer (the same
table ``deltafy`` reads, so what trains also deploys): ``DeltaActivation`` layers become
encode steps, every other layer the steps its registry entry emits through a
:class:`PlanBuilder`. Finally every MAC layer whose input is not already a
``DeltaActivation`` gets an exact (threshold 0) change encoder, so baseline models run as
exact delta networks too.
"""

from __future__ import annotations

import numpy as np

from streaming.plan import MAC_OPS, Plan, validate_plan


class ConversionError(ValueError):
    """The model cannot be converted; names every unsupported layer."""


def _to_plan_shape(shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 1:
        return (1, 1, shape[0])
    raise ConversionError(f"cannot represent a per-frame tensor of shape {shape}")


class PlanBuilder:
    """The plan under construction, and the layer being lowered (``deltanet.registry``'s ``lower``).

    Per layer: ``name``, ``inputs`` (plan tensors of its inputs), ``src`` (the first),
    ``in_shape``/``out_shape`` (per-frame shapes).
    """

    def __init__(self, consumers: dict[int, int]):
        self.tensors: dict[str, tuple[int, int, int]] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.steps: list[dict] = []
        self._producer: dict[str, dict] = {}
        self._consumers = consumers
        self._node = None
        self.name, self.inputs, self.src, self.in_shape, self.out_shape = "", [], None, (), ()

    def begin(self, node, name: str, inputs: list[str]) -> None:
        self._node = node
        self.name, self.inputs = name, inputs
        self.src = inputs[0] if inputs else None
        self.in_shape = tuple(int(d) for d in node.input_tensors[0].shape[2:]) if node.input_tensors else ()
        self.out_shape = tuple(int(d) for d in node.outputs[0].shape[2:])

    def add(self, op: str, *, name: str, inputs: list[str], shape=None, output: str | None = None, **fields) -> str:
        """Append a step (its output tensor is named ``output``, default ``name``; shape default
        ``out_shape``); returns the output tensor's name."""
        output = output or name
        step = {"op": op, "name": name, "inputs": list(inputs), "output": output, **fields}
        self.tensors[output] = _to_plan_shape(self.out_shape if shape is None else shape)
        self.steps.append(step)
        self._producer[output] = step
        return output

    def array(self, key: str, value) -> str:
        self.arrays[key] = np.ascontiguousarray(np.asarray(value, np.float32))
        return key

    def producer(self, tensor: str) -> dict | None:
        return self._producer.get(tensor)

    def tensor_shape(self, tensor: str) -> tuple[int, int, int]:
        return self.tensors[tensor]

    def single_consumer(self) -> bool:
        """Whether the layer's (first) input feeds nothing else (then BatchNorm may fold into it)."""
        return self._consumers.get(id(self._node.input_tensors[0])) == 1


def to_plan(model) -> Plan:
    """Convert a clip model (``build_model``/``deltafy`` result, or its per-frame-logits part)."""
    import keras

    from deltanet.delta_activation import DeltaActivation
    from deltanet.frame_wise import FrameWise
    from deltanet.graph import graph_nodes
    from deltanet.model_surgery import flatten
    from deltanet.models import CLIP_HEAD, model_info
    from deltanet.registry import refusal, support_of
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
    consumers: dict[int, int] = {}
    for node in nodes:
        for t in node.input_tensors:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    b = PlanBuilder(consumers)
    names: dict[int, str] = {}  # id(KerasTensor) -> plan tensor name
    unsupported = []

    frame_shape = tuple(int(s) for s in frames_model.input.shape[2:])
    c_in = frame_shape[2]
    names[id(frames_model.input)] = b.add("input", name="input", inputs=[], shape=frame_shape, output="frame",
                                          scale_key=b.array("input/scale", np.ones(c_in)), offset_key=b.array("input/offset", np.zeros(c_in)))  # fmt: skip

    def frame(t):
        return tuple(int(d) for d in t.shape[2:])

    for node in nodes:
        layer = node.operation
        wrapped = isinstance(layer, FrameWise)
        inner = layer.layer if wrapped else layer
        if isinstance(layer, TemporalMean):
            continue
        out_t = node.outputs[0]
        if not isinstance(inner, DeltaActivation):
            # a wrapped layer sees frames (batch * time, ...), a merge layer clip tensors (batch, time, ...)
            reason = refusal(inner, [frame(t) for t in node.input_tensors], frame(out_t), 1 if wrapped else 2)
            if reason is None and (support_of(inner).role == "merge") == wrapped:
                reason = f"{inner.name} ({type(inner).__name__} {'wrapped in FrameWise' if wrapped else 'called on clip tensors'})"
            if reason is not None:
                unsupported.append(reason)
                continue
        if any(id(t) not in names for t in node.input_tensors):
            continue  # behind an unsupported layer: only checked (every offender is named)
        ins = [names[id(t)] for t in node.input_tensors]
        b.begin(node, inner.name, ins)
        if isinstance(inner, DeltaActivation):
            var = inner.step if inner.mode == "quantize" else inner.threshold
            param = np.broadcast_to(np.asarray(keras.ops.convert_to_numpy(var), np.float32), (b.out_shape[-1],))
            names[id(out_t)] = b.add("encode", name=inner.name, inputs=ins, mode=inner.mode, param_key=b.array(f"{inner.name}/param", param))
        else:
            names[id(out_t)] = support_of(inner).lower(b, inner)

    if unsupported:
        raise ConversionError(
            f"the streaming runtime cannot convert {len(unsupported)} layer(s) of {model.name!r}: {', '.join(sorted(set(unsupported)))}"
        )
    output = names[id(frames_model.output)]
    steps = _insert_exact_encoders(b.steps, b.tensors, b.arrays)
    plan = Plan(tuple(int(s) for s in frame_shape), b.tensors, steps, b.arrays, output, info)
    validate_plan(plan)
    return plan


def _insert_exact_encoders(steps, tensors, arrays):
    """Give every MAC step whose input is not an encode output an exact change encoder.

    Threshold 0 fires on any change, so the transmitted deltas reproduce the input exactly:
    the MAC layer still only works where its input changed.
    """
    produced_by = {s["output"]: s for s in steps}
    out = []
    added = {}
    for s in steps:
        if s["op"] in MAC_OPS:
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
