"""``DeltaEngine``: run a converted delta model frame by frame, multiplying only what changed.

Execution uses NumPy, OpenCV (resizing) and the numba kernels of ``ops`` only -- never
TensorFlow or Keras (``from_keras`` imports the converter lazily), so a bundle runs where
TensorFlow is not installed.

Per frame, every tensor carries the list of pixels whose value may have changed. An
``encode`` step (a ``DeltaActivation``) examines only those pixels and emits the sparse
delta of the ones that fire; a MAC step scatters that delta into its persistent
pre-activation buffer (``acc = conv(y) + bias``, BatchNorm folded in) and reports the
output pixels it touched; element-wise steps (activation, add, pooling...) recompute only
those pixels. Frame 0 (and every ``keyframe_interval`` frames) is a dense pass: MAC
steps recompute their output from their input's current value, which also removes any
floating-point drift accumulated by the sparse updates.

``mode="dense"`` runs the same plan with delta layers as identities and dense MAC kernels
(im2col + BLAS): the dense per-frame network that TFLite would run, for comparison.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from ops import config as ops_config
from ops.conv import _conv2d_elem, _conv2d_elem_par, _conv2d_pix, _conv2d_pix_par, _pointwise_elem, _pointwise_elem_par, _pointwise_pix, _pointwise_pix_par, nz_scratch
from ops.dense import conv2d_dense, depthwise_dense
from ops.depthwise import _depthwise, _depthwise_par
from ops.elementwise import (
    ACTIVATIONS,
    _activation_pixels,
    _add_pixels,
    _affine_pixels,
    _copy_channels,
    _frame_to_float_changed,
    _global_pool,
    _pad_pixels,
    _pool_pixels,
    _pool_touch,
    _union,
)
from ops.encode import _encode_quantize_rows, _encode_threshold_rows
from ops.region import _encode_threshold_rows_scaled
from streaming.plan import MAC_OPS, Plan, validate_plan
from streaming.preprocess import to_model_input

GRANULARITIES = ("element", "pixel")
#: per-layer kernel choices: a granularity, optionally "-parallel" (numba prange; only used
#: when the engine has threads > 1). Which is fastest is measured (``streaming.tuning``).
KERNEL_CHOICES = GRANULARITIES + tuple(g + "-parallel" for g in GRANULARITIES)


class _Tensor:
    """One frame tensor: its value buffer and this frame's changed-pixel list."""

    __slots__ = ("name", "shape", "value", "flat", "pix", "lst", "n", "all")

    def __init__(self, name, shape, value=None):
        h, w, c = shape
        self.name = name
        self.shape = (h, w, c)
        self.value = np.zeros((h, w, c), np.float32) if value is None else value
        self.flat = self.value.reshape(h * w, c)
        self.pix = np.zeros(h * w, np.int32)
        self.all = np.arange(h * w, dtype=np.int32)
        self.lst = self.all
        self.n = 0


@dataclass
class FrameStats:
    """What one frame cost. Per-MAC-layer arrays follow ``DeltaEngine.layer_names``."""

    index: int
    keyframe: bool
    nonzero_deltas: np.ndarray  # non-zero input delta elements per MAC layer
    executed_macs: np.ndarray  # multiply-accumulates executed per MAC layer
    layer_ms: np.ndarray  # time of each MAC layer (its input encoder included)
    total_ms: float
    phase_ms: dict  # profiled frames: "input", "encode", "mac", "activation", "other" (add, pool, ...); else {}
    # worker_stats=True, delta frames: per MAC layer, non-zero delta elements of the busiest
    # of `threads` workers and the mean over workers (streaming.region.worker_loads); else None
    worker_max: np.ndarray | None = None
    worker_mean: np.ndarray | None = None

    @property
    def worker_imbalance(self) -> np.ndarray | None:
        """Per MAC layer ``max / mean`` non-zeros per worker (1: even; ``threads``: one worker does all)."""
        if self.worker_max is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.worker_mean > 0, self.worker_max / np.maximum(self.worker_mean, 1e-300), 1.0)

    @property
    def macs(self) -> int:
        return int(self.executed_macs.sum())


