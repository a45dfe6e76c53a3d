"""The one seam to Keras and TensorFlow internals: every private upstream name deltanet uses.

Keras 3 has no public API for some things deltanet needs (a functional model's node graph,
the layer that produced a tensor, the trainer's symbolic build, a layer's ``add_loss``
list, TensorFlow's per-replica specs, whether TensorFlow is tracing for XLA). They are all reached through the functions below,
and nowhere else (``tests/test_upstream.py`` checks the sources for private names).

At import this module checks that each internal exists and behaves as relied on, with the
installed versions, and raises :class:`UpstreamError` naming the versions and what broke
otherwise: when Keras moves, this file breaks loudly instead of six files silently.
TensorFlow's internals are checked only when Keras runs on the TensorFlow backend (they are
used only there). The numba side needs no private names (``ops.config``).

Tested with: keras 3.15, tensorflow 2.21 (``pyproject.toml`` pins these ranges).
"""

from __future__ import annotations

import inspect

import keras

TESTED = {"keras": "3.15", "tensorflow": "2.21"}


class UpstreamError(ImportError):
    """An upstream internal deltanet relies on is missing or behaves differently."""


def _versions() -> str:
    out = f"keras {keras.__version__} (backend {keras.backend.backend()})"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        out += f", tensorflow {tf.__version__}"
    return out


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise UpstreamError(
            f"deltanet relies on {what}, which {_versions()} does not provide as expected "
            f"(tested with keras {TESTED['keras']}, tensorflow {TESTED['tensorflow']}); see deltanet/upstream.py"
        )


# --------------------------------------------------------------------------------------
# Keras functional graphs
# --------------------------------------------------------------------------------------


def is_graph_model(model) -> bool:
    """Whether ``model`` has a readable node graph (functional, not subclassed)."""
    return hasattr(model, "_nodes_by_depth")


def graph_nodes(model) -> list:
    """The model's non-input nodes in execution (topological) order (``Functional._nodes_by_depth``)."""
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return nodes


def producer_of(tensor):
    """The layer (operation) whose output ``tensor`` is (``KerasTensor._keras_history``)."""
    return tensor._keras_history.operation


def producing_node_inputs(tensor) -> tuple:
    """``(layer, input tensors)`` of the node that produced ``tensor`` in *its* graph (a shared
    layer has several nodes; ``KerasTensor._keras_history`` names which one)."""
    history = tensor._keras_history
    layer = history.operation
    return layer, list(layer._inbound_nodes[history.node_index].input_tensors)


def shallow_copy(layer, **replace):
    """A second layer object over the same state (the very same weight variables), with some
    attributes replaced. Keras' tracking ``__setattr__`` is bypassed on purpose: it would
    track (and ``copy.copy`` would duplicate) the variables."""
    new = object.__new__(type(layer))
    new.__dict__.update(layer.__dict__)
    new.__dict__.update(replace)
    return new


# --------------------------------------------------------------------------------------
# training internals (training.distribute)
# --------------------------------------------------------------------------------------


def layer_losses(layer):
    """The list a layer's ``add_loss`` losses go to (``Layer._losses``)."""
    return layer._losses


def set_layer_losses(layer, losses) -> None:
    """Replace that list (bypassing the tracking ``__setattr__``)."""
    object.__setattr__(layer, "_losses", losses)


def replace_symbolic_build(model, build) -> None:
    """Make ``fit``/``evaluate`` call ``build(model, data_batch)`` where Keras' trainer would
    build the metrics and optimizer from a batch it reads (``Trainer._maybe_symbolic_build``);
    ``build`` gets the batch, or the iterator's dataset when no batch was given
    (``EpochIterator.data_adapter.get_tf_dataset()``), and finishes with :func:`symbolic_build`."""

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            return build(model, None, iterator.data_adapter.get_tf_dataset())
        return build(model, data_batch, None)

    model._maybe_symbolic_build = maybe_symbolic_build


def symbolic_build(model, data_batch) -> None:
    """Keras' own symbolic build from a (symbolic) batch (``Trainer._symbolic_build``)."""
    model._symbolic_build(data_batch=data_batch)


def per_replica_specs(spec) -> tuple | None:
    """The per-replica component specs of a TensorFlow ``PerReplicaSpec`` (else None)."""
    return getattr(spec, "_value_specs", None)


def in_xla_compilation() -> bool:
    """Whether TensorFlow is tracing code for XLA (``tf.function(jit_compile=True)``, Keras'
    ``jit_compile``): ``tf.function`` enters an XLA control-flow context while it traces."""
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


# --------------------------------------------------------------------------------------
# the import-time check
# --------------------------------------------------------------------------------------


def _check() -> None:
    inp = keras.Input((2,), name="x")
    dense = keras.layers.Dense(1, name="upstream_check_dense")
    out = dense(inp)
    model = keras.Model({"x": inp}, {"y": out})
    _require(is_graph_model(model) and isinstance(model._nodes_by_depth, dict), "Functional._nodes_by_depth (a dict depth -> nodes)")
    nodes = graph_nodes(model)
    _require(
        len(nodes) == 1 and nodes[0].operation is dense and list(nodes[0].input_tensors) == [inp] and list(nodes[0].outputs) == [out],
        "the nodes of Functional._nodes_by_depth (operation, is_input, input_tensors, outputs)",
    )
    _require(hasattr(out, "_keras_history") and producer_of(out) is dense, "KerasTensor._keras_history.operation")
    copy = shallow_copy(dense, activation=keras.activations.relu)
    _require(copy.kernel is dense.kernel and copy.activation is keras.activations.relu and dense.activation is not copy.activation,
             "a layer's state living in its __dict__ (a shallow copy shares the weight variables)")  # fmt: skip
    _require(isinstance(getattr(dense, "_losses", None), list), "Layer._losses (the add_loss list)")
    # every backend's trainer has _symbolic_build; _maybe_symbolic_build is the TensorFlow trainer's
    # (training.distribute replaces it; the JAX backend never reaches that code)
    names = ("_maybe_symbolic_build", "_symbolic_build") if keras.backend.backend() == "tensorflow" else ("_symbolic_build",)
    for name in names:
        method = getattr(keras.Model, name, None)
        _require(callable(method) and "data_batch" in inspect.signature(method).parameters, f"Trainer.{name}(..., data_batch=...)")
    if keras.backend.backend() == "tensorflow":
        _check_tensorflow()


def _check_tensorflow() -> None:
    import numpy as np
    import tensorflow as tf
    from keras.src.trainers.epoch_iterator import EpochIterator  # the base of Keras' TFEpochIterator
    from tensorflow.python.distribute.values import PerReplicaSpec

    specs = per_replica_specs(PerReplicaSpec(tf.TensorSpec([1]), tf.TensorSpec([2])))
    _require(specs is not None and [s.shape for s in specs] == [(1,), (2,)], "tf PerReplicaSpec._value_specs")
    adapter = getattr(EpochIterator(x=np.zeros((2, 1), "float32"), batch_size=1), "data_adapter", None)
    _require(callable(getattr(adapter, "get_tf_dataset", None)), "EpochIterator.data_adapter.get_tf_dataset()")
    seen = {}
    for jit in (True, False):
        tf.function(lambda jit=jit: seen.setdefault(jit, in_xla_compilation()) or tf.constant(0), jit_compile=jit).get_concrete_function()
    _require(seen == {True: True, False: False} and not in_xla_compilation(), "control_flow_util.GraphOrParentsInXlaContext under jit_compile")


_check()
