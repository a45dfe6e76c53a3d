"""Delta-friendly frame CNNs and the clip classifiers built from them."""

from __future__ import annotations

import keras

from deltanet.deltafy import deltafy
from deltanet.temporal_mean import TemporalMean

# MobileNetV2's inverted-residual settings: (expansion t, channels c, repeats n, stride s).
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# A shallower variant for small data and fast CPU training (same block type, fewer blocks).
MOBILENET_V2_LITE_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))
# Unit tests only: two blocks, a few milliseconds per step.
TINY_BLOCKS = ((1, 8, 1, 1), (4, 16, 1, 2))

# ResNet-18's basic-block stages: (channels, blocks, stride of the first block).
RESNET18_STAGES = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))

#: built-in architectures: the frame-model builder and its settings (``build_model(arch=...)``)
ARCHS = {
    "mobilenet_v2": dict(blocks=MOBILENET_V2_BLOCKS, head=1280),
    "mobilenet_v2_lite": dict(blocks=MOBILENET_V2_LITE_BLOCKS, head=256),
    "tiny": dict(blocks=TINY_BLOCKS, head=32),
    "resnet18": dict(builder="resnet", stages=RESNET18_STAGES),
}

CLIP_HEAD = "clip_mean"


def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _frame_input(num_classes: int, size: int, min_size: int):
    """The built-in frame models' checked input: ``(inputs, x)``, 0..255 RGB rescaled to [-1, 1]."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, received {num_classes}")
    if size < min_size:
        raise ValueError(f"size must be >= {min_size}, received {size}")
    inputs = keras.Input((size, size, 3), name="frame")
    return inputs, keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)


def mobilenet_v2_frame_model(
    num_classes: int,
    *,
    size: int = 112,
    width: float = 0.35,
    blocks=MOBILENET_V2_BLOCKS,
    head: int = 1280,
    dropout: float = 0.2,
    name: str = "mobilenet_v2",
) -> keras.Model:
    """A MobileNetV2-style per-frame classifier with plain ReLU activations.

    ReLU rather than ReLU6/swish: a negative pre-activation that stays negative gives an exact
    zero delta. The input is an RGB frame with values 0..255 (uint8 cast to float); a
    ``Rescaling`` layer maps it to [-1, 1], so the model carries its own normalization.
    The output is per-frame logits (no softmax).

    Args:
        num_classes: number of classes.
        size: input height and width. Defaults to 112.
        width: width multiplier (alpha). Defaults to 0.35.
        blocks: inverted-residual settings ``(t, c, n, s)``. Defaults to MobileNetV2's.
        head: channels of the last 1x1 convolution (not scaled below 1.0, as in MobileNetV2).
        dropout: dropout before the classifier. Defaults to 0.2.
        name: model name.
    """
    inputs, x = _frame_input(num_classes, size, min_size=16)
    bn = dict(momentum=0.9, epsilon=1e-3)
    channels = _divisible(32 * width)
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = keras.layers.BatchNormalization(name="stem_bn", **bn)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    block = 0
    for t, c, n, s in blocks:
        out_channels = _divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            prefix = f"block{block}"
            shortcut = x
            in_channels = x.shape[-1]
            if t != 1:
                x = keras.layers.Conv2D(in_channels * t, 1, use_bias=False, name=f"{prefix}_expand")(x)
                x = keras.layers.BatchNormalization(name=f"{prefix}_expand_bn", **bn)(x)
                x = keras.layers.ReLU(name=f"{prefix}_expand_relu")(x)
            x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dw")(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}_dw_bn", **bn)(x)
            x = keras.layers.ReLU(name=f"{prefix}_dw_relu")(x)
            x = keras.layers.Conv2D(out_channels, 1, use_bias=False, name=f"{prefix}_project")(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}_project_bn", **bn)(x)
            if stride == 1 and in_channels == out_channels:
                x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
            block += 1
    head_channels = _divisible(head * width) if width > 1.0 else head
    x = keras.layers.Conv2D(head_channels, 1, use_bias=False, name="head_conv")(x)
    x = keras.layers.BatchNormalization(name="head_bn", **bn)(x)
    x = keras.layers.ReLU(name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet_frame_model(
    num_classes: int,
    *,
    size: int = 224,
    width: float = 1.0,
    stages=RESNET18_STAGES,
    name: str = "resnet18",
) -> keras.Model:
    """A ResNet-style per-frame classifier (He et al. 2016, basic blocks; ResNet-18 by default).

    7x7/2 stem, 3x3/2 max pooling, stages of two-convolution residual blocks (a strided 1x1
    projection where the shape changes), global average pooling, logits. As in
    :func:`mobilenet_v2_frame_model`: plain ReLU, the input 0..255 RGB rescaled to [-1, 1] inside,
    logits out. ``width`` scales every stage's channels.
    """
    inputs, x = _frame_input(num_classes, size, min_size=32)
    bn = dict(momentum=0.9, epsilon=1e-5)
    x = keras.layers.Conv2D(_divisible(64 * width), 7, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = keras.layers.BatchNormalization(name="stem_bn", **bn)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (c, n, s) in enumerate(stages):
        channels = _divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            prefix = f"stage{stage}_block{i}"
            shortcut = x
            y = keras.layers.Conv2D(channels, 3, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv1")(x)
            y = keras.layers.BatchNormalization(name=f"{prefix}_bn1", **bn)(y)
            y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
            y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{prefix}_conv2")(y)
            y = keras.layers.BatchNormalization(name=f"{prefix}_bn2", **bn)(y)
            if stride != 1 or x.shape[-1] != channels:
                shortcut = keras.layers.Conv2D(channels, 1, strides=stride, use_bias=False, name=f"{prefix}_proj")(x)
                shortcut = keras.layers.BatchNormalization(name=f"{prefix}_proj_bn", **bn)(shortcut)
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{prefix}_relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def clip_classifier(
    frame_model: keras.Model,
    *,
    baseline: bool = False,
    info: dict | None = None,
    **delta_options,
) -> keras.Model:
    """Wrap a per-frame classifier into a clip classifier: clip logits = mean of per-frame logits.

    ``baseline=True`` builds the identical clip model without delta layers. Per-frame logits
    stay available through ``frame_logits_model``; ``info`` travels with the saved model.
    ``delta_options`` go to ``deltafy`` (``mode``, ``threshold``, ``step``, ``penalty_weight``...).
    """
    per_frame = deltafy(frame_model, insert_deltas=not baseline, **delta_options)
    info = dict(info or {})
    info.setdefault("baseline", bool(baseline))
    outputs = TemporalMean(info=info, name=CLIP_HEAD)(per_frame.output)
    return keras.Model(per_frame.input, outputs, name=frame_model.name + ("_baseline" if baseline else "_delta"))


def build_model(
    num_classes: int,
    *,
    arch: str = "mobilenet_v2",
    size: int = 112,
    width: float = 0.35,
    baseline: bool = False,
    info: dict | None = None,
    **delta_options,
) -> keras.Model:
    """Build a clip classifier from one of ``ARCHS`` (``mobilenet_v2``, ``mobilenet_v2_lite``, ``tiny``, ``resnet18``)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    settings = dict(ARCHS[arch])
    builder = resnet_frame_model if settings.pop("builder", None) == "resnet" else mobilenet_v2_frame_model
    frame = builder(num_classes, size=size, width=width, name=arch, **settings)
    info = dict(info or {})
    info.update(arch=arch, size=size, width=width)
    return clip_classifier(frame, baseline=baseline, info=info, **delta_options)


