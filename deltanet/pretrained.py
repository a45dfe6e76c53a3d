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
