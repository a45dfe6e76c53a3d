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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from deltanet import density
from deltanet.delta_activation import DeltaActivation
from deltanet.frame_wise import FrameWise
from deltanet.graph import MAC_LAYERS, graph_nodes, layer_macs
from deltanet.upstream import producer_of
from ops.encode import count_fires

METHODS = ("uniform", "chess", "wina", "teal")

#: densities of the TEAL greedy levels, as fractions of each layer's exact-delta density
TEAL_LEVELS = tuple(0.75**k for k in range(17))  # 1 ... 0.01


# --------------------------------------------------------------------------------------
# the model's delta sites and the weights behind them
# --------------------------------------------------------------------------------------


@dataclass
class DeltaSite:
    """One ``DeltaActivation`` and the MAC layers it feeds."""

    name: str
    layer: DeltaActivation
    consumers: list  # inner MAC layers (Conv2D, DepthwiseConv2D, SeparableConv2D, Dense)
    macs: int  # dense MACs per frame of the consumers together
    channels: int
    out_scales: list = field(default_factory=list)  # per consumer: BN scale per output channel, or None


def _tensor_consumers(model: keras.Model) -> dict[int, list]:
    out: dict[int, list] = {}
    for node in graph_nodes(model):
        for t in node.input_tensors:
            out.setdefault(id(t), []).append(node.operation)
    return out


def _bn_scale(bn: keras.layers.BatchNormalization) -> np.ndarray:
    var = np.asarray(keras.ops.convert_to_numpy(bn.moving_variance), np.float64)
    scale = 1.0 / np.sqrt(var + bn.epsilon)
    if bn.scale:
        scale = scale * np.asarray(keras.ops.convert_to_numpy(bn.gamma), np.float64)
    return scale


def delta_sites(model: keras.Model) -> list[DeltaSite]:
    """The delta layers of a clip model in graph order, each with its consumer MAC layers.

    Raises ``ValueError`` if a delta layer is not threshold-mode and per-channel, or feeds no
    MAC layer.
    """
    consumers = _tensor_consumers(model)
    sites: dict[str, DeltaSite] = {}
    order = []
    for layer in model.layers:
        if isinstance(layer, DeltaActivation):
            if layer.mode != "threshold" or not layer.per_channel:
                raise ValueError(
                    f"{layer.name}: calibration needs threshold-mode, per-channel delta layers "
                    f"(got mode={layer.mode!r}, per_channel={layer.per_channel}); use prepare_model()"
                )
            order.append(layer.name)
            sites[layer.name] = DeltaSite(layer.name, layer, [], 0, int(layer.input.shape[-1]))
    for layer in model.layers:
        if not (isinstance(layer, FrameWise) and isinstance(layer.layer, MAC_LAYERS)):
            continue
        producer = producer_of(layer.input)
        if not isinstance(producer, DeltaActivation):
            continue
        inner = layer.layer
        site = sites[producer.name]
        site.consumers.append(inner)
        site.macs += layer_macs(inner, tuple(layer.input.shape[2:]), tuple(layer.output.shape[2:]))
        nxt = consumers.get(id(layer.output), [])
        bn = None
        if len(nxt) == 1 and isinstance(nxt[0], FrameWise) and isinstance(nxt[0].layer, keras.layers.BatchNormalization):
            bn = _bn_scale(nxt[0].layer)
        site.out_scales.append(bn)
    missing = [n for n in order if not sites[n].consumers]
    if missing:
        raise ValueError(f"delta layer(s) feeding no MAC layer: {missing}")
    return [sites[n] for n in order]


def _np(v) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v), np.float64)


