"""Training-free threshold calibration of delta models (strategies from the activation-sparsity literature).

A threshold-mode ``DeltaActivation`` fires an element when its *accumulated unsent change*
``|x_t - r_{t-1}|`` exceeds ``theta[c]`` (a skipped delta's error carries into later
frames: ``tests/naive.py::threshold_stream``). Every criterion below therefore acts on that
accumulated change, through the layer's per-channel ``threshold`` weights, and every
density is measured by simulating the hysteresis (never by thresholding raw frame
differences). Methods (``calibrate(..., method=...)``):

``uniform``
    One threshold for every channel of every layer; one scalar solved for the target.
``wina`` (WINA, arXiv 2505.19427)
    Weight-informed gating: fire when ``|d_c| * ||W_next[..., c, :]|| > theta``, i.e.
    ``theta_c = theta / ||W_next[c]||``; one global ``theta`` for the whole model, so the
    criterion (an estimate of the change a delta makes in the next layer's output) also
    decides how the density is shared among layers.
``chess`` (CHESS, arXiv 2409.01366)
    Per layer an error budget ``T``: a delta on channel ``c`` matters as
    ``I_c = d_c^2 * s_c`` (``s_c`` the squared norm of the consuming layers' weights for
    input channel ``c``), so ``theta_c = sqrt(T / s_c)``; each layer's ``T`` gives it the
    same density (water-filled: a layer already sparser than that with exact deltas keeps
    threshold 0 and its share goes to the others). Plus selective sparsification: a
    measured sensitivity sweep (output error per MAC saved when only that layer is
    sparsified) proposes layers to keep exact (threshold 0); the candidate sets (none, the
    most sensitive one, two, ...) are each calibrated and the one with the lowest output
    error on the calibration clips is kept.
``teal`` (TEAL, arXiv 2408.14690)
    Per layer one threshold (all channels): the quantile of ``|accumulated delta|`` that
    gives a density (for the hysteresis that is the fixed point ``theta = quantile_{1-p}
    |x_t - r_{t-1}(theta)|``, found by search: :func:`teal_threshold`); a greedy allocator
    starts from exact deltas and repeatedly raises the sparsity of the layer whose next
    step costs the least output error (per-frame logits, measured with only that layer
    sparsified) per MAC saved, until the predicted MAC density meets the target.

``s_c`` and ``||W_next[c]||`` fold in a BatchNormalization that directly follows the
consuming layer (its scale ``gamma / sqrt(var + eps)`` per output channel), since that is
where the error lands. The two per-channel shapes coincide (``sqrt(T / s_c) =
sqrt(T) / ||W[c]||``): CHESS and WINA differ in how much density each layer gets.

Every method ends with one global *trim*: all thresholds are multiplied by one factor,
solved on the calibration clips so that the measured MAC density (the model run end to
end, upstream thresholds included, ``deltanet.density`` definitions) meets the target
within ``tol``. Per-layer densities are predicted from each layer's own input with the
other layers exact; upstream sparsification changes them, and the trim absorbs that.

The model must be a clip model whose delta layers are all threshold-mode and per-channel:
:func:`prepare_model` makes one from any trained clip model (baseline or delta) by
re-deltafying its per-frame network with threshold 0 (weights shared).

This module is the orchestration (``calibrate``, ``prepare_model``, ``match_density``); its parts live in
``calibration_sites`` (delta sites, weight norms, CHESS/WINA thresholds), ``calibration_curves`` (the
simulated hysteresis, TEAL's threshold), ``calibration_allocation`` (sharing the target among layers) and
``calibration_runner`` (running the model on calibration clips).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

# The parts, one job each (this module is the orchestration); their public names are re-exported, so
# ``from deltanet import calibrate as cal`` keeps giving ``cal.delta_sites``, ``cal.Runner``, ``cal.teal_threshold``...
from deltanet.calibration_allocation import greedy_allocation, water_fill  # noqa: F401
from deltanet.calibration_curves import DensityCurve, hysteresis_density, teal_threshold  # noqa: F401
from deltanet.calibration_runner import Runner, get_thresholds, output_agreement, set_thresholds, solve_scale  # noqa: F401
from deltanet.calibration_sites import (  # noqa: F401
    DeltaSite,
    _inverse_norm_base,
    chess_thresholds,
    delta_sites,
    input_channel_sq_norms,
    site_sq_norms,
    wina_thresholds,
)

METHODS = ("uniform", "chess", "wina", "teal")

#: densities of the TEAL greedy levels, as fractions of each layer's exact-delta density
TEAL_LEVELS = tuple(0.75**k for k in range(17))  # 1 ... 0.01



# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------


@dataclass
class CalibrationResult:
    method: str
    target_density: float
    mac_density: float  # measured on the calibration clips after the trim
    exact_density: float  # with exact deltas (threshold 0 everywhere)
    thresholds: dict  # name -> per-channel float32
    trim: float  # the global factor of the final trim
    layers: list  # per site: name, macs, exact_density, planned_density, density, (budget | theta)
    dense_layers: list = field(default_factory=list)  # CHESS: sites kept exact
    mse: float = float("nan")  # per-frame logits vs exact deltas, calibration clips
    top1_agreement: float = float("nan")
    model_runs: int = 0
    sweep_clips: int = 0  # clips the error sweeps ran on
    candidates: list = field(default_factory=list)  # CHESS: the dense sets tried and their error

    def summary(self) -> dict:
        """JSON-friendly summary (no per-channel arrays), e.g. for the model's ``info``."""
        return {
            "method": self.method,
            "target_density": self.target_density,
            "calibration_mac_density": self.mac_density,
            "exact_mac_density": self.exact_density,
            "trim": self.trim,
            "dense_layers": list(self.dense_layers),
            "calibration_mse": self.mse,
            "calibration_top1_agreement": self.top1_agreement,
            "layers": [{k: v for k, v in rec.items()} for rec in self.layers],
        }


