"""``DeltaEngine``: run a converted delta model frame by frame, multiplying only what changed.

Execution uses NumPy, OpenCV (resizing) and the numba kernels of ``ops`` only -- never
TensorFlow or Keras (``from_keras`` imports the converter lazily), so a bundle runs where
TensorFlow is not installed.

The plan is lowered once (``streaming.lower``: integer tables + buffer arenas) and every frame
is one call of the compiled interpreter ``ops.interpreter.run_frame``:

* **delta frames**: every tensor carries the list of pixels whose value may have changed; an
  ``encode`` step (a ``DeltaActivation``) examines only those and emits the sparse delta of the
  ones that fire; a MAC step scatters it into its persistent pre-activation buffer
  (``acc = conv(y) + bias``, BatchNorm folded in) and lists the outputs it touched; element-wise
  steps (activation, add, pooling...) recompute only those pixels;
* **dense frames**: frame 0 and every ``keyframe_interval`` frames (and every frame with
  ``mode="dense"``) recompute each MAC layer from its input's current value (im2col + BLAS),
  which also removes any floating-point drift accumulated by the sparse updates. ``mode="dense"``
  makes the delta layers identities: the dense per-frame network TFLite would run;
* **dense fallback** (``fallback=True``, the default): in a delta frame, a MAC layer whose
  delta is denser than its measured break-even (``streaming.tuning.tune_fallback``) runs its
  dense kernel instead, from the same input; its state stays what the delta kernel would hold;
* **refresh frames** (``refresh_at``, off by default): a delta frame whose first encoder fires in
  at least that share of its 8x8-pixel tiles (a scene cut, a pan, a busy scene) runs dense from there on, and every
  threshold encoder transmits its whole input (reference := input: the two buffers swap places
  where only that encoder reads an input its producer rewrites, else a copy): the frame costs
  about a dense frame, instead of every encoder's threshold pass over every pixel. Its logits are the dense network's, not the delta model's (it transmits more), so it
  is opt-in; ``streaming.tuning.tune_refresh`` measures the break-even;
* **profiled frames** (``profile=True``): the same loop, timing each step inside it.

Region priors (``set_region``), keyframes and the per-layer kernel choice are per-frame
parameters of that one loop; Python builds the tables and reads the results.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from deltanet import density
from ops import config as ops_config
from ops import interpreter as ip
from ops.checks import GRANULARITIES
from ops.interpreter import run_frame
from streaming.lower import PHASES, Weights, lower
from streaming.plan import Plan, validate_plan
from streaming.preprocess import to_model_input

#: per-layer kernel choices: a granularity, optionally "-parallel" (numba prange; only used
#: when the engine has threads > 1). Which is fastest is measured (``streaming.tuning``).
KERNEL_CHOICES = GRANULARITIES + tuple(g + "-parallel" for g in GRANULARITIES)
_KERNEL_CODE = {"element": ip.KERNEL_ELEMENT, "pixel": ip.KERNEL_PIXEL, "patch": ip.KERNEL_PATCH,
                "element-parallel": ip.KERNEL_ELEMENT_PARALLEL, "pixel-parallel": ip.KERNEL_PIXEL_PARALLEL,
                "patch-parallel": ip.KERNEL_PATCH_PARALLEL}  # fmt: skip

#: untuned default of ``DeltaEngine(dense_parallel=)``: with threads > 1, a MAC layer's dense kernel
#: runs in parallel row blocks from this many dense MACs on (``streaming.tuning.tune_dense_parallel``
#: measures the choice per layer). Measured 2026-12-03 on the 2-core AVX-512 machine, 2 threads
#: (``scripts/dense_kernels.py``, layer shapes from a 0.34-MMAC depthwise layer of the default model
#: to ResNet-18's 116-MMAC convolutions): parallel 1.46-1.96x faster in one run, 1.00-2.08x in the
#: next (never slower beyond that noise); smaller layers were not measured and stay serial
#: (opening a parallel region costs microseconds).
DENSE_PARALLEL_MACS = 200_000


@dataclass
class FrameStats:
    """What one frame cost. Per-MAC-layer arrays follow ``DeltaEngine.layer_names``."""

    index: int
    keyframe: bool
    nonzero_deltas: np.ndarray  # non-zero input delta elements per MAC layer
    executed_macs: np.ndarray  # multiply-accumulates executed per MAC layer
    layer_ms: np.ndarray  # time of each MAC layer (its input encoder included); NaN unless profiled
    total_ms: float
    phase_ms: dict  # profiled frames: "input", "encode", "mac", "activation", "other" (add, pool, ...); else {}
    # worker_stats=True, delta frames: per MAC layer, non-zero delta elements of the busiest
    # of `threads` workers and the mean over workers (streaming.workers.worker_loads); else None
    worker_max: np.ndarray | None = None
    worker_mean: np.ndarray | None = None
    # the engine's per-MAC-layer constants (shared, not copied): dense MACs and input elements
    dense_macs: np.ndarray | None = None
    input_elements: np.ndarray | None = None
    # per MAC layer: in this delta frame its delta reached its break-even and it ran its dense
    # kernel instead (the dense fallback; all False in dense and refresh frames, which run every layer dense)
    fallback_layers: np.ndarray | None = None
    # a delta frame that became a refresh frame (``DeltaEngine(refresh_at=)``): dense, everything transmitted
    refreshed: bool = False

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

    @property
    def layer_mac_density(self) -> np.ndarray:
        """Per MAC layer: the temporal density of the deltas it received (non-zero / input elements).
        A keyframe is a dense pass (every MAC executed, every reference refreshed): 1.0."""
        if self.keyframe:
            return np.ones(len(self.nonzero_deltas))
        return self.nonzero_deltas / self.input_elements

    @property
    def mac_density(self) -> float:
        """MAC-weighted temporal density of the transmitted deltas (``deltanet.density.mac_density``):
        the fraction of dense MACs a runtime skipping every zero delta must still execute."""
        return density.mac_density(self.dense_macs, self.layer_mac_density)

    @property
    def layer_executed_mac_density(self) -> np.ndarray:
        """Per MAC layer: executed / dense MACs (pixel-wise kernels multiply an active pixel's zeros too)."""
        return self.executed_macs / self.dense_macs

    @property
    def executed_mac_density(self) -> float:
        """What the kernels actually multiplied, as a fraction of the dense MACs."""
        return density.mac_density(self.dense_macs, self.layer_executed_mac_density)


class DeltaEngine:
    """Run a converted model on a stream of frames.

    Args:
        plan: a ``streaming.plan.Plan`` (``from_keras`` / ``streaming.bundle.load_bundle``).
        mode: ``"delta"`` (default) or ``"dense"`` (delta layers as identities, dense MACs).
        granularity: ``"element"``, ``"pixel"`` (optionally suffixed ``"-parallel"``), or a
            dict layer name -> one of them. Defaults to ``"element"``.
            ``streaming.tuning.tune_granularity`` picks per layer by measurement.
        threads: numba threads for the parallel kernels (``None``: leave numba's and BLAS's
            settings; ``1``: serial kernels). Given, it also limits BLAS to one thread,
            process-wide (``threadpoolctl``), as it sets numba's thread count process-wide.
        keyframe_interval: a dense refresh every this many frames (``None``: only frame 0).
        profile: time every step inside the compiled loop (per-layer and per-phase
            milliseconds in ``FrameStats``; ~30 ns per step); otherwise ``layer_ms`` is NaN.
        worker_stats: also report, for every delta frame, how the parallel kernels would
            share each MAC layer's non-zero deltas among ``threads`` workers
            (``FrameStats.worker_max`` / ``worker_mean``); costs Python time per frame.
        fallback: in a delta frame, run a MAC layer's dense kernel instead of its delta kernel
            when its delta is at least as dense as its break-even (``breakeven``), so a scene
            cut or a camera pan costs about a dense frame, not more. Defaults to True.
        dense_parallel: ``{MAC layer name: bool}``: whether that layer's dense kernel (keyframes,
            dense mode, the fallback) splits its output rows among the threads (only with
            threads > 1; the serial values up to float32 rounding). Unlisted layers: parallel from
            ``DENSE_PARALLEL_MACS`` dense MACs on; ``streaming.tuning.tune_dense_parallel`` measures it.
        breakeven: ``{MAC layer name: delta fraction}`` at and above which that layer falls
            back (``ops.interpreter.delta_fraction``: non-zero elements for element-wise
            kernels, active pixels for pixel-wise and depthwise ones). Measure it with
            ``streaming.tuning.tune_fallback`` for the engine's kernel choice; a layer not
            listed falls back only when its whole input changed (1.0), where dense is never slower.
        refresh_at: the share of tiles where the first encoder fires (``occupancy``) at and above
            which a delta frame becomes a refresh frame (see above; ``FrameStats.refreshed``); ``None``
            (default): never. ``streaming.tuning.tune_refresh`` measures it.

    Region-weighted thresholds (``set_region``): threshold-mode encoders can use a spatially
    varying threshold ``theta[c] / (1 + lam * P(x, y))`` with ``P`` a prior in ``[0, 1]``: a
    fixed region of interest, or ``"motion"`` (the input's frame difference, recomputed every
    frame). This departs from the Keras model on purpose (more updates where it matters).
    Like ``worker_stats``, the motion prior costs Python time and allocations per frame; the
    default engine allocates nothing per frame but the returned logits and stats.
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
        fallback: bool = True,
        breakeven: dict | None = None,
        dense_parallel: dict | None = None,
        refresh_at: float | None = None,
        _weights: Weights | None = None,
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
        if threads is not None:
            import numba

            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
            # The threads are numba's: BLAS (the dense kernels' sgemm) runs inside them, single
            # threaded. OpenBLAS's own workers competing for the same cores stall for
            # milliseconds per call (measured: a dense frame 2.1 ms with one BLAS thread,
            # 40 ms with two, on the loaded 2-core machine; scripts/dense_profile.py).
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1, user_api="blas")
        self.parallel = threads is not None and threads > 1 and ops_config.PARALLEL
        self.input_shape = tuple(plan.input_shape)
        self.info = dict(plan.info)
        self.tuning_check = None  # streaming.tuning.check_tuning: whole-frame ms of each setting tried, the one kept
        self.class_names = list(self.info.get("class_names") or [])
        self.program = lower(plan, dense_mode=mode == "dense", weights=_weights, blocks=self.threads or ops_config.PAR_BLOCKS)
        layers = self.program.mac_layers
        self.layer_names = [m.name for m in layers]
        self.dense_macs = np.array([m.dense_macs for m in layers], np.int64)
        self.input_elements = np.array([m.input_elements for m in layers], np.int64)
        self._kernels = np.zeros(len(layers), np.int64)
        self._dense_par = self.dense_macs >= DENSE_PARALLEL_MACS
        self.granularity = granularity
        self.dense_parallel = dense_parallel or {}
        self.fallback = bool(fallback)
        self._fallback_at = np.ones(len(layers), np.float64)
        self.breakeven = breakeven or {}
        self.refresh_at = refresh_at
        self._region = None  # None, "static" or "motion"
        self._region_lam = 0.0
        self._region_gain = 1.0
        self._prev_input = None
        self._scaled = False
        p = self.program
        self._fbuf, self._ibuf, self._ubuf = p.new_buffers()
        n_t, n_s, n_m = len(p.tensor_index), len(p.step_names), len(layers)
        self._lst = np.zeros(n_t, np.int64)
        self._nlst = np.zeros(n_t, np.int64)
        self._enc_nnz = np.zeros(n_s, np.int64)
        self._nnz = np.zeros(n_m, np.int64)
        self._macs = np.zeros(n_m, np.int64)
        self._ran_dense = np.zeros(n_m, np.bool_)
        self._frame_out = np.zeros(2, np.float64)  # ops.interpreter.run_frame: tile occupancy, refreshed
        self._never = np.full(n_m, np.inf)
        self._ns = np.zeros(n_s, np.int64)
        timed = p.step_layer >= 0
        self._timed_steps, self._timed_layers = np.flatnonzero(timed), p.step_layer[timed]
        self._phase_steps = {ph: np.flatnonzero(np.array(p.step_phase) == ph) for ph in PHASES}
        self._logits = self._fbuf[p.output[0] : p.output[0] + p.output[1]]
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
        """A new engine (its own stream state) sharing this one's plan and packed weights.

        Every setting is kept (mode, kernel choice, threads, keyframes, profiling, worker
        statistics, dense fallback, break-evens and refresh) unless overridden; the region prior is not (call ``set_region`` again).
        """
        kwargs = dict(mode=self.mode, granularity=self.granularity, threads=self.threads, keyframe_interval=self.keyframe_interval,
                      profile=self.profile, worker_stats=self.worker_stats, fallback=self.fallback,
                      breakeven=self.breakeven, dense_parallel=self.dense_parallel, refresh_at=self.refresh_at)  # fmt: skip
        kwargs.update(overrides)
        return DeltaEngine(self.plan, _weights=self.program.weights, **kwargs)

    @property
    def granularity(self) -> dict[str, str]:
        """Kernel choice per MAC layer (``{name: one of KERNEL_CHOICES}``); assignable, takes
        effect at the next frame."""
        return dict(self._granularity)

    @granularity.setter
    def granularity(self, granularity: str | dict) -> None:
        if isinstance(granularity, str):
            granularity = {n: granularity for n in self.layer_names}
        unknown = set(granularity) - set(self.layer_names)
        if unknown:
            raise ValueError(f"granularity names unknown MAC layers: {sorted(unknown)}")
        bad = {v for v in granularity.values() if v not in KERNEL_CHOICES}
        if bad:
            raise ValueError(f"granularity must be one of {KERNEL_CHOICES} (or a dict of them), got {sorted(bad)}")
        self._granularity = {n: granularity.get(n, "element") for n in self.layer_names}
        self._set_kernels()

    @property
    def dense_parallel(self) -> dict[str, bool]:
        """Per MAC layer, whether its dense kernel runs in parallel row blocks (only with threads > 1);
        assignable (a dict of some layers: the others keep theirs), takes effect at the next frame."""
        return {n: bool(v) and self.parallel for n, v in zip(self.layer_names, self._dense_par)}

    @dense_parallel.setter
    def dense_parallel(self, dense_parallel: dict) -> None:
        unknown = set(dense_parallel) - set(self.layer_names)
        if unknown:
            raise ValueError(f"dense_parallel names unknown MAC layers: {sorted(unknown)}")
        for i, n in enumerate(self.layer_names):
            if n in dense_parallel:
                self._dense_par[i] = bool(dense_parallel[n])
        self._set_kernels()

    def _set_kernels(self) -> None:
        """The interpreter's per-layer kernel codes from the granularity and dense-parallel choices."""
        for i, n in enumerate(self.layer_names):
            choice = self._granularity[n]
            if not self.parallel:
                choice = choice.split("-")[0]
            self._kernels[i] = _KERNEL_CODE[choice] + (ip.KERNEL_DENSE_PARALLEL if self.parallel and self._dense_par[i] else 0)

    @property
    def breakeven(self) -> dict[str, float]:
        """Per MAC layer, the delta fraction at and above which it runs dense (``inf``: never);
        assignable (a dict of some layers: the others keep theirs), takes effect at the next frame."""
        return dict(zip(self.layer_names, self._fallback_at.tolist()))

    @breakeven.setter
    def breakeven(self, breakeven: dict) -> None:
        unknown = set(breakeven) - set(self.layer_names)
        if unknown:
            raise ValueError(f"breakeven names unknown MAC layers: {sorted(unknown)}")
        values = {n: float(v) for n, v in breakeven.items()}
        bad = {n: v for n, v in values.items() if not v > 0}
        if bad:
            raise ValueError(f"breakeven fractions must be > 0 (inf: never fall back), got {bad}")
        for i, n in enumerate(self.layer_names):
            self._fallback_at[i] = values.get(n, self._fallback_at[i])

    @property
    def refresh_at(self) -> float | None:
        """The first encoder's tile occupancy at and above which a delta frame is a refresh frame
        (``None``: never); assignable, takes effect at the next frame."""
        return None if math.isinf(self._refresh_at) else self._refresh_at

    @refresh_at.setter
    def refresh_at(self, refresh_at: float | None) -> None:
        if refresh_at is not None and not (0 <= float(refresh_at) <= 1):
            raise ValueError(f"refresh_at must be a fraction in [0, 1] or None (never), got {refresh_at!r}")
        if refresh_at is not None and self.mode == "dense":
            raise ValueError("refresh_at needs mode='delta' (dense mode has no delta frames)")
        self._refresh_at = math.inf if refresh_at is None else float(refresh_at)

    # --- running ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new stream: every reference back to zero (``y_{-1} = 0``)."""
        self._fbuf[: self.program.fbuf_state] = 0.0
        self._ubuf[:] = 0
        self._lst[:] = self.program.iota[0]
        self._nlst[:] = 0
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
        dense = keyframe or self.mode == "dense"
        if self._region == "motion":
            from streaming.region import motion_prior

            self._set_scales(self._scales(motion_prior(frame, self._prev_input), self._region_lam, self._region_gain))
            self._prev_input = frame.copy()
        p = self.program
        start = time.perf_counter()
        bad = run_frame(p.steps, p.params, p.inputs, p.tensors, p.scratch, p.weights.wbuf, self._fbuf, self._ibuf, self._ubuf,
                        frame, self._kernels, self._lst, self._nlst, self._enc_nnz, self._nnz, self._macs, self._ran_dense,
                        self._ns, self._fallback_at if self.fallback else self._never, self._refresh_at, self._frame_out, dense,
                        self._scaled, self.profile)  # fmt: skip
        total = (time.perf_counter() - start) * 1e3
        if bad >= 0:
            raise ValueError(f"non-finite activations entering {p.step_names[bad]!r}: the model or the frame is broken "
                             "(reset() starts a clean stream)")  # fmt: skip
        self.frame_index = k + 1
        if self.profile:
            ms = self._ns * 1e-6
            layer_ms = np.bincount(self._timed_layers, ms[self._timed_steps], minlength=len(self.layer_names))
            phase = {ph: float(ms[idx].sum()) for ph, idx in self._phase_steps.items()}
        else:
            layer_ms = np.full(len(self.layer_names), np.nan)
            phase = {}
        refreshed = bool(self._frame_out[1]) and not dense
        if not np.all(np.isfinite(self._logits)):  # (no encoder follows the last layer; a refresh frame's copy without checking)
            raise ValueError(f"non-finite logits{' in a refresh frame' if refreshed else ''}: the model or the frame is broken "
                             "(reset() starts a clean stream)")  # fmt: skip
        stats = FrameStats(k, keyframe, self._nnz.copy(), self._macs.copy(), layer_ms, total, phase, dense_macs=self.dense_macs,
                           input_elements=self.input_elements, fallback_layers=self._ran_dense & (not (dense or refreshed)),
                           refreshed=refreshed)  # fmt: skip
        if self.worker_stats and not (dense or refreshed):
            from streaming.workers import engine_frame_loads

            stats.worker_max, stats.worker_mean = engine_frame_loads(self)
        return self._logits.copy(), stats

    def run(self, frames) -> tuple[np.ndarray, list[FrameStats]]:
        """Step through an iterable of frames; returns stacked logits and the stats list."""
        outs, stats = [], []
        for f in frames:
            logits, s = self.step(f)
            outs.append(logits)
            stats.append(s)
        return np.stack(outs) if outs else np.zeros((0,)), stats

    def warmup(self) -> None:
        """Compile the interpreter with this engine's kernel choices (a dense and two delta
        frames, synthetic), then reset."""
        rng = np.random.default_rng(0)
        h, w, c = self.input_shape
        base = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        moved = base.copy()
        moved[: h // 4, : w // 4] = 255 - moved[: h // 4, : w // 4]
        for f in (base, moved, base):
            self.step(f)
        self.reset()

    def time_mac_layer(self, layer: int, active: np.ndarray | None, reps: int = 5, seed: int = 0) -> np.ndarray:
        """Nanoseconds of ``reps`` runs of MAC layer ``layer`` alone (``streaming.tuning.tune_fallback``).

        ``active``: ascending flat input pixels of a synthetic delta (every channel non-zero)
        for the layer's chosen delta kernel, or ``None`` for its dense kernel. The runs write
        the layer's buffers: the engine's stream starts again (``reset``) afterwards.
        """
        m = self.program.mac_layers[layer]
        if m.rows_offset < 0:
            raise ValueError("dense mode has no delta kernels to time")
        hw, cin = m.in_shape[0] * m.in_shape[1], m.in_shape[2]
        n = hw if active is None else len(active)
        if active is not None:
            pix = self.program.tensors[m.source, ip.T_PIX]
            self._ibuf[pix : pix + n] = active
            rng = np.random.default_rng(seed)
            rows = self._fbuf[m.rows_offset : m.rows_offset + hw * cin].reshape(hw, cin)
            rows[:n] = rng.uniform(0.5, 1.5, (n, cin)) * rng.choice(np.float32([-1, 1]), (n, cin))
        p = self.program
        try:
            return ip.time_mac_step(p.steps, p.inputs, p.tensors, p.scratch, p.weights.wbuf, self._fbuf, self._ibuf, self._ubuf,
                                    m.step, self._kernels[layer], n, active is None, int(reps))  # fmt: skip
        finally:
            self.reset()

    # --- what Python reads back ------------------------------------------------------------

    def delta_of(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """The sparse delta MAC layer ``layer`` received in the last delta frame: ``(active, rows)``,
        the ascending flat indices of the active input pixels and their delta rows (views)."""
        m = self.program.mac_layers[layer]
        if m.rows_offset < 0:
            raise ValueError("dense mode transmits no deltas")
        src = self.program.tensors[m.source]
        n = int(self._nlst[m.source])
        active = self._ibuf[src[ip.T_PIX] : src[ip.T_PIX] + n]
        hw, cin = m.in_shape[0] * m.in_shape[1], m.in_shape[2]
        rows = self._fbuf[m.rows_offset : m.rows_offset + hw * cin].reshape(hw, cin)[:n]
        return active, rows

    @property
    def occupancy(self) -> float:
        """The last frame's share of ``ops.interpreter.REFRESH_TILE``-pixel tiles where the first encoder
        fired (1.0 for a dense frame): what ``refresh_at`` is compared with."""
        return float(self._frame_out[0])

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
        if self.mode == "dense":
            raise ValueError("set_region needs mode='delta' (dense mode transmits everything)")
        if prior is not None and not self.program.threshold_encoders:
            raise ValueError("set_region: the model has no threshold-mode delta layers")
        lam, gain = float(lam), float(gain)
        if not (np.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
        if not (np.isfinite(gain) and gain > 0):
            raise ValueError(f"gain must be finite and > 0, got {gain!r}")
        if isinstance(prior, str) and prior != "motion":
            raise ValueError(f"prior must be None, 'motion' or an (H, W) array, got {prior!r}")
        if prior is None:
            self._set_scales({hw: np.ones(hw[0] * hw[1], np.float32) for hw in self.program.region_scales})
            self._region, self._scaled = None, False
            return
        static = not isinstance(prior, str)
        # scales first (a bad prior raises here), then the engine's state
        scales = self._scales(prior if static else np.zeros(self.input_shape[:2], np.float32), lam, gain)
        self._region, self._region_lam, self._region_gain = ("static" if static else "motion"), lam, gain
        self._prev_input = None
        self._set_scales(scales)
        self._scaled = True

    @property
    def region(self) -> str | None:
        """The region prior in use: ``None``, ``"static"`` (an array) or ``"motion"``."""
        return self._region

    def region_scale(self, hw: tuple[int, int]) -> np.ndarray:
        """The per-pixel threshold factor in use at resolution ``(h, w)`` (a read-only view)."""
        off = self.program.region_scales[tuple(hw)]
        view = self._fbuf[off : off + hw[0] * hw[1]].view()
        view.setflags(write=False)
        return view

    def _scales(self, prior, lam: float, gain: float) -> dict:
        """``gain / (1 + lam * P)`` at every threshold encoder's resolution: ``{(h, w): (h*w,) float32}``."""
        from streaming.region import pixel_scales

        out = {}
        for hw in self.program.region_scales:
            out[hw] = pixel_scales(prior, lam, hw)
            if gain != 1.0:
                out[hw] *= np.float32(gain)
        return out

    def _set_scales(self, scales: dict) -> None:
        for (h, w), off in self.program.region_scales.items():
            self._fbuf[off : off + h * w] = scales[(h, w)]
