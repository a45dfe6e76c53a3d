"""Keras' own per-frame outputs of a clip model, the reference the engine tests compare against."""

from __future__ import annotations

import numpy as np


def predict_clip(model, frames: np.ndarray) -> np.ndarray:
    """``model(frames[None], training=False)[0]`` for a clip model, traced with an unknown clip length.

    ``model.predict`` traces for the clip's static length, and TensorFlow then takes time that grows
    with it to build the delta layers' scan: 82 s for a 500-frame clip of the tiny model against
    under 5 s with the length unknown (measured 2026-12-01, loaded 2-core machine). Same function,
    same weights, inference mode, as ``predict`` runs it.
    """
    import tensorflow as tf

    clip = np.asarray(frames, np.float32)[None]
    spec = tf.TensorSpec((1, None, *clip.shape[2:]), tf.float32)
    call = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return np.asarray(call(tf.constant(clip)))[0]
