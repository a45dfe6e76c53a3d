"""Calibration, part 1: a delta model's delta sites and the weights behind them (the per-channel
importance that CHESS and WINA thresholds are made of). See ``deltanet.calibrate``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np

from deltanet.delta_activation import DeltaActivation
from deltanet.frame_wise import FrameWise
from deltanet.graph import MAC_LAYERS, graph_nodes, layer_macs
from deltanet.upstream import producer_of

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
