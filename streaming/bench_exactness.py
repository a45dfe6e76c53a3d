"""Exactness figures of ``streaming.bench``: logit errors, top-1 agreement, the float32 floor, the dense reference.

TensorFlow is imported inside the functions: the benchmark imports it quietly first.
"""

from __future__ import annotations

import numpy as np


def rel_logit_error(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per frame: max |logits - reference| / max |reference| (rows are frames)."""
    return np.abs(logits - reference).max(axis=1) / np.maximum(np.abs(reference).max(axis=1), 1e-12)


def agreement(logits: np.ndarray, reference: np.ndarray) -> dict:
    """``{top1, max_rel_logit_error}`` of ``logits`` against ``reference`` (rows are frames)."""
    return {"top1": float(np.mean(logits.argmax(1) == reference.argmax(1))), "max_rel_logit_error": float(rel_logit_error(logits, reference).max())}


def float32_floor(clip_model, clip: np.ndarray) -> tuple[np.ndarray, dict]:
    """The Keras reference logits of ``clip`` and how far Keras itself is from them.

    The reference is the clip model's graph on the whole clip (TensorFlow kernels); the floor
    is the same model in its per-frame stateful form (``deltanet.stream_model``, states carried)
    compiled by XLA (``jit_compile=True``), whose convolutions sum in another order: any float32
    implementation, the delta engine included, can differ from the reference by this much once
    a threshold decision flips. (XLA on the whole clip would compute the same, but compiling a
    graph unrolled over hundreds of frames took over 30 minutes on this machine.)
    """
    import tensorflow as tf

    import deltanet
    from deltanet.stream_model import FRAME_INPUT, LOGITS_OUTPUT, initial_states, stateful_frame_model

    frames_model = deltanet.frame_logits_model(clip_model)
    x = tf.constant(clip[None].astype(np.float32))
    reference = tf.function(lambda v: frames_model(v, training=False), jit_compile=False)(x).numpy()[0]
    stream_model = stateful_frame_model(clip_model)
    step = tf.function(lambda inputs: stream_model(inputs, training=False), jit_compile=True)
    states = {k: tf.constant(v) for k, v in initial_states(stream_model).items()}
    xla = []
    for f in clip:
        out = step({FRAME_INPUT: tf.constant(f[None], tf.float32), **states})
        xla.append(out[LOGITS_OUTPUT].numpy()[0])
        states = {k: out[k] for k in states}
    xla = np.stack(xla)
    err = rel_logit_error(xla, reference)
    return reference, {
        "how": "the Keras delta model: TensorFlow's kernels on the whole clip, against its per-frame stateful form "
               "compiled by XLA (jit_compile=True), states carried",
        "max_rel_logit_error": float(err.max()),
        "frames_over_1e-4": int(np.sum(err > 1e-4)),
        "top1_agreement": float(np.mean(xla.argmax(1) == reference.argmax(1))),
    }


def dense_reference(per_frame, frames: np.ndarray, batch: int = 16) -> np.ndarray:
    """The per-frame (dense, float32) model's logits of ``frames``, TensorFlow's kernels."""
    import tensorflow as tf

    fn = tf.function(lambda v: per_frame(v, training=False), jit_compile=False, reduce_retracing=True)
    return np.concatenate([fn(tf.constant(frames[i : i + batch], tf.float32)).numpy() for i in range(0, len(frames), batch)])