def input_channel_sq_norms(layer: keras.layers.Layer, out_scale: np.ndarray | None = None) -> np.ndarray:
    """``s_c``: squared norm of a MAC layer's weights for each input channel ``c``.

    The output-space energy of a unit delta on channel ``c`` at one pixel: the sum over taps
    and output channels of the squared weights, each output channel's weights times
    ``out_scale`` (a following BatchNormalization's scale) when given.

    * Conv2D ``(kh, kw, Cin/g, Cout)``: ``sum_{ky,kx,o in group(c)} (W[ky,kx,c',o] g_o)^2``
    * DepthwiseConv2D ``(kh, kw, C, M)``: ``sum_{ky,kx,m} (W[ky,kx,c,m] g_{cM+m})^2``
    * SeparableConv2D: per tap, ``sum_o (sum_m dw[ky,kx,c,m] pw[cM+m,o] g_o)^2``
    * Dense ``(Cin, Cout)``: ``sum_o (W[c,o] g_o)^2``
    """
    if isinstance(layer, keras.layers.SeparableConv2D):
        dw = _np(layer.depthwise_kernel)  # (kh, kw, C, M)
        pw = _np(layer.pointwise_kernel)[0, 0]  # (C*M, Cout)
        kh, kw, c, m = dw.shape
        if out_scale is not None:
            pw = pw * out_scale[None, :]
        eff = np.einsum("hwcm,cmo->hwco", dw, pw.reshape(c, m, -1))
        return np.sum(eff**2, axis=(0, 1, 3))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        w = _np(layer.kernel)  # (kh, kw, C, M)
        kh, kw, c, m = w.shape
        if out_scale is not None:
            w = w * out_scale.reshape(1, 1, c, m)
        return np.sum(w**2, axis=(0, 1, 3))
    if isinstance(layer, keras.layers.Conv2D):
        w = _np(layer.kernel)  # (kh, kw, Cin/g, Cout)
        if out_scale is not None:
            w = w * out_scale[None, None, None, :]
        groups = int(getattr(layer, "groups", 1) or 1)
        cpg, cout = w.shape[2], w.shape[3]
        opg = cout // groups
        sq = np.sum(w**2, axis=(0, 1))  # (Cin/g, Cout)
        return np.concatenate([sq[:, g * opg : (g + 1) * opg].sum(axis=1) for g in range(groups)])[: cpg * groups]
    if isinstance(layer, keras.layers.Dense):
        w = _np(layer.kernel)  # (Cin, Cout)
        if out_scale is not None:
            w = w * out_scale[None, :]
        return np.sum(w**2, axis=1)
    raise TypeError(f"{layer.name} ({type(layer).__name__}) is not a MAC layer")


def site_sq_norms(site: DeltaSite, fold_bn: bool = True) -> np.ndarray:
    """``s_c`` of a delta site: summed over the MAC layers it feeds."""
    total = np.zeros(site.channels, np.float64)
    for layer, scale in zip(site.consumers, site.out_scales):
        total += input_channel_sq_norms(layer, scale if fold_bn else None)
    return total


def chess_thresholds(sq_norms: np.ndarray, budget: float) -> np.ndarray:
    """CHESS per-channel thresholds ``theta_c = sqrt(T / s_c)`` (a channel with ``s_c = 0``
    gets the largest finite threshold of the layer times 1000: its deltas cost nothing)."""
    return _inverse_norm_base(np.asarray(sq_norms, np.float64)) * math.sqrt(float(budget))


def wina_thresholds(sq_norms: np.ndarray, theta: float) -> np.ndarray:
    """WINA per-channel thresholds ``theta_c = theta / ||W_next[c]||`` (``||W[c]|| = sqrt(s_c)``)."""
    return _inverse_norm_base(np.asarray(sq_norms, np.float64)) * float(theta)


def _inverse_norm_base(sq: np.ndarray) -> np.ndarray:
    base = np.zeros_like(sq)
    ok = sq > 0
    base[ok] = 1.0 / np.sqrt(sq[ok])
    base[~ok] = (base[ok].max() if ok.any() else 1.0) * 1e3
    return base


# --------------------------------------------------------------------------------------
# the hysteresis on cached activations
# --------------------------------------------------------------------------------------


