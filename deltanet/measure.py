"""Measuring a clip model: per-MAC-layer dense MACs, temporal and spatial density, MAC density."""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np

from deltanet import density
from deltanet.delta_activation import DeltaActivation
from deltanet.frame_wise import FrameWise
from deltanet.graph import MAC_LAYERS, layer_macs
from deltanet.upstream import producer_of


def delta_layers(model: keras.Model) -> list[DeltaActivation]:
    """All ``DeltaActivation`` layers of a model, in graph order."""
    return [layer for layer in model.layers if isinstance(layer, DeltaActivation)]


def mac_layer_table(model: keras.Model) -> list[dict]:
    """One record per MAC layer of a clip model: ``name``, ``type``, ``macs`` (per frame),
    ``delta`` (the name of the ``DeltaActivation`` feeding it, or ``None``) and ``input`` (its
    input tensor)."""
    table = []
    for layer in model.layers:
        if isinstance(layer, FrameWise) and isinstance(layer.layer, MAC_LAYERS):
            inner = layer.layer
            src = layer.input
            producer = producer_of(src)
            table.append(
                {
                    "name": inner.name,
                    "type": type(inner).__name__,
                    "macs": layer_macs(inner, tuple(src.shape[2:]), tuple(layer.output.shape[2:])),
                    "delta": producer.name if isinstance(producer, DeltaActivation) else None,
                    "input": src,
                }
            )
    return table


#: our own attribute on a measured model (not Keras'): see ``_probe``
_PROBE_ATTRIBUTE = "_deltanet_measure_probe"


def _single_output(model: keras.Model) -> bool:
    return not isinstance(model.output, (list, tuple, dict))


def _probe(model: keras.Model):
    """The MAC-layer table of ``model`` and a model returning every distinct MAC-layer input.

    Kept on the model (outside Keras' attribute tracking, so it is never saved or counted as a
    layer): a second measurement of the same model (``training.fit`` measures the validation and
    then the test clips) reuses the probe and so its traced predict function, instead of
    tracing a new one (~3 s for a tiny model on this 2-core machine). The probe shares the
    model's layers and variables, so it always computes with the current weights.
    """
    cached = getattr(model, _PROBE_ATTRIBUTE, None)
    if cached is not None:
        return cached
    table = mac_layer_table(model)
    if not table:
        raise ValueError(f"model {model.name!r} has no MAC layers wrapped in FrameWise; is it a clip model?")
    unique = []
    for rec in table:
        if all(rec["input"] is not u for u in unique):
            unique.append(rec["input"])
    index = [next(i for i, u in enumerate(unique) if u is rec["input"]) for rec in table]
    # the model's own output last: the same pass gives top-1 accuracy when labels come with the clips
    outputs = [*unique, model.output] if _single_output(model) else list(unique)
    cached = (table, unique, index, keras.Model(model.input, outputs))
    object.__setattr__(model, _PROBE_ATTRIBUTE, cached)  # bypass Keras' tracking on purpose
    return cached


def measure_model(model: keras.Model, clips: Iterable, *, max_batches: int | None = None) -> dict:
    """Run ``model`` on batches of clips and measure what a delta runtime would execute.

    For every MAC layer, the input it receives is examined: ``temporal_density`` (non-zero
    deltas over frames t >= 1) and ``spatial_density`` (non-zero values). ``mac_density`` is
    the MAC-weighted temporal density when the model has delta layers, else the MAC-weighted
    spatial density (a runtime that skips zero activations), as defined in ``deltanet.density``.

    Args:
        model: a clip model (``deltafy`` / ``build_model`` output).
        clips: an iterable of clip batches ``(batch, time, H, W, C)`` or ``(clips, labels)``
            pairs (a ``tf.data.Dataset`` works).
        max_batches: stop after this many batches.

    Returns:
        ``{"mac_density", "temporal_mac_density", "spatial_mac_density", "macs_per_frame",
        "layers": [{"name", "type", "macs", "delta", "temporal_density", "spatial_density"}],
        "accuracy"}``: ``accuracy`` is the top-1 accuracy of the model's output on the same
        clips when they come as ``(clips, labels)`` pairs (one pass for both), else None.
    """
    table, unique, index, probe = _probe(model)
    nz_delta = np.zeros(len(unique), np.int64)
    n_delta = np.zeros(len(unique), np.int64)
    nz_act = np.zeros(len(unique), np.int64)
    n_act = np.zeros(len(unique), np.int64)
    correct = seen = 0
    for b, batch in enumerate(clips):
        if max_batches is not None and b >= max_batches:
            break
        labeled = isinstance(batch, (tuple, list))
        x = np.asarray(batch[0] if labeled else batch)  # tf.data hands tensors; the JAX backend needs arrays
        outs = probe.predict_on_batch(x)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        if len(outs) > len(unique):  # the model's output (see _probe)
            logits = np.asarray(outs.pop())
            labels = np.asarray(batch[1]) if labeled else None
            # top-1 as Keras' "accuracy" counts it (first maximum on ties, as np.argmax), for
            # (batch, classes) outputs with one label per clip; anything else gets no accuracy
            if labels is not None and logits.ndim == 2 and labels.shape == logits.shape[:1]:
                correct += int(np.count_nonzero(np.argmax(logits, axis=-1) == labels))
                seen += len(labels)
        for i, y in enumerate(outs):
            y = np.asarray(y)
            d = density.clip_deltas(y)
            nz_delta[i] += np.count_nonzero(d)
            n_delta[i] += d.size
            nz_act[i] += np.count_nonzero(y)
            n_act[i] += y.size
    if not n_act.any():
        raise ValueError("measure_model received no clips")
    layers = []
    for rec, i in zip(table, index):
        layers.append(
            {
                "name": rec["name"],
                "type": rec["type"],
                "macs": rec["macs"],
                "delta": rec["delta"],
                "temporal_density": float(nz_delta[i] / n_delta[i]) if n_delta[i] else float("nan"),
                "spatial_density": float(nz_act[i] / n_act[i]),
            }
        )
    temporal = density.mac_density_of_layers(layers, "temporal_density")
    spatial = density.mac_density_of_layers(layers, "spatial_density")
    has_deltas = bool(delta_layers(model))
    return {
        "mac_density": temporal if has_deltas else spatial,
        "temporal_mac_density": temporal,
        "spatial_mac_density": spatial,
        "macs_per_frame": int(sum(rec["macs"] for rec in layers)),
        "layers": layers,
        "accuracy": correct / seen if seen else None,
    }