def prepare_model(model: keras.Model) -> keras.Model:
    """A calibratable clip classifier from any trained clip model (baseline or delta).

    The per-frame network is taken out (``deltanet.per_frame_model``, weights shared) and
    re-deltafied with ``mode="threshold"``, per-channel thresholds 0 (exact deltas: the
    output equals the dense model's); the clip head's ``info`` is copied.
    """
    from deltanet.models import clip_classifier, model_info, per_frame_model

    frame_model = per_frame_model(model)
    info = model_info(model)
    info["baseline"] = False
    return clip_classifier(frame_model, mode="threshold", threshold=0.0, info=info)


def _capture_groups(runner: Runner, sites: list[DeltaSite], max_bytes: int):
    """Yield ``{name: input}`` for groups of sites whose cached inputs fit in ``max_bytes``.

    If even one site's input over all clips exceeds ``max_bytes``, only the first batches
    (at least one) that fit are captured for every site: a density curve needs a
    representative sample, not every clip (the final trim runs on all of them).
    """
    frames = runner.batches[0].shape[1]
    per_clip = {s.name: 4 * frames * math.prod(int(v) for v in s.layer.input.shape[2:]) for s in sites}
    batches, n = [], 0
    for b in runner.batches:
        if batches and (n + b.shape[0]) * max(per_clip.values()) > max_bytes:
            break
        batches.append(b)
        n += b.shape[0]
    group, size = [], 0
    for s in sites:
        nbytes = n * per_clip[s.name]
        if group and size + nbytes > max_bytes:
            yield runner.capture(group, batches)
            group, size = [], 0
        group.append(s.name)
        size += nbytes
    if group:
        yield runner.capture(group, batches)