def _as_nt_mc(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim < 3:
        raise ValueError(f"expected clip activations (batch, time, ..., C), got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], -1, x.shape[-1])


def hysteresis_density(x: np.ndarray, theta) -> float:
    """Temporal density (frames t >= 1, ``deltanet.density``) of a threshold-mode delta layer
    with thresholds ``theta`` (scalar or per channel) on clip activations ``x`` (batch, time, ..., C)."""
    x4 = _as_nt_mc(x)
    theta = np.ascontiguousarray(np.broadcast_to(np.asarray(theta, np.float32), (x4.shape[-1],)))
    total = x4.shape[0] * (x4.shape[1] - 1) * x4.shape[2] * x4.shape[3]
    if total <= 0:
        return float("nan")
    return count_fires(x4, theta) / total


class DensityCurve:
    """Density of one layer as a function of a scale ``s`` on per-channel thresholds ``s * base``.

    Sampled on a log grid of ``s`` (plus ``s = 0``: exact deltas) from the layer's cached input;
    :meth:`scale_for` inverts it by log-linear interpolation (the density is made
    non-increasing in ``s``).
    """

    def __init__(self, x: np.ndarray, base: np.ndarray, points: int = 40, decades: float = 5.0):
        x4 = _as_nt_mc(x)
        base = np.asarray(base, np.float64)
        self.p0 = hysteresis_density(x4, np.zeros(x4.shape[-1], np.float32))
        span = float(np.max(np.abs(x4))) * 2.0 + 1e-12
        s_max = span / float(np.min(base))  # every threshold above any possible change: density 0
        self.scales = np.geomspace(s_max * 10.0**-decades, s_max, points)
        dens = [hysteresis_density(x4, (s * base).astype(np.float32)) for s in self.scales]
        self.densities = np.minimum.accumulate(np.minimum(np.asarray(dens), self.p0))

    def scale_for(self, p: float) -> float:
        """The smallest sampled-interpolated scale whose density is ``<= p`` (0 if ``p >= p0``)."""
        if p >= self.p0:
            return 0.0
        d = self.densities
        if p <= d[-1]:
            return float(self.scales[-1])
        if p >= d[0]:
            # between exact deltas (p0) and the smallest sampled scale: interpolate linearly in s
            return float(self.scales[0] * (self.p0 - p) / max(self.p0 - d[0], 1e-12))
        i = int(np.argmax(d <= p))  # first index with density <= p (d is non-increasing)
        d0, d1 = d[i - 1], d[i]
        ls0, ls1 = np.log(self.scales[i - 1]), np.log(self.scales[i])
        u = 0.0 if d0 == d1 else (d0 - p) / (d0 - d1)
        return float(np.exp(ls0 + u * (ls1 - ls0)))


def teal_threshold(x: np.ndarray, target: float, *, iters: int = 40) -> float:
    """TEAL's per-layer threshold: the quantile of ``|accumulated delta|`` giving density ``target``.

    For the hysteresis the accumulated deltas ``x_t - r_{t-1}(theta)`` depend on the
    threshold itself; the threshold wanted is the fixed point ``theta`` at which a fraction
    ``target`` of them exceed ``theta`` (frames t >= 1), i.e. the threshold whose simulated
    density is ``target``. Found by bisection (the density is non-increasing in theta up to
    hysteresis effects); returns the smallest threshold found with density ``<= target``.
    """
    x4 = _as_nt_mc(x)
    c = x4.shape[-1]
    if hysteresis_density(x4, np.zeros(c, np.float32)) <= target:
        return 0.0
    lo, hi = 0.0, float(np.max(np.abs(x4))) * 2.0 + 1e-12
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if hysteresis_density(x4, np.full(c, mid, np.float32)) <= target:
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------------------
# allocation
# --------------------------------------------------------------------------------------


def water_fill(macs: Sequence[float], p0: Sequence[float], target: float, dense: Iterable[int] = ()) -> np.ndarray:
    """Per-layer densities ``min(p, p0_l)`` with one common ``p`` so that the MAC-weighted mean is ``target``.

    Layers in ``dense`` keep ``p0_l`` (exact deltas). If the target cannot be met even at
    ``p = 0`` the others get 0; if it is above the exact density everything gets ``p0``.
    """
    macs = np.asarray(macs, np.float64)
    p0 = np.asarray(p0, np.float64)
    dense = set(dense)
    fixed = np.array([i in dense for i in range(len(macs))])
    budget = target * macs.sum() - (macs[fixed] * p0[fixed]).sum()
    free = ~fixed

    def spent(p):
        return (macs[free] * np.minimum(p, p0[free])).sum()

    if budget <= 0:
        return np.where(fixed, p0, 0.0)
    if spent(1.0) <= budget:
        return p0.copy()
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if spent(mid) > budget:
            hi = mid
        else:
            lo = mid
    return np.where(fixed, p0, np.minimum(lo, p0))


def greedy_allocation(macs: Sequence[float], densities: np.ndarray, errors: np.ndarray, target: float) -> np.ndarray:
    """TEAL's greedy allocator over discrete sparsity levels.

    Args:
        macs: dense MACs per layer ``(L,)``.
        densities: ``(L, K)`` density of each layer at each level (level 0: exact deltas),
            non-increasing along K.
        errors: ``(L, K)`` output error with only that layer at that level (level 0: 0).
        target: MAC density to reach.

    Returns:
        int ``(L,)``: the chosen level per layer. Starting from level 0 everywhere, the step
        with the least error increase per MAC saved is taken until the MAC-weighted density
        is ``<= target`` (or no layer can go further).
    """
    macs = np.asarray(macs, np.float64)
    dens = np.asarray(densities, np.float64)
    err = np.asarray(errors, np.float64)
    n_layers, n_levels = dens.shape
    level = np.zeros(n_layers, int)
    total = macs.sum()

    def current():
        return float((macs * dens[np.arange(n_layers), level]).sum() / total)

    while current() > target:
        best, best_cost = -1, math.inf
        for i in range(n_layers):
            k = level[i]
            # skip levels that save nothing (a flat stretch of the density curve)
            j = k + 1
            while j < n_levels and dens[i, j] >= dens[i, k]:
                j += 1
            if j >= n_levels:
                continue
            saved = macs[i] * (dens[i, k] - dens[i, j])
            cost = max(err[i, j] - err[i, k], 0.0) / saved
            if cost < best_cost:
                best, best_cost = i, cost
        if best < 0:
            break
        k = level[best] + 1
        while k < n_levels - 1 and dens[best, k] >= dens[best, level[best]]:
            k += 1
        level[best] = k
    return level


# --------------------------------------------------------------------------------------
# running the model
# --------------------------------------------------------------------------------------


def _frames_output(model: keras.Model):
    from deltanet.models import CLIP_HEAD

    try:
        return model.get_layer(CLIP_HEAD).input
    except ValueError:
        return model.output


def get_thresholds(model: keras.Model) -> dict[str, np.ndarray]:
    """Current per-channel thresholds of every threshold-mode delta layer."""
    return {
        la.name: np.asarray(keras.ops.convert_to_numpy(la.threshold), np.float32)
        for la in model.layers
        if isinstance(la, DeltaActivation) and la.mode == "threshold"
    }


def set_thresholds(model: keras.Model, thresholds: dict[str, np.ndarray]) -> None:
    """Assign thresholds (name -> per-channel array or scalar) to the model's delta layers."""
    for name, theta in thresholds.items():
        layer = model.get_layer(name)
        shape = tuple(layer.threshold.shape)
        value = np.broadcast_to(np.asarray(theta, np.float32), shape).astype(np.float32)
        if not np.all(np.isfinite(value)) or np.any(value < 0):
            raise ValueError(f"{name}: thresholds must be finite and >= 0")
        layer.threshold.assign(value)


class Runner:
    """Runs a clip model on fixed batches and measures it with ``deltanet.density``.

    One probe model (traced once) returns every delta site's output (the MAC layers'
    input) and the per-frame logits. ``measure()`` gives the MAC density exactly as
    ``deltanet.measure.measure_model`` computes it (per site: non-zero deltas over frames
    t >= 1 summed over the batches; MAC-weighted with ``density.mac_density``), the
    per-frame logits, and (once a reference is set) the output error.
    """

    def __init__(self, model: keras.Model, sites: list[DeltaSite], batches: list[np.ndarray]):
        self.model = model
        self.sites = sites
        self.batches = [np.asarray(b) for b in batches]
        if not self.batches:
            raise ValueError("no calibration clips")
        outs = [s.layer.output for s in sites] + [_frames_output(model)]
        self.probe = keras.Model(model.input, outs)
        self.logits_model = keras.Model(model.input, _frames_output(model))
        self.reference = None
        self.calls = 0

    def measure(self, with_logits: bool = True) -> dict:
        self.calls += 1
        nz = np.zeros(len(self.sites), np.int64)
        n = np.zeros(len(self.sites), np.int64)
        logits = []
        for x in self.batches:
            outs = self.probe.predict_on_batch(x.astype(np.float32))
            for i in range(len(self.sites)):
                d = density.clip_deltas(np.asarray(outs[i]))
                nz[i] += np.count_nonzero(d)
                n[i] += d.size
            logits.append(np.asarray(outs[-1], np.float32))
        per_site = nz / np.maximum(n, 1)
        layers = [{"macs": s.macs, "temporal_density": float(p)} for s, p in zip(self.sites, per_site)]
        result = {"mac_density": density.mac_density_of_layers(layers), "densities": per_site}
        if with_logits:
            result["logits"] = np.concatenate(logits)
            if self.reference is not None:
                result.update(output_agreement(result["logits"], self.reference))
        return result

    def logits(self) -> np.ndarray:
        self.calls += 1
        return np.concatenate([np.asarray(self.logits_model.predict_on_batch(x.astype(np.float32)), np.float32) for x in self.batches])

    def error(self) -> float:
        """Mean squared error of the per-frame logits against the reference."""
        return float(np.mean((self.logits() - self.reference) ** 2))

    def capture(self, names: Sequence[str], batches: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The inputs of the named delta layers (batch, time, ..., C) on ``batches`` (default: all)."""
        layers = [self.model.get_layer(n) for n in names]
        probe = keras.Model(self.model.input, [la.input for la in layers])
        got = {n: [] for n in names}
        for x in self.batches if batches is None else batches:
            outs = probe.predict_on_batch(x.astype(np.float32))
            if len(names) == 1:
                outs = [outs]
            for n_, o in zip(names, outs):
                got[n_].append(np.asarray(o, np.float32))
        return {n_: np.concatenate(v) for n_, v in got.items()}


def output_agreement(logits: np.ndarray, reference: np.ndarray) -> dict:
    """Per-frame logits ``(clips, time, classes)`` against a reference: ``mse``, per-frame
    ``top1_agreement`` and per-clip ``clip_agreement`` (argmax of the mean over time)."""
    logits = np.asarray(logits, np.float64)
    reference = np.asarray(reference, np.float64)
    if logits.shape != reference.shape:
        raise ValueError(f"logits {logits.shape} and reference {reference.shape} differ in shape")
    return {
        "mse": float(np.mean((logits - reference) ** 2)),
        "top1_agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        "clip_agreement": float(np.mean(logits.mean(1).argmax(-1) == reference.mean(1).argmax(-1))),
    }


def solve_scale(
    evaluate: Callable[[float], float], target: float, *, start: float = 1.0, tol: float = 0.002, max_evals: int = 30
) -> tuple[float, float]:
    """Find ``a > 0`` with ``|evaluate(a) - target| <= tol`` for a density non-increasing in ``a``.

    Brackets by factors of 4 from ``start``, then bisects in log space. Returns
    ``(a, density)``: the best found (within ``tol`` if reachable, else the closest).
    """
    seen: list[tuple[float, float]] = []

    def f(a):
        d = float(evaluate(a))
        seen.append((a, d))
        return d

    def best():
        return min(seen, key=lambda s: (abs(s[1] - target), -s[0]))

    a = float(start)
    d = f(a)
    lo = hi = None  # lo: density above target (too dense); hi: density below target
    if abs(d - target) <= tol:
        return a, d
    if d > target:
        lo = a
        while len(seen) < max_evals:
            a *= 4.0
            d = f(a)
            if abs(d - target) <= tol:
                return a, d
            if d < target:
                hi = a
                break
            lo = a
    else:
        hi = a
        while len(seen) < max_evals:
            a /= 4.0
            d = f(a)
            if abs(d - target) <= tol:
                return a, d
            if d > target:
                lo = a
                break
            hi = a
    while lo is not None and hi is not None and len(seen) < max_evals:
        a = math.sqrt(lo * hi)
        d = f(a)
        if abs(d - target) <= tol:
            return a, d
        if d > target:
            lo = a
        else:
            hi = a
    return best()


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
            run on the first batches holding this many clips; densities, the trim and the
            final measurement use all of ``batches`` (the density needs many clips to
            generalise, the error ranking far fewer).
        log: optional progress callback (one line per step).

    Returns:
        A :class:`CalibrationResult`; the thresholds are also assigned to ``model``.

    Raises:
        ValueError: unknown method, a target outside ``(0, 1)``, a target above the
            density of exact deltas, or an unsuitable model.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
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
        sweep_batches.append(b)
        n_sweep += b.shape[0]
    if len(sweep_batches) == len(runner.batches):
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
    base = norms_base if method in ("wina", "chess") else ones
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
        if method in ("chess", "wina"):
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