def frame_logits_model(clip_model: keras.Model) -> keras.Model:
    """The clip model up to its per-frame outputs ``(batch, time, classes)`` (what streaming emits)."""
    head = clip_model.get_layer(CLIP_HEAD)
    return keras.Model(clip_model.input, head.input, name=clip_model.name + "_frames")


def model_info(model: keras.Model) -> dict:
    """The metadata dict a clip classifier carries (class names, frames, stride, ...); ``{}`` if none."""
    try:
        head = model.get_layer(CLIP_HEAD)
    except ValueError:
        return {}
    return dict(getattr(head, "info", {}) or {})


def per_frame_model(clip_model: keras.Model) -> keras.Model:
    """The per-frame network inside a clip model, without its delta layers (shared weights).

    Input ``(batch, H, W, C)`` frames, output per-frame logits. Used to start a new delta
    model from a trained one (``training.fit --init``) and for dense exports.
    """
    from deltanet.delta_activation import DeltaActivation
    from deltanet.frame_wise import FrameWise
    from deltanet.graph import graph_nodes

    try:
        frames_model = frame_logits_model(clip_model)
    except ValueError:
        frames_model = clip_model  # already per-frame outputs (a deltafy result)
    inputs = keras.Input(tuple(frames_model.input.shape[2:]), name="frame")
    tensors = {id(frames_model.input): inputs}
    for node in graph_nodes(frames_model):
        layer = node.operation
        args = [tensors[id(t)] for t in node.input_tensors]
        if isinstance(layer, FrameWise):
            out = layer.layer(args[0])
        elif isinstance(layer, DeltaActivation):
            out = args[0]
        else:
            if isinstance(layer, keras.layers.Concatenate) and layer.axis > 0:
                # deltafy moved a positive axis past the time axis; move it back
                layer = keras.layers.Concatenate(axis=layer.axis - 1, name=layer.name.removesuffix("_clip"))
            out = layer(args if len(args) > 1 else args[0])
        tensors[id(node.outputs[0])] = out
    name = frames_model.name.removesuffix("_frames") + "_per_frame"
    return keras.Model(inputs, tensors[id(frames_model.output)], name=name)