def _trim(model, runner: Runner, names: list[str], plan: dict[str, np.ndarray], target: float, *, tol: float, start: float = 1.0):
    """Assign ``a * plan`` with one global factor solved for the target MAC density; returns
    ``(a, measurement)``.

    The input layer sees quantized values (uint8 frames), so its density moves in jumps; if
    one global factor cannot land within ``tol``, the first (input) layer is frozen at the
    largest factor still denser than the target and a second factor on the other layers
    finishes the job.
    """
    seen = []

    def evaluate(a):
        set_thresholds(model, {n: a * plan[n] for n in names})
        d = runner.measure(with_logits=False)["mac_density"]
        seen.append((a, d))
        return d

    a, d = solve_scale(evaluate, target, start=start, tol=tol)
    scaled = {n: a * plan[n] for n in names}
    above = [s for s in seen if s[1] > target]
    if abs(d - target) > tol and above and len(names) > 1:
        a_in = max(above)[0]
        first, rest = names[0], names[1:]

        def evaluate_rest(b):
            set_thresholds(model, {first: a_in * plan[first], **{n: a_in * b * plan[n] for n in rest}})
            return runner.measure(with_logits=False)["mac_density"]

        b, d2 = solve_scale(evaluate_rest, target, start=1.0, tol=tol)
        if abs(d2 - target) < abs(d - target):
            a = a_in
            scaled = {first: a_in * plan[first], **{n: a_in * b * plan[n] for n in rest}}
    set_thresholds(model, scaled)
    return a, runner.measure()


