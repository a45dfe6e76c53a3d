"""``TemporalMean``: the clip head (mean of per-frame logits) that also carries the model's metadata."""

from __future__ import annotations

import copy

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deltanet")
class TemporalMean(keras.layers.Layer):
    """Average per-frame outputs ``(batch, time, classes)`` over time: the clip prediction.

    The per-frame outputs (its input) are what a streaming runtime emits; the mean is what a
    clip classifier is trained on. The layer also carries ``info``, a JSON-serializable
    dict that travels with the saved model (class names, frames per clip, frame stride,
    dataset...), so a ``.keras`` file is self-describing; read it with
    ``deltanet.model_info(model)``.

    Args:
        info: metadata dict (JSON types only). Defaults to ``{}``.
        **kwargs: base ``Layer`` arguments.

    Input shape:
        ``(batch, time, ...)``.

    Output shape:
        ``(batch, ...)``.
    """

    def __init__(self, info: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if info is not None and not isinstance(info, dict):
            raise ValueError(f"TemporalMean info must be a dict, received {type(info).__name__}: {info!r}")
        self.info = copy.deepcopy(info) if info else {}

    def call(self, inputs):
        return ops.mean(inputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config["info"] = copy.deepcopy(self.info)
        return config
