"""The engine plan: a converted model as plain data (JSON-able steps + named float32 arrays).

A plan is what ``streaming.convert`` produces from a Keras clip model and what a bundle
stores on disk; the engine executes it with NumPy and the numba kernels of ``ops`` only.

Tensors are one frame's activations, always ``(H, W, C)`` (a vector is ``(1, 1, N)``).
Steps, in execution order (``inputs``/``output`` name tensors, ``*_key`` name arrays):

=============  ==============================================================================
``input``      uint8 RGB frame -> float ``frame * scale + offset`` (``scale_key``, ``offset_key``)
``encode``     ``DeltaActivation``: ``mode`` (``threshold``/``quantize``), ``param_key`` (C,)
``conv2d``     Conv2D / pointwise / Dense (as 1x1): ``kernel_key`` (kh,kw,Cin,Cout),
               ``bias_key``, ``stride``, ``pad_top``, ``pad_left``; input must be an encode output
``depthwise``  DepthwiseConv2D: ``kernel_key`` (kh,kw,C,M), ``bias_key``, ``stride``, pads
``activation`` ``kind`` (see ``ops.elementwise.ACTIVATIONS``), ``a0, a1, a2`` parameters
``affine``     per-channel ``x * scale + offset`` (BatchNormalization, Rescaling...)
``add``        element-wise sum of the inputs (Keras order: ``((a + b) + c)...``)
``subtract``   ``a - b`` (exactly two inputs)
``multiply``   element-wise product of the inputs
``maximum``    element-wise maximum of the inputs
``minimum``    element-wise minimum of the inputs
``average``    the sum of the inputs divided by their count
``concat``     channel concatenation of the inputs
``pad``        ZeroPadding2D: ``top, bottom, left, right``
``pool``       Average/MaxPooling2D: ``is_max, kh, kw, stride, pad_top, pad_left``
``global_pool`` GlobalAverage/MaxPooling2D -> (1, 1, C): ``is_max``
``flatten``    (H, W, C) -> (1, 1, H*W*C) (C order, as Keras' Flatten of channels-last data)
=============  ==============================================================================

Merge steps (``add`` ... ``average``) broadcast a ``(1, 1, C)`` input over every pixel (a
squeeze-excite gate); every other input has the output's shape.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ops.geometry import conv_macs, implied_pad_after, output_size

PLAN_VERSION = 1

#: step op -> the keys its record must have (besides ``op``, ``name``, ``inputs``, ``output``).
STEP_FIELDS = {
    "input": ("scale_key", "offset_key"),
    "encode": ("mode", "param_key"),
    "conv2d": ("kernel_key", "bias_key", "stride", "pad_top", "pad_left"),
    "depthwise": ("kernel_key", "bias_key", "stride", "pad_top", "pad_left"),
    "activation": ("kind", "a0", "a1", "a2"),
    "affine": ("scale_key", "offset_key"),
    "add": (),
    "subtract": (),
    "multiply": (),
    "maximum": (),
    "minimum": (),
    "average": (),
    "concat": (),
    "pad": ("top", "bottom", "left", "right"),
    "pool": ("is_max", "kh", "kw", "stride", "pad_top", "pad_left"),
    "global_pool": ("is_max",),
    "flatten": (),
}
MAC_OPS = ("conv2d", "depthwise")
MERGE_OPS = ("add", "subtract", "multiply", "maximum", "minimum", "average")


class PlanError(ValueError):
    """A plan (or a bundle's manifest) is malformed; the message says what and where."""


@dataclass
class Plan:
    """A converted model. ``steps`` are dicts (see module doc), ``arrays`` float32 by key."""

    input_shape: tuple[int, int, int]
    tensors: dict[str, tuple[int, int, int]]
    steps: list[dict]
    arrays: dict[str, np.ndarray]
    output: str
    info: dict = field(default_factory=dict)

    def mac_steps(self) -> list[dict]:
        return [s for s in self.steps if s["op"] in MAC_OPS]

    def dense_macs(self, step: dict) -> int:
        """Dense MACs per frame of one MAC step."""
        kh, kw, cin = self.arrays[step["kernel_key"]].shape[:3]
        ho, wo, cout = self.tensors[step["output"]]
        return conv_macs(ho, wo, kh, kw, 1 if step["op"] == "depthwise" else cin, cout)

    def manifest(self) -> dict:
        """The JSON-able part of the plan (everything but the arrays' values)."""
        return {
            "plan_version": PLAN_VERSION,
            "input_shape": list(self.input_shape),
            "tensors": {k: list(v) for k, v in self.tensors.items()},
            "steps": copy.deepcopy(self.steps),
            "output": self.output,
            "info": copy.deepcopy(self.info),
            "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in self.arrays.items()},
        }

    def validate(self) -> None:
        """Check the plan's internal consistency; raises ``PlanError`` naming the problem."""
        validate_plan(self)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise PlanError(msg)


def validate_plan(plan: Plan, *, max_elements: int = 1 << 26) -> None:
    """Structural checks of a plan: known ops, defined tensors, array shapes that fit."""
    _need(len(plan.input_shape) == 3 and plan.input_shape[2] in (1, 3), f"input_shape must be (H, W, 1|3), got {plan.input_shape}")
    for name, shape in plan.tensors.items():
        _need(
            len(shape) == 3 and all(isinstance(s, int) and 0 < s for s in shape),
            f"tensor {name!r} has an invalid shape {shape}",
        )
        _need(int(np.prod(shape)) <= max_elements, f"tensor {name!r} is too large: {shape}")
    for key, a in plan.arrays.items():
        _need(a.dtype == np.float32, f"array {key!r} must be float32, got {a.dtype}")
        _need(a.size <= max_elements, f"array {key!r} is too large: {a.shape}")
    defined = set()
    for i, s in enumerate(plan.steps):
        op = s.get("op")
        where = f"step {i} ({s.get('name', '?')})"
        _need(op in STEP_FIELDS, f"{where}: unknown op {op!r}")
        for f in ("name", "inputs", "output") + STEP_FIELDS[op]:
            _need(f in s, f"{where}: missing field {f!r}")
        for t in s["inputs"]:
            _need(t in defined, f"{where}: input tensor {t!r} is not produced by an earlier step")
        _need(s["output"] in plan.tensors, f"{where}: output tensor {s['output']!r} has no shape")
        _need(s["output"] not in defined, f"{where}: tensor {s['output']!r} is produced twice")
        for k in ("kernel_key", "bias_key", "param_key", "scale_key", "offset_key"):
            if k in s:
                _need(s[k] in plan.arrays, f"{where}: array {s[k]!r} is missing")
        out = plan.tensors[s["output"]]
        ins = [plan.tensors[t] for t in s["inputs"]]
        if op == "input":
            _need(i == 0 and not s["inputs"], f"{where}: the input step must come first and take no inputs")
            _need(tuple(out) == tuple(plan.input_shape), f"{where}: output shape {out} != input_shape")
        else:
            _need(len(ins) >= 1, f"{where}: needs an input")
        if op in MAC_OPS:
            producer = next(p for p in plan.steps if p["output"] == s["inputs"][0])
            _need(producer["op"] == "encode", f"{where}: a MAC step's input must come from an encode step")
            kernel = plan.arrays[s["kernel_key"]]
            _need(kernel.ndim == 4, f"{where}: kernel must be 4-D, got {kernel.shape}")
            kh, kw, cin, m = kernel.shape
            _need(ins[0][2] == cin, f"{where}: kernel expects {cin} input channels, tensor has {ins[0][2]}")
            cout = cin * m if op == "depthwise" else m
            _need(out[2] == cout, f"{where}: output has {out[2]} channels, kernel gives {cout}")
            _need(plan.arrays[s["bias_key"]].shape == (cout,), f"{where}: bias must be ({cout},)")
            _need(s["stride"] >= 1 and 0 <= s["pad_top"] < kh and 0 <= s["pad_left"] < kw, f"{where}: bad stride/padding")
            for axis, k, pad in ((0, kh, s["pad_top"]), (1, kw, s["pad_left"])):
                after = implied_pad_after(ins[0][axis], k, s["stride"], pad, out[axis])
                _need(after < k and output_size(ins[0][axis], k, s["stride"], pad, after) == out[axis],
                      f"{where}: output size {out[:2]} does not follow from the input and kernel")
        if op == "encode":
            _need(s["mode"] in ("threshold", "quantize"), f"{where}: unknown mode {s['mode']!r}")
            _need(plan.arrays[s["param_key"]].shape == (ins[0][2],), f"{where}: param must have one value per channel")
            _need(tuple(out) == tuple(ins[0]), f"{where}: encode must keep the shape")
        if op in ("affine", "input"):
            c = out[2]
            _need(plan.arrays[s["scale_key"]].shape == (c,) and plan.arrays[s["offset_key"]].shape == (c,), f"{where}: scale/offset must be ({c},)")
        if op in ("activation", "affine"):
            _need(all(tuple(x) == tuple(out) for x in ins), f"{where}: input and output shapes differ")
        if op in MERGE_OPS:
            _need(len(ins) >= 2 and (op != "subtract" or len(ins) == 2), f"{where}: {op} needs {'two' if op == 'subtract' else 'two or more'} inputs")
            _need(all(tuple(x) == tuple(out) or tuple(x) == (1, 1, out[2]) for x in ins) and any(tuple(x) == tuple(out) for x in ins),
                  f"{where}: every input must have the output's shape {tuple(out)} or be a (1, 1, {out[2]}) vector")
        if op == "concat":
            _need(all(x[:2] == out[:2] for x in ins) and sum(x[2] for x in ins) == out[2], f"{where}: bad concat shapes")
        if op == "flatten":
            _need(out[0] == out[1] == 1 and out[2] == int(np.prod(ins[0])), f"{where}: bad flatten shape")
        if op == "global_pool":
            _need(out[0] == out[1] == 1 and out[2] == ins[0][2], f"{where}: bad global pooling shape")
        if op == "pad":
            _need(
                out[0] == ins[0][0] + s["top"] + s["bottom"] and out[1] == ins[0][1] + s["left"] + s["right"],
                f"{where}: bad padding shape",
            )
        defined.add(s["output"])
    _need(plan.output in defined, f"output tensor {plan.output!r} is never produced")

