"""A plan re-sized to a world canvas, and the readout that replaces its final global pooling.

``canvas_plan`` recomputes every tensor's size of a fully convolutional plan for a larger input
(the same weights and paddings) and cuts it before the final global average pooling;
``cell_weights`` and ``Head`` turn the canvas's final feature map back into the per-frame model's
logits for a frame at a given place (``streaming.canvas.MotionEngine`` uses them).
"""

from __future__ import annotations

import copy

import numpy as np

from ops.elementwise import ACTIVATIONS, _act
from ops.geometry import implied_pad_after, output_size
from streaming.plan import MERGE_OPS, Plan, PlanError, validate_plan

#: steps the NumPy head after the final pooling can evaluate (on (1, 1, C) vectors)
HEAD_OPS = ("encode", "conv2d", "affine", "activation", "flatten")
#: ops whose output size follows from a window (kernel, stride, leading padding)
_WINDOW_OPS = ("conv2d", "depthwise", "pool")


def _window_shape(step: dict, kernel_hw: tuple[int, int], old_in, old_out, new_in) -> tuple[int, int]:
    """A window op's output size on a new input, with the paddings it had on the old one."""
    out = []
    for axis, k, pad in ((0, kernel_hw[0], step["pad_top"]), (1, kernel_hw[1], step["pad_left"])):
        after = implied_pad_after(old_in[axis], k, step["stride"], pad, old_out[axis])
        out.append(output_size(new_in[axis], k, step["stride"], pad, after))
    return out[0], out[1]


def final_pool_index(plan: Plan) -> int:
    """The index of the global average pooling that the output is read from; raises ``PlanError``
    if the model is not fully convolutional up to it (the canvas needs that)."""
    pools = [i for i, s in enumerate(plan.steps) if s["op"] == "global_pool"]
    if not pools:
        raise PlanError("motion compensation needs a model that ends in a global pooling (no flatten of the feature map)")
    i = pools[-1]
    if len(pools) > 1:
        raise PlanError(f"motion compensation: {plan.steps[pools[0]]['name']!r} pools the whole frame inside the network "
                        "(a squeeze-excite gate would pool the whole canvas)")  # fmt: skip
    if plan.steps[i]["is_max"]:
        raise PlanError(f"motion compensation needs a global *average* pooling, {plan.steps[i]['name']!r} is a max")
    for s in plan.steps[:i]:
        if s["op"] == "flatten":
            raise PlanError(f"motion compensation: {s['name']!r} flattens a feature map (not fully convolutional)")
    for s in plan.steps[i + 1 :]:
        if s["op"] not in HEAD_OPS:
            raise PlanError(f"motion compensation: {s['name']!r} ({s['op']}) after the pooling is not supported in the head")
    return i


def canvas_plan(plan: Plan, margin: int) -> Plan:
    """The plan's layers up to (not including) the final global pooling, re-sized to the canvas
    ``(H + 2 * margin, W + 2 * margin)``; its output is the final feature map.

    ``margin`` must be a multiple of the network's total stride, so that every layer's padding
    and the frame's cells at zero offset are those of the per-frame model.
    """
    cut = final_pool_index(plan)
    h, w, c = plan.input_shape
    feature = plan.steps[cut]["inputs"][0]
    stride = total_stride(plan)
    if margin < stride or margin % stride:
        raise ValueError(f"margin must be a positive multiple of the network's total stride {stride}, got {margin!r}")
    new = {}
    steps = copy.deepcopy(plan.steps[:cut])
    for s in steps:
        old_out = plan.tensors[s["output"]]
        ins = [new[t] for t in s["inputs"]]
        op = s["op"]
        if op == "input":
            shape = (h + 2 * margin, w + 2 * margin, c)
        elif op in _WINDOW_OPS:
            k = plan.arrays[s["kernel_key"]].shape[:2] if op != "pool" else (s["kh"], s["kw"])
            shape = (*_window_shape(s, k, plan.tensors[s["inputs"][0]], old_out, ins[0]), old_out[2])
        elif op == "pad":
            shape = (ins[0][0] + s["top"] + s["bottom"], ins[0][1] + s["left"] + s["right"], old_out[2])
        elif op in MERGE_OPS or op == "concat":
            full = [x for x, t in zip(ins, s["inputs"]) if plan.tensors[t][:2] != (1, 1) or old_out[:2] == (1, 1)]
            shape = (*max(full, key=lambda x: x[0] * x[1])[:2], old_out[2])
        else:  # encode, activation, affine: the input's shape
            shape = tuple(ins[0])
        new[s["output"]] = tuple(int(v) for v in shape)
    out = Plan((h + 2 * margin, w + 2 * margin, c), new, steps, dict(plan.arrays), feature, dict(plan.info))
    validate_plan(out)
    return out


def total_stride(plan: Plan) -> int:
    """Input pixels per cell of the feature map the final pooling averages (must divide the input size)."""
    h, w, _ = plan.input_shape
    fh, fw, _ = plan.tensors[plan.steps[final_pool_index(plan)]["inputs"][0]]
    if h % fh or w % fw or h // fh != w // fw:
        raise PlanError(f"motion compensation needs an input size divisible by the network's stride: {(h, w)} -> {(fh, fw)}")
    return h // fh


def cell_weights(cells: int, stride: int, start: int, length: int) -> np.ndarray:
    """Per feature cell along one axis: the fraction of the cell's ``stride`` input pixels that
    lie inside ``[start, start + length)`` (the frame's extent on the canvas)."""
    lo = np.arange(cells) * stride
    return np.clip(np.minimum(lo + stride, start + length) - np.maximum(lo, start), 0, stride) / stride


class Head:
    """The steps after the final global average pooling, evaluated in NumPy on the pooled vector.

    Encoders are identities here (the dense per-frame semantics): on the canvas the pooled
    vector is recomputed every frame, there is no stream state to keep in the head.
    """

    def __init__(self, plan: Plan):
        cut = final_pool_index(plan)
        self._steps = plan.steps[cut + 1 :]
        self._pooled = plan.steps[cut]["output"]
        self._output = plan.output
        self._arrays = plan.arrays

    def __call__(self, pooled: np.ndarray) -> np.ndarray:
        values = {self._pooled: pooled.astype(np.float32)}
        for s in self._steps:
            x = values[s["inputs"][0]]
            if s["op"] == "conv2d":
                k = self._arrays[s["kernel_key"]]
                y = x @ k.reshape(k.shape[-2], k.shape[-1]) + self._arrays[s["bias_key"]]
            elif s["op"] == "affine":
                y = x * self._arrays[s["scale_key"]] + self._arrays[s["offset_key"]]
            elif s["op"] == "activation":
                code = ACTIVATIONS[s["kind"]]
                y = np.array([_act(np.float32(v), code, s["a0"], s["a1"], s["a2"]) for v in x], np.float32)
            else:  # encode (identity), flatten of a (1, 1, C) vector
                y = x
            values[s["output"]] = y.astype(np.float32)
        return values[self._output]
