"""Pretrained Keras models as users bring them: legacy ``.h5`` files, nested models, input scaling.

A downloaded classifier rarely looks like a model built here: it is a legacy HDF5 file, or a
pretrained base called inside a wrapper (a nested functional model), it expects inputs
scaled to ``[-1, 1]`` or ``[0, 1]`` rather than 0..255, and it often ends in a softmax.
This module does the surgery once, for ``deltafy``, the streaming converter,
``training.fit --arch PATH`` and ``training.distill``:

* :func:`load_frame_model`: ``.keras`` or legacy ``.h5``/``.hdf5``; a deltanet clip model gives
  its per-frame network and its ``info`` (class names...);
* :func:`flatten`: inline every nested functional or Sequential model (weights shared), so
  each layer is a node of one graph;
* :func:`with_rescaling`: a ``Rescaling(scale, offset)`` in front (``--rescale SCALE,OFFSET``,
  parsed by ``deltanet.cli.rescale_arg``):
  the model then takes raw 0..255 pixels, and the streaming converter folds the scaling into
  its input step;
* :func:`strip_softmax`: a final softmax removed, so the model returns logits (what the
  clip head averages and what distillation compares).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

# the graph surgery lives in deltanet.model_surgery (deltafy imports it); re-exported here
from deltanet.model_surgery import flatten, is_nested, split_separable, strip_softmax, with_rescaling  # noqa: F401

#: file suffixes read by Keras' legacy HDF5 loader
H5_SUFFIXES = (".h5", ".hdf5")


def load_frame_model(path: str | os.PathLike) -> tuple[keras.Model, dict]:
    """Load a pretrained per-frame model: ``(flattened frame model, info)``.

    ``.keras`` files load in Keras' safe mode with deltanet's layers registered; ``.h5`` and
    ``.hdf5`` through Keras' legacy HDF5 loader (``compile=False``: the training configuration
    of an old file is not needed and often not loadable). A deltanet clip model (input
    ``(batch, time, H, W, C)``) gives its per-frame network (``deltanet.per_frame_model``)
    and its ``info``; any other model gives ``info = {}``.

    Raises:
        ValueError: an unknown suffix, or a file Keras cannot read (the message names it).
    """
    from deltanet.models import model_info, per_frame_model
    from deltanet.saving import load_model

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".keras",) + H5_SUFFIXES:
        raise ValueError(f"{path}: expected a .keras or legacy .h5/.hdf5 model file")
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    try:
        model = load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        raise ValueError(f"cannot load {path}: {' '.join(str(e).split()) or type(e).__name__}") from e
    model = flatten(model)
    if len(model.inputs[0].shape) == 5:
        return flatten(per_frame_model(model)), model_info(model)
    return model, {}


def prepare_frame_model(
    model: keras.Model, *, rescale: tuple[float, float] | None = None, logits: bool = True
) -> keras.Model:
    """A pretrained per-frame model made ready for ``deltafy``: flattened, ``SeparableConv2D``
    split (:func:`split_separable`), ``rescale`` in front (if given), final softmax removed
    (``logits=True``)."""
    model = split_separable(model)
    if rescale is not None:
        model = with_rescaling(model, *rescale)
    if logits:
        model, _ = strip_softmax(model)
    return model


def pretrained_clip_model(
    path: str | os.PathLike,
    *,
    rescale: tuple[float, float] | None = None,
    class_names: list[str] | None = None,
    info: dict | None = None,
) -> keras.Model:
    """A pretrained per-frame classifier file as a deltanet clip model that every CLI runs.

    The frame model is loaded (:func:`load_frame_model`), made ready (:func:`prepare_frame_model`:
    flattened, ``rescale`` in front, final softmax removed) and wrapped as a dense clip
    classifier (``clip_classifier(baseline=True)``: the streaming engine runs it with exact
    deltas) whose ``info`` carries ``class_names`` and ``info``.
    """
    from deltanet.models import clip_classifier

    frame_model, saved_info = load_frame_model(path)
    frame_model = prepare_frame_model(frame_model, rescale=rescale)
    classes = int(frame_model.output.shape[-1])
    names = list(class_names or saved_info.get("class_names") or [f"class_{i}" for i in range(classes)])
    if len(names) != classes:
        raise ValueError(f"{len(names)} class names for a model with {classes} outputs")
    meta = {**saved_info, **(info or {}), "class_names": names, "source_model": os.fspath(path)}
    if rescale is not None:
        meta["rescale"] = list(rescale)
    return clip_classifier(frame_model, baseline=True, info=meta)


#: ``training.fit --arch keras.applications.NAME``: the prefix of a Keras Applications backbone
APPLICATIONS_PREFIX = "keras.applications."

#: ImageNet preprocessing of each Keras Applications family, as a ``Rescaling`` of 0..255 pixels
#: (``None``: the model rescales inside, ``include_preprocessing``). Families whose preprocessing
#: is not a per-pixel affine map ("caffe": BGR order minus the ImageNet mean, e.g. ResNet50 and VGG;
#: "torch": mean/std per channel, e.g. DenseNet) are absent: their ImageNet weights would be fed
#: wrongly scaled pixels, so ``weights="imagenet"`` is refused for them (``weights=None`` works).
IMAGENET_RESCALE: dict[str, tuple[float, float] | None] = {
    **{n: (1 / 127.5, -1.0) for n in ("MobileNet", "MobileNetV2", "ResNet50V2", "ResNet101V2", "ResNet152V2",
                                       "InceptionV3", "Xception")},
    **{n: None for n in ("MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetB1", "EfficientNetB2",
                         "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2S")},
}


def is_application(arch: str) -> bool:
    return arch.startswith(APPLICATIONS_PREFIX)


def check_application(arch: str, weights: str | None) -> tuple[str, object]:
    """``(name, constructor)`` of a ``keras.applications.NAME`` arch; ``ValueError`` naming the problem."""
    name = arch[len(APPLICATIONS_PREFIX):] if is_application(arch) else arch
    build = getattr(keras.applications, name, None)
    if not name or name[0].islower() or not callable(build):
        raise ValueError(f"{arch}: not a keras.applications model (e.g. keras.applications.ResNet50, keras.applications.MobileNetV2)")
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")
    if weights == "imagenet" and name not in IMAGENET_RESCALE:
        raise ValueError(f"{arch} with ImageNet weights expects preprocessing that is not a Rescaling (caffe/torch mode); "
                         f"use random init, or one of {', '.join(sorted(IMAGENET_RESCALE))}")
    return name, build


def application_frame_model(arch: str, num_classes: int, size: int, *, weights: str | None = None) -> keras.Model:
    """A Keras Applications backbone (``arch`` = ``"keras.applications.ResNet50"``...) as a per-frame
    classifier of 0..255 RGB frames: rescaling in front, the backbone without its ImageNet top,
    global average pooling, a ``Dense(num_classes)`` logits head; flattened for ``deltafy``.

    ``weights=None`` initializes randomly (train from scratch); ``"imagenet"`` downloads Keras'
    pretrained weights (network access needed once; Keras caches them in ``~/.keras/models``).
    Without ImageNet weights the input is scaled to ``[-1, 1]``; with them, as the family expects
    (:data:`IMAGENET_RESCALE`).
    """
    name, build = check_application(arch, weights)
    rescale = IMAGENET_RESCALE.get(name, (1 / 127.5, -1.0)) if weights == "imagenet" else (1 / 127.5, -1.0)
    kwargs = dict(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")
    if name in IMAGENET_RESCALE and IMAGENET_RESCALE[name] is None:
        kwargs["include_preprocessing"] = weights == "imagenet"  # random weights: our own [-1, 1] scaling instead
        if weights == "imagenet":
            rescale = None
    base = build(**kwargs)
    inp = keras.Input((size, size, 3), name="frames")
    x = keras.layers.Rescaling(rescale[0], rescale[1], name="rescale")(inp) if rescale is not None else inp
    logits = keras.layers.Dense(num_classes, name="logits")(base(x))
    return prepare_frame_model(keras.Model(inp, logits, name=name.lower()))