class DeltaEngine:
    """Run a converted model on a stream of frames.

    Args:
        plan: a ``streaming.plan.Plan`` (``from_keras`` / ``streaming.bundle.load_bundle``).
        mode: ``"delta"`` (default) or ``"dense"`` (delta layers as identities, dense MACs).
        granularity: ``"element"``, ``"pixel"`` (optionally suffixed ``"-parallel"``), or a
            dict layer name -> one of them. Defaults to ``"element"``.
            ``streaming.tuning.tune_granularity`` picks per layer by measurement.
        threads: numba threads for the parallel kernels (``None``: leave numba's setting;
            ``1``: serial kernels).
        keyframe_interval: a dense refresh every this many frames (``None``: only frame 0).
        profile: time every step (per-layer and per-phase milliseconds in ``FrameStats``)
            by running the steps from Python; otherwise non-keyframes run as one compiled
            numba call (``streaming.compiled``) and ``layer_ms`` is NaN.
        worker_stats: also report, for every delta frame, how the parallel kernels would
            share each MAC layer's non-zero deltas among ``threads`` workers
            (``FrameStats.worker_max`` / ``worker_mean``); costs Python time per frame.

    Region-weighted thresholds (``set_region``): threshold-mode encoders can use a spatially
    varying threshold ``theta[c] / (1 + lam * P(x, y))`` with ``P`` a prior in ``[0, 1]``: a
    fixed region of interest, or ``"motion"`` (the input's frame difference, recomputed every
    frame). This departs from the Keras model on purpose (more updates where it matters).
    Like ``worker_stats``, the motion prior costs Python time and allocations per frame; the
    default engine allocates nothing per frame.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        mode: str = "delta",
        granularity: str | dict = "element",
        threads: int | None = None,
        keyframe_interval: int | None = None,
        profile: bool = False,
        worker_stats: bool = False,
    ):
        if mode not in ("delta", "dense"):
            raise ValueError(f"mode must be 'delta' or 'dense', got {mode!r}")
        if keyframe_interval is not None and keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1 or None, got {keyframe_interval!r}")
        validate_plan(plan)
        self.plan = plan
        self.mode = mode
        self.keyframe_interval = keyframe_interval
        self.profile = bool(profile)
        self.worker_stats = bool(worker_stats)
        self.threads = int(threads) if threads is not None else None
        self._region = None  # None, "static" or "motion"
        self._region_lam = 0.0
        self._region_gain = 1.0
        self._prev_input = None
        if threads is not None:
            import numba

            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        self.parallel = threads is not None and threads > 1 and ops_config.PARALLEL
        self.input_shape = tuple(plan.input_shape)
        self.info = dict(plan.info)
        self.class_names = list(self.info.get("class_names") or [])
        self._build(granularity)
        self._compiled = None
        if mode == "delta" and not self.profile:
            from streaming.compiled import CompiledFrame

            self._compiled = CompiledFrame(self)
        self.reset()

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_keras(cls, model_or_path, **kwargs) -> "DeltaEngine":
        """Convert a Keras clip model (or a ``.keras`` path) and build an engine for it."""
        from streaming.convert import to_plan

        model = model_or_path
        if isinstance(model_or_path, (str, os.PathLike)):
            from deltanet.saving import load_model

            model = load_model(model_or_path)
        return cls(to_plan(model), **kwargs)

    def clone(self, **overrides) -> "DeltaEngine":
        """A new engine (its own stream state) sharing this one's plan and weights."""
        kwargs = dict(mode=self.mode, granularity=dict(self._granularity), keyframe_interval=self.keyframe_interval, profile=self.profile,
                      worker_stats=self.worker_stats)
        kwargs.update(overrides)
        return DeltaEngine(self.plan, **kwargs)

    def _build(self, granularity):
        plan = self.plan
        dense = self.mode == "dense"
        producers = {s["output"]: s for s in plan.steps}
        self.tensors: dict[str, _Tensor] = {}
        for step in plan.steps:
            name, shape = step["output"], plan.tensors[step["output"]]
            value = None
            if step["op"] == "flatten":
                value = self.tensors[step["inputs"][0]].value.reshape(shape)  # a view: no copy per frame
            elif step["op"] == "encode" and dense:
                value = self.tensors[step["inputs"][0]].value  # identity in dense mode
            self.tensors[name] = _Tensor(name, shape, value)
        self.layer_names = [s["name"] for s in plan.steps if s["op"] in MAC_OPS]
        self.dense_macs = np.array([plan.dense_macs(s) for s in plan.steps if s["op"] in MAC_OPS], np.int64)
        self.input_elements = np.array(
            [int(np.prod(plan.tensors[s["inputs"][0]])) for s in plan.steps if s["op"] in MAC_OPS], np.int64
        )
        if isinstance(granularity, str):
            granularity = {n: granularity for n in self.layer_names}
        unknown = set(granularity) - set(self.layer_names)
        if unknown:
            raise ValueError(f"granularity names unknown MAC layers: {sorted(unknown)}")
        bad = {v for v in granularity.values() if v not in KERNEL_CHOICES}
        if bad:
            raise ValueError(f"granularity must be one of {KERNEL_CHOICES} (or a dict of them), got {sorted(bad)}")
        self._granularity = {n: granularity.get(n, "element") for n in self.layer_names}
        self._steps = []
        mac_index = 0
        for step in plan.steps:
            runner = _make_runner(self, step, producers, mac_index)
            if step["op"] in MAC_OPS:
                mac_index += 1
            self._steps.append(runner)
        self._out = self.tensors[plan.output]
        self._nnz = np.zeros(len(self.layer_names), np.int64)
        self._macs = np.zeros(len(self.layer_names), np.int64)
        self._ms = np.zeros(len(self.layer_names), np.float64)

    # --- running ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new stream: every reference back to zero (``y_{-1} = 0``)."""
        for t in self.tensors.values():
            t.n = 0
            t.lst = t.all
        for r in self._steps:
            r.reset()
        self.frame_index = 0
        self._prev_input = None

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """An RGB frame as the model's input (``streaming.preprocess.to_model_input``: resized, uint8, gray if C == 1)."""
        return to_model_input(frame, self.input_shape)

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, FrameStats]:
        """Feed one RGB frame; returns ``(per-frame logits, FrameStats)``."""
        frame = self.prepare(frame)
        k = self.frame_index
        keyframe = k == 0 or (self.keyframe_interval is not None and k % self.keyframe_interval == 0)
        dense_pass = keyframe or self.mode == "dense"
        if self._region == "motion":
            from streaming.region import motion_prior

            self._set_scales(self._scales(motion_prior(frame, self._prev_input), self._region_lam, self._region_gain))
            self._prev_input = frame.copy()
        self._nnz[:] = 0
        self._macs[:] = 0
        self._ms[:] = 0
        phase = {"input": 0.0, "encode": 0.0, "mac": 0.0, "activation": 0.0, "other": 0.0}
        clock = time.perf_counter
        if self._compiled is not None and not dense_pass:
            start = clock()
            bad = self._compiled.run(frame, self._nnz, self._macs)
            total = (clock() - start) * 1e3
            if bad >= 0:
                raise ValueError(f"non-finite activations entering {self._compiled.step_names[bad]!r}: the model or the frame is broken")
            self.frame_index = k + 1
            self._ms[:] = np.nan
            logits = self._out.value.reshape(-1).copy()
            return logits, self._stats(k, keyframe, total, {}, dense_pass)
        start = t0 = clock()
        for r in self._steps:
            r.run(frame, dense_pass)
            t1 = clock()
            dt = (t1 - t0) * 1e3
            phase[r.phase] += dt
            if r.mac_index >= 0:
                self._ms[r.mac_index] += dt
            elif r.feeds >= 0:
                self._ms[r.feeds] += dt
            t0 = t1
        total = (clock() - start) * 1e3
        self.frame_index = k + 1
        logits = self._out.value.reshape(-1).copy()
        return logits, self._stats(k, keyframe, total, phase, dense_pass)

    def _stats(self, k, keyframe, total, phase, dense_pass) -> FrameStats:
        stats = FrameStats(k, keyframe, self._nnz.copy(), self._macs.copy(), self._ms.copy(), total, phase)
        if self.worker_stats and not dense_pass:
            stats.worker_max, stats.worker_mean = self._worker_loads()
        return stats

    def _worker_loads(self) -> tuple[np.ndarray, np.ndarray]:
        """Per MAC layer: max and mean non-zero deltas per worker for the frame just run."""
        from streaming.region import load_stats, worker_loads

        threads = self.threads or 1
        mx = np.zeros(len(self.layer_names))
        mean = np.zeros(len(self.layer_names))
        for r in self._steps:
            if not isinstance(r, _MacRunner):
                continue
            enc, src = r.enc, r.src
            # an encoder's output lists its active pixels in src.pix; the compiled path keeps
            # the count in its own table
            n = self._compiled.changed_count(src) if self._compiled is not None else int(src.n)
            active = src.pix[:n]
            nnz = np.count_nonzero(enc.rows[:n], axis=1)
            order = np.argsort(active, kind="stable")  # the kernels' split assumes ascending pixels
            kh, kw, cin, cout = r.kernel.shape
            ho, wo, _ = r.out.shape
            kind = "depthwise" if r.depthwise else ("pointwise" if r.pointwise else "conv")
            loads = worker_loads(
                kind, active[order], n, nnz[order], threads=threads, in_w=r.in_w, out_h=ho, out_w=wo, kh=kh, kw=kw,
                stride=r.stride, pad_top=r.pad_top, pad_left=r.pad_left, cout=cout, cin=cin, granularity=r.granularity,
            )["nonzeros"]
            st = load_stats(loads)
            mx[r.mac_index], mean[r.mac_index] = st["max"], st["mean"]
        return mx, mean

    # --- region-weighted thresholds ------------------------------------------------------------

    def set_region(self, prior, lam: float = 4.0, gain: float = 1.0) -> None:
        """Region-weighted thresholds: ``gain * theta[c] / (1 + lam * P)`` in every threshold-mode encoder.

        Args:
            prior: ``None`` (plain thresholds again), ``"motion"`` (``P`` = the input's
                frame difference, ``streaming.region.motion_prior``, every frame), or a float
                ``(H, W)`` array in ``[0, 1]`` at any resolution (e.g.
                ``streaming.region.roi_prior``), resized to each encoder's resolution.
            lam: strength ``lambda >= 0``. Defaults to 4 (thresholds down to 1/5 where ``P = 1``).
            gain: a factor on every threshold (> 0), e.g. to spend the MACs the region adds
                elsewhere (compare at equal MAC density). Defaults to 1.

        Only pixels whose input changed are re-examined by an encoder, so with a prior that
        changes over time a pixel whose threshold dropped fires when its input next changes.
        """
        encoders = [r for r in self._steps if isinstance(r, _EncodeRunner) and r.scale is not None]
        if self.mode == "dense":
            raise ValueError("set_region needs mode='delta' (dense mode transmits everything)")
        if prior is not None and not encoders:
            raise ValueError("set_region: the model has no threshold-mode delta layers")
        lam, gain = float(lam), float(gain)
        if not (np.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
        if not (np.isfinite(gain) and gain > 0):
            raise ValueError(f"gain must be finite and > 0, got {gain!r}")
        if isinstance(prior, str) and prior != "motion":
            raise ValueError(f"prior must be None, 'motion' or an (H, W) array, got {prior!r}")
        if prior is None:
            for r in encoders:
                r.scale[...] = 1.0
                r.scaled = False
            self._region = None
        else:
            static = not isinstance(prior, str)
            # scales first (a bad prior raises here), then the engine's state
            scales = self._scales(prior if static else np.zeros(self.input_shape[:2], np.float32), lam, gain)
            self._region, self._region_lam, self._region_gain = ("static" if static else "motion"), lam, gain
            self._prev_input = None
            self._set_scales(scales)
        if self._compiled is not None:
            self._compiled.refresh_encoders()

    def _scales(self, prior, lam: float, gain: float) -> dict:
        """``gain / (1 + lam * P)`` at every threshold encoder's resolution: ``{(h, w): (h*w,) float32}``."""
        from streaming.region import pixel_scales

        out = {}
        for r in self._steps:
            if isinstance(r, _EncodeRunner) and r.scale is not None and r.out.shape[:2] not in out:
                hw = r.out.shape[:2]
                out[hw] = pixel_scales(prior, lam, hw)
                if gain != 1.0:
                    out[hw] *= np.float32(gain)
        return out

    def _set_scales(self, scales: dict) -> None:
        for r in self._steps:
            if isinstance(r, _EncodeRunner) and r.scale is not None:
                r.scale[...] = scales[r.out.shape[:2]]
                r.scaled = True

    def run(self, frames) -> tuple[np.ndarray, list[FrameStats]]:
        """Step through an iterable of frames; returns stacked logits and the stats list."""
        outs, stats = [], []
        for f in frames:
            logits, s = self.step(f)
            outs.append(logits)
            stats.append(s)
        return np.stack(outs) if outs else np.zeros((0,)), stats

    def warmup(self) -> None:
        """Compile every kernel this plan uses (one synthetic frame each way), then reset."""
        rng = np.random.default_rng(0)
        h, w, c = self.input_shape
        base = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        moved = base.copy()
        moved[: h // 4, : w // 4] = 255 - moved[: h // 4, : w // 4]
        for f in (base, moved, base):
            self.step(f)
        self.reset()


# --- step runners -----------------------------------------------------------------------------


class _Runner:
    phase = "other"
    mac_index = -1
    feeds = -1  # MAC layer whose encoder this is (time is attributed to it)

    def reset(self):
        pass


def _make_runner(engine, step, producers, mac_index):
    op = step["op"]
    t = engine.tensors
    a = engine.plan.arrays
    ins = [t[n] for n in step["inputs"]]
    out = t[step["output"]]
    if op == "input":
        return _InputRunner(out, a[step["scale_key"]], a[step["offset_key"]])
    if op == "encode":
        return _EncodeRunner(engine, step, ins[0], out, a[step["param_key"]], mac_index)
    if op in MAC_OPS:
        enc = next(r for r in engine._steps if isinstance(r, _EncodeRunner) and r.out is ins[0])
        return _MacRunner(engine, step, ins[0], enc, out, mac_index)
    if op == "activation":
        return _ActivationRunner(ins[0], out, ACTIVATIONS[step["kind"]], step["a0"], step["a1"], step["a2"])
    if op == "affine":
        return _AffineRunner(ins[0], out, a[step["scale_key"]], a[step["offset_key"]])
    if op == "add":
        return _AddRunner(ins, out)
    if op == "concat":
        return _ConcatRunner(ins, out)
    if op == "pad":
        return _PadRunner(ins[0], out, step)
    if op == "pool":
        return _PoolRunner(ins[0], out, step)
    if op == "global_pool":
        return _GlobalPoolRunner(ins[0], out, bool(step["is_max"]))
    if op == "flatten":
        return _FlattenRunner(ins[0], out)
    raise ValueError(f"unknown step op {op!r}")


class _InputRunner(_Runner):
    phase = "input"

    def __init__(self, out, scale, offset):
        self.out, self.scale, self.offset = out, scale, offset
        h, w, c = out.shape
        self.prev = np.zeros((h * w, c), np.uint8)

    def run(self, frame, dense_pass):
        out = self.out
        out.n = _frame_to_float_changed(frame.reshape(-1, frame.shape[2]), self.prev, out.flat, self.scale, self.offset, out.pix, dense_pass)
        out.lst = out.all if dense_pass else out.pix


class _EncodeRunner(_Runner):
    phase = "encode"

    def __init__(self, engine, step, src, out, param, mac_index):
        self.engine, self.src, self.out, self.param = engine, src, out, param
        self.dense = engine.mode == "dense"
        self.quantize = step["mode"] == "quantize"
        # (H*W, C) row kernels: they count non-finite values while encoding, so after the
        # ValueError below this stream's state is broken (as it was before: the layers
        # in front of this one had already advanced); reset() starts a clean stream.
        self.kernel = _encode_quantize_rows if self.quantize else _encode_threshold_rows
        h, w, c = out.shape
        self.rows = np.zeros((h * w, c), np.float32)
        # region-weighted thresholds (DeltaEngine.set_region): per-pixel factor on theta
        self.scale = None if self.quantize or self.dense else np.ones(h * w, np.float32)
        self.scaled = False
        self.nnz = 0
        self.feeds = mac_index  # the next MAC step (the usual layout: encode right before its MAC layer)
        self.name = step["name"]

    def reset(self):
        if not self.dense:
            self.out.value[...] = 0.0  # r_{-1} = 0 / y_{-1} = 0
        self.nnz = 0

    def run(self, frame, dense_pass):
        src, out = self.src, self.out
        if self.dense:
            out.lst, out.n = src.lst, src.n
            return
        if self.scaled:
            n, nnz, bad = _encode_threshold_rows_scaled(src.flat, self.param, self.scale, out.flat, src.lst, src.n, out.pix, self.rows)
        else:
            n, nnz, bad = self.kernel(src.flat, self.param, out.flat, src.lst, src.n, out.pix, self.rows)
        if bad:
            raise ValueError(f"non-finite activations ({bad} values) entering {self.name!r}: the model or the frame is broken")
        self.nnz = nnz
        out.n = n
        out.lst = out.pix


class _MacRunner(_Runner):
    phase = "mac"

    def __init__(self, engine, step, src, enc, out, mac_index):
        self.engine, self.src, self.enc, self.out = engine, src, enc, out
        self.mac_index = mac_index
        arrays = engine.plan.arrays
        self.kernel = arrays[step["kernel_key"]]
        self.bias = arrays[step["bias_key"]]
        self.stride, self.pad_top, self.pad_left = int(step["stride"]), int(step["pad_top"]), int(step["pad_left"])
        self.depthwise = step["op"] == "depthwise"
        kh, kw, cin, cout = self.kernel.shape
        self.kh, self.kw = kh, kw
        self.pointwise = kh == kw == 1 and self.stride == 1 and not self.depthwise
        self.w2d = np.ascontiguousarray(self.kernel.reshape(kh * kw * cin, cout)) if not self.depthwise else None
        self.w_pw = np.ascontiguousarray(self.kernel[0, 0]) if self.pointwise else None
        ho, wo, co = out.shape
        hi, wi, _ = src.shape
        self.in_w = wi
        self.in_elements = hi * wi * cin
        self.dense_macs = engine.dense_macs[mac_index]
        self.mark = np.zeros(ho * wo, np.uint8)
        choice = engine._granularity[step["name"]]
        par = engine.parallel and choice.endswith("-parallel")
        self.parallel = par
        self.nzbuf = nz_scratch(cin, par)
        self.granularity = choice.split("-")[0]
        self.gather = np.zeros((hi * wi, cin), np.float32) if self.granularity == "pixel" else None
        self.prod = np.zeros((hi * wi, co), np.float32) if self.granularity == "pixel" else None
        self.col = np.zeros((ho * wo, kh * kw * cin), np.float32) if not (self.depthwise or self.pointwise) else None
        self.dw_dense = self.depthwise
        if self.depthwise:
            self.sparse = _depthwise_par if par else _depthwise
        elif self.pointwise:
            self.sparse = (_pointwise_pix_par if par else _pointwise_pix) if self.granularity == "pixel" else (_pointwise_elem_par if par else _pointwise_elem)
        else:
            self.sparse = (_conv2d_pix_par if par else _conv2d_pix) if self.granularity == "pixel" else (_conv2d_elem_par if par else _conv2d_elem)
        self.bias_view = self.bias.reshape(1, 1, -1)

    def run(self, frame, dense_pass):
        out, enc = self.out, self.enc
        e = self.engine
        i = self.mac_index
        e._nnz[i] = self.in_elements if enc.dense else enc.nnz
        if dense_pass:
            x = self.src.value
            if self.depthwise:
                depthwise_dense(x, self.kernel, self.stride, self.pad_top, self.pad_left, out.value)
            else:
                conv2d_dense(x, self.w2d, self.kh, self.kw, self.stride, self.pad_top, self.pad_left, out.value, self.col)
            out.value += self.bias_view
            out.lst, out.n = out.all, out.all.shape[0]
            e._macs[i] = self.dense_macs
            return
        src = self.src
        if self.depthwise:
            n_t, macs = self.sparse(src.lst, src.n, enc.rows, self.in_w, self.kernel, self.stride, self.pad_top, self.pad_left, out.value, out.pix, self.mark, self.nzbuf)
        elif self.pointwise:
            scratch = self.prod if self.granularity == "pixel" else self.nzbuf
            n_t, macs = self.sparse(src.lst, src.n, enc.rows, self.w_pw, out.value, out.pix, scratch)
        elif self.granularity == "pixel":
            n_t, macs = self.sparse(src.lst, src.n, enc.rows, self.in_w, self.kernel, self.stride, self.pad_top, self.pad_left, out.value, out.pix, self.mark, self.gather, self.prod)
        else:
            n_t, macs = self.sparse(src.lst, src.n, enc.rows, self.in_w, self.kernel, self.stride, self.pad_top, self.pad_left, out.value, out.pix, self.mark, self.nzbuf)
        out.lst, out.n = out.pix, n_t
        e._macs[i] = macs


class _ActivationRunner(_Runner):
    phase = "activation"

    def __init__(self, src, out, code, a0, a1, a2):
        self.src, self.out, self.code, self.a = src, out, code, (float(a0), float(a1), float(a2))

    def run(self, frame, dense_pass):
        src, out = self.src, self.out
        lst, n = (src.all, src.all.shape[0]) if dense_pass else (src.lst, src.n)
        _activation_pixels(src.flat, out.flat, self.code, self.a[0], self.a[1], self.a[2], lst, n)
        out.lst, out.n = lst, n


class _AffineRunner(_Runner):
    phase = "activation"  # element-wise nonlinearity/affine work between MAC layers

    def __init__(self, src, out, scale, offset):
        self.src, self.out, self.scale, self.offset = src, out, scale, offset

    def run(self, frame, dense_pass):
        src, out = self.src, self.out
        lst, n = (src.all, src.all.shape[0]) if dense_pass else (src.lst, src.n)
        _affine_pixels(src.flat, out.flat, self.scale, self.offset, lst, n)
        out.lst, out.n = lst, n


class _AddRunner(_Runner):
    def __init__(self, srcs, out):
        self.srcs, self.out = srcs, out
        self.tmp = np.zeros_like(out.pix)

    def _changed(self, dense_pass):
        out = self.out
        if dense_pass:
            return out.all, out.all.shape[0]
        lst, n = self.srcs[0].lst, self.srcs[0].n
        for s in self.srcs[1:]:
            target = out.pix if lst is not out.pix else self.tmp
            n = _union(lst, n, s.lst, s.n, target)
            lst = target
        return lst, n

    def run(self, frame, dense_pass):
        lst, n = self._changed(dense_pass)
        out = self.out
        # Keras' Add sums in input order: ((a + b) + c) ...
        _add_pixels(self.srcs[0].flat, self.srcs[1].flat, out.flat, lst, n)
        for s in self.srcs[2:]:
            _add_pixels(out.flat, s.flat, out.flat, lst, n)
        out.lst, out.n = lst, n


class _ConcatRunner(_AddRunner):
    def run(self, frame, dense_pass):
        lst, n = self._changed(dense_pass)
        out = self.out
        c0 = 0
        for s in self.srcs:
            _copy_channels(s.flat, out.flat, c0, lst, n)
            c0 += s.shape[2]
        out.lst, out.n = lst, n


class _PadRunner(_Runner):
    def __init__(self, src, out, step):
        self.src, self.out = src, out
        self.top, self.left = int(step["top"]), int(step["left"])

    def run(self, frame, dense_pass):
        src, out = self.src, self.out
        lst, n = (src.all, src.all.shape[0]) if dense_pass else (src.lst, src.n)
        out.n = _pad_pixels(src.flat, out.flat, src.shape[1], out.shape[1], self.top, self.left, lst, n, out.pix)
        out.lst = out.pix


class _PoolRunner(_Runner):
    def __init__(self, src, out, step):
        self.src, self.out = src, out
        self.is_max = bool(step["is_max"])
        self.kh, self.kw, self.stride = int(step["kh"]), int(step["kw"]), int(step["stride"])
        self.pad_top, self.pad_left = int(step["pad_top"]), int(step["pad_left"])
        self.mark = np.zeros(out.shape[0] * out.shape[1], np.uint8)

    def run(self, frame, dense_pass):
        src, out = self.src, self.out
        if dense_pass:
            lst, n = out.all, out.all.shape[0]
        else:
            n = _pool_touch(src.lst, src.n, src.shape[1], self.kh, self.kw, self.stride, self.pad_top, self.pad_left, out.shape[0], out.shape[1], out.pix, self.mark)
            lst = out.pix
        _pool_pixels(src.flat, out.flat, src.shape[0], src.shape[1], self.kh, self.kw, self.stride, self.pad_top, self.pad_left, out.shape[1], self.is_max, lst, n)
        out.lst, out.n = lst, n


class _GlobalPoolRunner(_Runner):
    def __init__(self, src, out, is_max):
        self.src, self.out, self.is_max = src, out, is_max

    def run(self, frame, dense_pass):
        out = self.out
        if dense_pass or self.src.n:
            _global_pool(self.src.flat, out.flat, self.is_max)
            out.n = 1
        else:
            out.n = 0
        out.lst = out.all


class _FlattenRunner(_Runner):
    def __init__(self, src, out):
        self.src, self.out = src, out

    def run(self, frame, dense_pass):
        self.out.lst = self.out.all
        self.out.n = 1 if (dense_pass or self.src.n) else 0