def calibrate(
    model: keras.Model,
    batches: Sequence[np.ndarray],
    target_density: float,
    method: str = "teal",
    *,
    tol: float = 0.002,
    fold_bn: bool = True,
    max_dense: int = 3,
    levels: Sequence[float] = TEAL_LEVELS,
    curve_points: int = 40,
    max_capture_bytes: int = 1 << 30,
    sweep_clips: int = 64,
    teal_channels: str = "uniform",
    log: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Set the thresholds of ``model``'s delta layers (in place) for a target MAC density.

    Args:
        model: a clip model whose delta layers are threshold-mode and per-channel
            (:func:`prepare_model`). Its current thresholds are ignored.
        batches: calibration clip batches ``(B, T, H, W, C)`` (numpy; uint8 frames are fine).
        target_density: MAC density to reach (``deltanet.density.mac_density`` of the
            temporal densities, frames t >= 1), in ``(0, 1)``.
        method: ``"uniform"``, ``"chess"``, ``"wina"`` or ``"teal"`` (module docstring).
        tol: accepted ``|measured - target|`` on the calibration clips. Defaults to 0.002.
        fold_bn: include a following BatchNormalization's scale in the weight norms.
        max_dense: CHESS: the most layers kept exact that are tried.
        levels: TEAL: greedy levels as fractions of each layer's exact density (level 0 must be 1).
        curve_points: samples of each layer's density curve.
        max_capture_bytes: cached layer inputs are captured in groups of at most this size.
        sweep_clips: the error sweeps (TEAL's per-layer error curves, CHESS's sensitivity)
            run on the first this many clips; densities, the trim and the
            final measurement use all of ``batches`` (the density needs many clips to
            generalise, the error ranking far fewer).
        teal_channels: TEAL: ``"uniform"`` (one threshold for all of a layer's channels, as
            TEAL has it) or ``"weights"`` (per channel ``theta_c ~ 1 / ||W_next[c]||``, the
            CHESS/WINA shape, with TEAL's measured greedy allocation among layers).
        log: optional progress callback (one line per step).

    Returns:
        A :class:`CalibrationResult`; the thresholds are also assigned to ``model``.

    Raises:
        ValueError: unknown method, a target outside ``(0, 1)``, a target above the
            density of exact deltas, or an unsuitable model.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if teal_channels not in ("uniform", "weights"):
        raise ValueError(f"teal_channels must be 'uniform' or 'weights', got {teal_channels!r}")
    if not 0.0 < float(target_density) < 1.0:
        raise ValueError(f"target_density must be in (0, 1), got {target_density!r}")
    target = float(target_density)
    say = log or (lambda msg: None)
    sites = delta_sites(model)
    if not sites:
        raise ValueError(f"model {model.name!r} has no delta layers; use prepare_model()")
    runner = Runner(model, sites, list(batches))
    names = [s.name for s in sites]
    macs = np.array([s.macs for s in sites], np.float64)

    zeros = {s.name: np.zeros(s.channels, np.float32) for s in sites}
    set_thresholds(model, zeros)
    exact = runner.measure()
    runner.reference = exact["logits"]
    sweep_batches, n_sweep = [], 0
    for b in runner.batches:
        if n_sweep >= sweep_clips:
            break
        sweep_batches.append(b[: sweep_clips - n_sweep])  # exactly sweep_clips clips, even inside a batch
        n_sweep += sweep_batches[-1].shape[0]
    if n_sweep == sum(b.shape[0] for b in runner.batches):
        sweeper = runner
    else:
        sweeper = Runner(model, sites, sweep_batches)
        sweeper.reference = exact["logits"][:n_sweep]
    p0 = np.asarray(exact["densities"], np.float64)
    say(f"exact deltas: MAC density {exact['mac_density']:.4f} on {sum(b.shape[0] for b in runner.batches)} clips")
    if exact["mac_density"] <= target + tol:
        raise ValueError(
            f"target density {target} is not below the density with exact deltas "
            f"({exact['mac_density']:.4f}): nothing to calibrate"
        )

    norms_base = {s.name: _inverse_norm_base(site_sq_norms(s, fold_bn)) for s in sites}
    ones = {s.name: np.ones(s.channels, np.float64) for s in sites}
    weighted = method in ("wina", "chess") or (method == "teal" and teal_channels == "weights")
    base = norms_base if weighted else ones
    layers = [{"name": s.name, "macs": int(s.macs), "exact_density": float(p)} for s, p in zip(sites, p0)]
    dense_layers: list[str] = []
    candidates: list = []

    def trimmed(plan: dict[str, np.ndarray], start: float = 1.0):
        return _trim(model, runner, names, plan, target, tol=tol, start=start)

    if method in ("uniform", "wina"):
        # one global scalar; start from a typical accumulated-change size
        plan = {n: base[n] for n in names}
        median_base = float(np.median(np.concatenate([base[n] for n in names])))
        a, final = trimmed(plan, start=0.05 / median_base)
    else:
        curves: dict[str, DensityCurve] = {}
        for group in _capture_groups(runner, sites, max_capture_bytes):
            for n, x in group.items():
                curves[n] = DensityCurve(x, base[n], points=curve_points)
            say(f"density curves: {len(curves)}/{len(sites)} layers")

        def plan_for(dens: np.ndarray) -> dict[str, np.ndarray]:
            return {n: curves[n].scale_for(float(p)) * base[n] for n, p in zip(names, dens)}

        if method == "chess":
            uniform = water_fill(macs, p0, target)
            # sensitivity sweep: only layer i sparsified to its uniform share
            sens = np.zeros(len(sites))
            for i, n in enumerate(names):
                if uniform[i] >= p0[i]:
                    continue
                set_thresholds(model, {**zeros, n: curves[n].scale_for(uniform[i]) * base[n]})
                sens[i] = sweeper.error()
            saved = macs * np.maximum(p0 - uniform, 0.0)
            score = np.where(saved > 0, sens / np.maximum(saved, 1e-30), -1.0)
            order = [i for i in np.argsort(-score) if score[i] > 0]
            for rec, s in zip(layers, sens):
                rec["sensitivity_mse"] = float(s)
            best = None
            for k in range(0, min(max_dense, len(order)) + 1):
                dense = order[:k]
                if (macs[dense] * p0[dense]).sum() >= target * macs.sum() * 0.9:
                    break  # the rest could not reach the target
                dens = water_fill(macs, p0, target, dense)
                plan = plan_for(dens)
                a, m = trimmed(plan)
                cand = {
                    "dense_layers": [names[i] for i in dense],
                    "mse": m["mse"],
                    "mac_density": m["mac_density"],
                    "top1_agreement": m["top1_agreement"],
                }
                candidates.append(cand)
                say(f"chess: keep exact {cand['dense_layers'] or 'none'} -> MAC density {m['mac_density']:.4f}, mse {m['mse']:.4g}")
                key = (abs(m["mac_density"] - target) > tol, m["mse"])  # on target first, then the least error
                if best is None or key < best[0]:
                    best = (key, dense, dens, get_thresholds(model), a)
            _, dense, dens, chosen, a = best
            dense_layers = [names[i] for i in dense]
            set_thresholds(model, chosen)  # the trimmed thresholds of the chosen candidate
            final = runner.measure()
            for rec, p in zip(layers, dens):
                rec["planned_density"] = float(p)
        else:  # teal
            fracs = np.asarray(levels, np.float64)
            if fracs[0] != 1.0 or np.any(np.diff(fracs) >= 0):
                raise ValueError("levels must start at 1.0 and decrease")
            dens_lv = np.outer(p0, fracs)  # (L, K)
            err = np.zeros_like(dens_lv)
            for i, n in enumerate(names):
                for k in range(1, len(fracs)):
                    if dens_lv[i, k] < 1e-6:
                        err[i, k] = err[i, k - 1]
                        continue
                    set_thresholds(model, {**zeros, n: curves[n].scale_for(dens_lv[i, k]) * base[n]})
                    err[i, k] = sweeper.error()
                say(f"teal: error curve of {n} ({i + 1}/{len(names)})")
            level = greedy_allocation(macs, dens_lv, err, target)
            dens = dens_lv[np.arange(len(names)), level]
            plan = plan_for(dens)
            a, final = trimmed(plan)
            for rec, p in zip(layers, dens):
                rec["planned_density"] = float(p)

    thresholds = get_thresholds(model)
    for rec, p, s in zip(layers, final["densities"], sites):
        rec["density"] = float(p)
        thr = thresholds[s.name].astype(np.float64)
        if weighted:
            # theta_c = sqrt(T / s_c): the layer's budget T (WINA's theta is sqrt(T))
            rec["budget"] = float(np.median(thr**2 / norms_base[s.name] ** 2))
        else:
            rec["theta"] = float(thr[0])
    return CalibrationResult(
        method=method,
        target_density=target,
        mac_density=float(final["mac_density"]),
        exact_density=float(exact["mac_density"]),
        thresholds={n: thresholds[n] for n in names},
        trim=float(a),
        layers=layers,
        dense_layers=dense_layers,
        mse=float(final.get("mse", float("nan"))),
        top1_agreement=float(final.get("top1_agreement", float("nan"))),
        model_runs=runner.calls + (sweeper.calls if sweeper is not runner else 0),
        sweep_clips=n_sweep,
        candidates=candidates,
    )


def match_density(model: keras.Model, batches: Sequence[np.ndarray], target_density: float, *, tol: float = 0.002) -> float:
    """Scale all of a delta model's current thresholds by one factor so that its measured
    MAC density on ``batches`` is ``target_density`` (e.g. to compare a delta-trained model
    with calibrated ones at the same density). Returns the factor; assigns in place."""
    sites = delta_sites(model)
    runner = Runner(model, sites, list(batches))
    plan = get_thresholds(model)
    names = [s.name for s in sites]
    if all(not np.any(plan[n]) for n in names):
        raise ValueError("all thresholds are 0: nothing to scale (use calibrate)")
    a, _ = _trim(model, runner, names, plan, float(target_density), tol=tol)
    return a
