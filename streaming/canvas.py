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

import time
from dataclasses import dataclass

import numpy as np

from deltanet.cli import MOTIONS
from streaming.canvas_plan import Head, canvas_plan, cell_weights, total_stride
from streaming.engine import DeltaEngine, FrameStats
from streaming.motion import CameraTracker, Motion

#: mid-gray: what canvas pixels never seen hold (the zero of a [-1, 1] input scaling)
UNSEEN = 128
#: threshold factor outside the frame's window (``DeltaEngine.set_region``): canvas cells outside
#: the frame are not read out, so their deltas are not worth transmitting (they stay frozen)
FREEZE = 1e4


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
    refresh: bool = False  # a scene cut was detected, or the canvas was (re)built (first motion, re-centre, cut, keyframe_interval)
    offset: tuple[int, int] = (0, 0)  # the frame's (x, y) shift from the canvas centre
    on_canvas: bool = False
    motion_ms: float = 0.0  # estimation, pasting and readout (included in total_ms)


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

    run = DeltaEngine.run  # the same loop over self.step

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
        margin = self.margin
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
                           motion_ms=t_motion, fallback_layers=_layer_flags(st.fallback_layers, len(nnz)))  # fmt: skip


def _layer_flags(flags: np.ndarray | None, n: int) -> np.ndarray:
    """The inner engine's per-MAC-layer dense-fallback flags for the ``n`` layers reported (the canvas plan ends
    before the head, which runs in NumPy and never falls back)."""
    out = np.zeros(n, bool)
    if flags is not None:
        k = min(n, len(flags))
        out[:k] = flags[:k]
    return out


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
