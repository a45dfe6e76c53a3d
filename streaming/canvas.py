"""Motion-compensated delta inference: the network runs on a fixed world canvas (MotionDeltaCNN-style).

A panning camera shifts every pixel, so every activation changes and the deltas become dense.
``MotionEngine`` keeps the engine's state in world coordinates instead:

* the plan is re-sized to a canvas ``(H + 2M, W + 2M)`` (``canvas_plan``: the same weights,
  every tensor's size recomputed; the model must be fully convolutional up to its final
  global average pooling), cut before that pooling;
* every frame is pasted into the canvas at its accumulated integer camera offset
  (``streaming.motion.CameraTracker``); canvas pixels outside the current frame keep their last
  content, so they transmit no deltas, and content that only moved costs nothing;
* the readout averages the canvas's final feature map under the current frame (area weights per
  cell, exact when the offset is a multiple of the network's total stride) and runs the head
  after the pooling (linear layers, encoders as identities) in NumPy;
* when the frame would leave the margin, the canvas re-centres: its content is shifted back
  by the offset, the unknown strip is filled with mid-gray, and the canvas engine takes a
  keyframe (one dense canvas pass, ``(H + 2M)(W + 2M) / HW`` of a frame's dense MACs). A scene
  cut (``Motion.refresh``) rebuilds the canvas from the new frame, also with a keyframe.
  Memory is the canvas and the engine's buffers: constant however long the camera pans.

Static camera: the plain engine runs until the tracker first reports a non-zero offset, so a
stream without detected motion gives bit-identical logits to ``DeltaEngine`` (then the
canvas path continues for the rest of the stream, until ``reset``).

What is approximated (departures from the per-frame model, measured by ``scripts/motion_eval.py``):
the stride phase (a stride-s layer samples the world grid, so when the offset is not a
multiple of s it sees the frame's pixels at another phase than the per-frame model); the
border (the frame's edge sees stale world content or mid-gray where the per-frame model sees
zero padding); stale canvas content (the margin's content is as old as the last time the
frame covered it; it only reaches the readout through the receptive field of the border cells);
the sub-pixel part of the motion (placement is integer, residual < ``deadband`` px); non-
translational motion (rotation, zoom, parallax) is not compensated, it only costs deltas. The
delta encoders' own approximation accumulates as in the plain engine; ``keyframe_interval``
bounds it the same way (a canvas keyframe every N canvas frames).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np

from deltanet.cli import MOTIONS
from ops.elementwise import ACTIVATIONS, _act
from ops.geometry import implied_pad_after, output_size
from streaming.engine import DeltaEngine, FrameStats
from streaming.motion import CameraTracker, Motion
from streaming.plan import MERGE_OPS, Plan, PlanError, validate_plan

#: mid-gray: what canvas pixels never seen hold (the zero of a [-1, 1] input scaling)
UNSEEN = 128
#: threshold factor outside the frame's window (``DeltaEngine.set_region``): canvas cells outside
#: the frame are not read out, so their deltas are not worth transmitting (they stay frozen)
FREEZE = 1e4
#: steps the NumPy head after the final pooling can evaluate (on (1, 1, C) vectors)
HEAD_OPS = ("encode", "conv2d", "affine", "activation", "flatten")
#: ops whose output size follows from a window (kernel, stride, leading padding)
_WINDOW_OPS = ("conv2d", "depthwise", "pool")


@dataclass
class MotionStats(FrameStats):
    """``FrameStats`` plus the frame's camera motion and where the frame ran.

    On the canvas path the per-layer counts are the canvas engine's while ``dense_macs`` /
    ``input_elements`` stay the per-frame model's, so ``mac_density`` is a fraction of the
    per-frame model's dense MACs (a canvas keyframe: the canvas/frame area ratio, > 1) and
    ``keyframe`` is only set for the plain engine's keyframes (``refresh`` marks the canvas's).
    """

    dx: float = 0.0
    dy: float = 0.0
    confidence: float = 1.0
    refresh: bool = False  # the canvas was (re)built: scene cut, re-centre or first motion
    offset: tuple[int, int] = (0, 0)  # the frame's (x, y) shift from the canvas centre
    on_canvas: bool = False
    motion_ms: float = 0.0  # estimation, pasting and readout (included in total_ms)


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


class MotionEngine:
    """``DeltaEngine`` with global-motion compensation (``motion="global"`` on the CLIs).

    Args:
        engine: the plain engine (its settings are copied to the canvas engine).
        margin: canvas margin in model-input pixels on each side, a multiple of the network's
            total stride. Defaults to one stride (16 px for a stride-16 network at 112x112):
            on ``kinetics_cleaning_pool.mp4`` 16 / 32 / 64 px gave MAC density 0.423 / 0.432 / 0.441
            (a wider margin re-centres less often, but each re-centre keyframe costs more).
        freeze_outside: raise the delta thresholds of every threshold-mode encoder outside the
            frame's window by ``FREEZE`` (the canvas engine's region prior), so that changes
            spreading into the margin through the receptive fields are not transmitted. The
            frame's border cells then see a frozen margin (an approximation, like the stale
            canvas). Defaults to True (measured: MAC density -6..-12% on three moving clips).
        tracker: a ``streaming.motion.CameraTracker`` (default: its defaults at the input size).

    Same interface as ``DeltaEngine`` for what the CLIs use (``step``, ``run``, ``reset``,
    ``warmup``, ``prepare``, ``clone``, ``plan``, ``layer_names``, ``dense_macs``...);
    ``step`` returns ``MotionStats``.
    """

    def __init__(self, engine: DeltaEngine, *, margin: int | None = None, tracker: CameraTracker | None = None,
                 freeze_outside: bool = True):
        if not isinstance(engine, DeltaEngine):
            raise TypeError(f"engine must be a DeltaEngine, got {type(engine).__name__}")
        if engine.region is not None:
            raise ValueError("motion compensation cannot be combined with region-weighted thresholds")
        self.base = engine
        self.stride = total_stride(engine.plan)
        self.margin = self.stride if margin is None else int(margin)
        plan = canvas_plan(engine.plan, self.margin)
        names = {st["name"] for st in plan.mac_steps()}
        granularity = {n: g for n, g in engine.granularity.items() if n in names}
        self.canvas_engine = DeltaEngine(plan, mode=engine.mode, granularity=granularity, threads=engine.threads,
                                         keyframe_interval=engine.keyframe_interval, profile=engine.profile)  # fmt: skip
        self.head = Head(engine.plan)
        self.tracker = tracker if tracker is not None else CameraTracker(engine.input_shape)
        self._feature_shape = plan.tensors[plan.output]
        self._body = [engine.layer_names.index(n) for n in self.canvas_engine.layer_names]  # canvas layer -> plain layer
        self._canvas = np.full(plan.input_shape, UNSEEN, np.uint8)
        self.freeze_outside = bool(freeze_outside) and engine.mode == "delta" and bool(self.canvas_engine.program.threshold_encoders)
        self.reset()

    # the plain engine's description (the per-frame model the canvas run stands for)
    plan = property(lambda self: self.base.plan)
    info = property(lambda self: self.base.info)
    class_names = property(lambda self: self.base.class_names)
    input_shape = property(lambda self: self.base.input_shape)
    layer_names = property(lambda self: self.base.layer_names)
    dense_macs = property(lambda self: self.base.dense_macs)
    input_elements = property(lambda self: self.base.input_elements)
    mode = property(lambda self: self.base.mode)
    threads = property(lambda self: self.base.threads)
    profile = property(lambda self: self.base.profile)
    keyframe_interval = property(lambda self: self.base.keyframe_interval)
    region = property(lambda self: None)
    motion = "global"

    @property
    def granularity(self) -> dict[str, str]:
        return self.base.granularity

    @granularity.setter
    def granularity(self, granularity) -> None:
        self.base.granularity = granularity
        names = set(self.canvas_engine.layer_names)
        self.canvas_engine.granularity = {n: g for n, g in self.base.granularity.items() if n in names}

    @property
    def on_canvas(self) -> bool:
        """Whether the stream has left the plain path (motion was detected since ``reset``)."""
        return self._on_canvas

    def clone(self, **overrides) -> "MotionEngine":
        """A new compensated engine around ``engine.clone(**overrides)`` (own stream state)."""
        t = self.tracker
        tracker = CameraTracker(self.input_shape, min_confidence=t.min_confidence, deadband=t.deadband, cut_level=t.cut_level)
        return MotionEngine(self.base.clone(**overrides), margin=self.margin, tracker=tracker, freeze_outside=self.freeze_outside)

    def set_region(self, *args, **kwargs) -> None:
        raise ValueError("motion compensation cannot be combined with region-weighted thresholds")

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        return self.base.prepare(frame)

    def reset(self) -> None:
        """Start a new stream: the plain path again, the tracker at its origin."""
        self.base.reset()
        self.canvas_engine.reset()
        self.tracker.reset()
        self._on_canvas = False
        self._origin = (0, 0)  # the tracker offset at which the frame sits at the canvas centre
        self._window = None  # (top, left) of the frame the region prior was last set for
        self.frame_index = 0

    def warmup(self) -> None:
        """Compile and warm both engines (plain and canvas), then reset."""
        self.base.warmup()
        self.canvas_engine.warmup()
        self.reset()

    def run(self, frames) -> tuple[np.ndarray, list[MotionStats]]:
        outs, stats = [], []
        for f in frames:
            logits, s = self.step(f)
            outs.append(logits)
            stats.append(s)
        return np.stack(outs) if outs else np.zeros((0,)), stats

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, MotionStats]:
        """Feed one RGB frame; returns ``(per-frame logits, MotionStats)``."""
        frame = self.prepare(frame)
        t0 = time.perf_counter()
        m = self.tracker.update(frame)
        if not self._on_canvas and not m.moved:
            t_motion = (time.perf_counter() - t0) * 1e3
            logits, st = self.base.step(frame)
            return logits, self._stats(st, m, st.keyframe, t_motion, (0, 0), st.nonzero_deltas, st.executed_macs, st.layer_ms)
        top, left, rebuild = self._place(m)
        h, w = self.input_shape[:2]
        self._canvas[top : top + h, left : left + w] = frame
        if rebuild:
            self.canvas_engine.reset()  # its next frame is a dense keyframe of the whole canvas
        if self.freeze_outside and self._window != (top, left):
            inside = np.zeros(self._canvas.shape[:2], np.float32)
            inside[top : top + h, left : left + w] = 1.0
            self.canvas_engine.set_region(inside, lam=FREEZE, gain=FREEZE + 1.0)  # factor 1 inside, FREEZE + 1 outside
            self._window = (top, left)
        t1 = time.perf_counter()
        feature, st = self.canvas_engine.step(self._canvas)
        t2 = time.perf_counter()
        logits = self.readout(feature, top, left)
        t_motion = (t1 - t0 + time.perf_counter() - t2) * 1e3
        offset = (self.margin - left, self.margin - top)
        # per plain MAC layer: the canvas engine's counts, and the head's (dense, every frame)
        nnz, executed = self.base.input_elements.copy(), self.base.dense_macs.copy()
        layer_ms = np.zeros(len(nnz)) if self.profile else np.full(len(nnz), np.nan)
        canvas_nnz = self.canvas_engine.input_elements if st.keyframe else st.nonzero_deltas  # a keyframe: every element
        nnz[self._body], executed[self._body], layer_ms[self._body] = canvas_nnz, st.executed_macs, st.layer_ms
        return logits, self._stats(st, m, False, t_motion, offset, nnz, executed, layer_ms,
                                   refresh=st.keyframe, on_canvas=True)  # fmt: skip

    def readout(self, feature: np.ndarray, top: int, left: int) -> np.ndarray:
        """Logits from the canvas's final feature map (flat or ``(h, w, C)``) for a frame at ``(top, left)``:
        the area-weighted mean of the cells under the frame, then the head."""
        fh, fw, c = self._feature_shape
        h, w = self.input_shape[:2]
        wy = cell_weights(fh, self.stride, top, h)
        wx = cell_weights(fw, self.stride, left, w)
        pooled = (wy @ np.asarray(feature, np.float32).reshape(fh, fw * c)).reshape(fw, c).T @ wx / (wy.sum() * wx.sum())
        return self.head(pooled.astype(np.float32))

    @property
    def canvas(self) -> np.ndarray:
        """The world canvas the last frame was pasted into (a read-only view)."""
        view = self._canvas.view()
        view.setflags(write=False)
        return view

    def _place(self, m: Motion) -> tuple[int, int, bool]:
        """Where the frame goes on the canvas (top, left), and whether the canvas is rebuilt."""
        margin, h, w = self.margin, *self.input_shape[:2]
        rebuild = m.refresh or not self._on_canvas
        self._on_canvas = True
        if rebuild:  # the first motion or a scene cut: a new canvas, the frame at its centre
            self._canvas[:] = UNSEEN
            self._origin = (m.offset_x, m.offset_y)
        top = margin - (m.offset_y - self._origin[1])
        left = margin - (m.offset_x - self._origin[0])
        if not (0 <= top <= 2 * margin and 0 <= left <= 2 * margin):
            # re-centre: shift the world back so the frame sits at the centre; the strip that
            # enters is unknown
            sy, sx = margin - top, margin - left
            self._canvas[:] = _shifted(self._canvas, sy, sx)
            self._origin = (m.offset_x, m.offset_y)
            top, left, rebuild = margin, margin, True
        return top, left, rebuild

    def _stats(self, st: FrameStats, m: Motion, keyframe: bool, t_motion: float, offset, nnz, executed, layer_ms, *,
               refresh: bool = False, on_canvas: bool = False) -> MotionStats:  # fmt: skip
        k = self.frame_index
        self.frame_index = k + 1
        return MotionStats(k, keyframe, nnz, executed, layer_ms, st.total_ms + t_motion, st.phase_ms,
                           dense_macs=self.base.dense_macs, input_elements=self.base.input_elements, dx=m.dx, dy=m.dy,
                           confidence=m.confidence, refresh=refresh or m.refresh, offset=offset, on_canvas=on_canvas,
                           motion_ms=t_motion)  # fmt: skip


def _shifted(image: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """``image`` moved by ``(sy, sx)`` pixels; what enters is ``UNSEEN``."""
    out = np.full_like(image, UNSEEN)
    h, w = image.shape[:2]
    if abs(sy) >= h or abs(sx) >= w:
        return out
    out[max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)] = image[max(-sy, 0) : h + min(-sy, 0), max(-sx, 0) : w + min(-sx, 0)]
    return out


def with_motion(engine: DeltaEngine, motion: str):
    """``engine`` itself for ``motion="none"``, a ``MotionEngine`` around it for ``"global"``."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    return engine if motion == "none" else MotionEngine(engine)
