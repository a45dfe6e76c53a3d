"""Training on more than one device: ``python -m training.fit --distribute MODE``.

Modes (see ``docs/distributed.md`` for commands and measured throughput):

``none``
    One device (the default; nothing here changes the run).
``mirrored``
    ``tf.distribute.MirroredStrategy`` over the local GPUs (TensorFlow backend). Without
    GPUs it mirrors over the CPU, split into ``$DELTANET_LOGICAL_CPUS`` logical devices
    (tests use 2; without the variable there is one CPU replica).
``multiworker``
    ``tf.distribute.MultiWorkerMirroredStrategy`` configured from ``$TF_CONFIG`` (one
    process per worker, same command everywhere). Each worker decodes only its own shard
    of the training videos; every worker evaluates the whole validation set (so the
    validation metrics are exact, and no worker ever waits on an empty shard). Only the
    chief writes ``--out``; other workers write into a temporary folder that is removed at
    the end (the pattern of the TensorFlow multi-worker guide: every worker must still run
    the same saving code, because reading variables can involve collectives).
``data-parallel``
    ``keras.distribution.DataParallel`` over all local devices (``KERAS_BACKEND=jax``): the
    batch is split along its first axis, the weights are replicated, and XLA inserts the
    gradient all-reduce. The tf.data pipeline still feeds it (Keras converts to NumPy).

The global batch is ``--batch-size`` in every mode (each of ``R`` replicas gets
``batch_size / R`` clips), and the learning rate is used as given for that global batch:
no automatic scaling. Keep ``--batch-size`` and ``--learning-rate`` together when you change
the number of devices and the run is the same run.

What this module does so that a distributed run equals the one-device run (up to the order
of floating-point reductions; each item is an upstream behaviour seen with TF 2.21 /
Keras 3.15 / JAX 0.10-0.11, tested in ``tests/test_distribute.py``; details and issue links
in ``docs/distributed.md``):

* **Whole replica batches** (:func:`whole_replica_batches`). ``--batch-size`` must be
  divisible by the number of replicas ``R``, and every batch, the last one included, holds
  a multiple of ``R`` clips (the last ``n % R`` clips of an epoch are left out). A last
  batch smaller than ``R`` gives a replica an *empty* batch; Keras 3 +
  ``MirroredStrategy`` then turns the weights into NaN, and JAX refuses to shard it.
* **Synchronized BatchNorm** (:func:`synchronize_batchnorm`, TF strategies): statistics of
  the global batch, as on one device; otherwise each replica also keeps its own moving
  statistics (replica-local variables) and replica 0's are saved. The saved configuration
  keeps ``synchronized=False``.
* **Per-replica add_loss** (:func:`per_replica_losses`): Keras 3 keeps ``add_loss`` losses
  in one list per layer shared by the replica threads of ``MirroredStrategy``; penalties
  (DeltaActivation's) were lost from or duplicated into other replicas' losses.
* **Per-replica dropout masks** (:func:`decorrelate_dropout`): every replica drew the same
  mask.
* **Density counters** of ``DeltaActivation`` need ``aggregation="mean"`` (in the layer):
  without aggregation ``assign_add`` updates only the local replica's copy and the metrics
  were replica 0's.
* **Building from the element spec** (:func:`_spec_symbolic_build`): Keras' distributed
  ``fit`` read one batch of a fresh iterator to learn shapes (so the first epoch trained on
  the second iteration's random clips) and, under ``MultiWorkerMirroredStrategy``, failed
  reducing it (keras-team/keras#20585); :func:`_vector_step_logs` works around the second
  ``MultiWorkerMirroredStrategy`` failure of that issue (per-step logs).

What stays different: dropout masks cannot be those one device draws, and
``--penalty hoyer`` (not linear in the batch) is computed per replica sub-batch under the
TensorFlow strategies (the L1 penalty is exact; JAX computes both on the global batch).

Resuming: ``--resume`` runs with the ``--distribute`` given now (the checkpoint is an
ordinary ``.keras`` model), so a run can continue on another number of devices.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

from deltanet.cli import CliError

MODES = ("none", "mirrored", "multiworker", "data-parallel")

#: split the CPU into this many logical devices for ``mirrored`` when there is no GPU
LOGICAL_CPUS_ENV = "DELTANET_LOGICAL_CPUS"


class Distributor:
    """How this process takes part in a run: strategy scope, data, model fixes, where to write.

    Made by :func:`setup`; ``training.fit`` uses it through a handful of calls.

    Attributes
    ----------
    mode
        One of :data:`MODES`.
    strategy
        The ``tf.distribute.Strategy`` (``mirrored``/``multiworker``), else None.
    distribution
        The ``keras.distribution.Distribution`` (``data-parallel``), else None.
    replicas
        Replicas in sync, all workers together (devices the global batch is split over).
    workers, worker_index
        Processes taking part, and this one's place (multiworker; else 1 and 0).
    is_chief
        Whether this process writes ``--out``.
    """

    def __init__(
        self,
        mode: str = "none",
        *,
        strategy=None,
        distribution=None,
        replicas: int = 1,
        workers: int = 1,
        worker_index: int = 0,
        is_chief: bool = True,
        devices: list[str] | None = None,
    ):
        self.mode = mode
        self.strategy = strategy
        self.distribution = distribution
        self.replicas = int(replicas)
        self.workers = int(workers)
        self.worker_index = int(worker_index)
        self.is_chief = bool(is_chief)
        self.devices = list(devices or [])
        self._tmp: Path | None = None

    def __repr__(self) -> str:
        return f"Distributor({self.describe()})"

    def describe(self) -> str:
        """One line for logs."""
        if self.mode == "none":
            return "one device"
        where = f"{self.replicas} replica(s)"
        if self.devices:
            where += " on " + ", ".join(self.devices)
        if self.mode == "multiworker":
            role = "chief" if self.is_chief else "worker (writes to a temporary folder)"
            where += f", worker {self.worker_index} of {self.workers} ({role})"
        return f"{self.mode}: {where}"

    # --- model -------------------------------------------------------------------------------

    def scope(self):
        """Context for building/loading/compiling the model (variables are created here)."""
        if self.strategy is not None:
            return self.strategy.scope()
        return contextlib.nullcontext()

    def prepare_model(self, model) -> None:
        """Make a built (or loaded) model train under this strategy as on one device.

        Call inside :meth:`scope`, after building/loading and compiling.
        """
        if self.strategy is None:
            build_before_tracing(model)
            return
        if self.replicas > 1:
            per_replica_losses(model)
            synchronize_batchnorm(model)
            decorrelate_dropout(model)
        _spec_symbolic_build(model, self.strategy)
        if self.mode == "multiworker":
            _vector_step_logs(model)

    # --- data ----------------------------------------------------------------------------------

    def check_batch_size(self, batch_size: int) -> None:
        """``CliError`` unless the global batch splits evenly over the replicas."""
        if self.replicas > 1 and batch_size % self.replicas:
            raise CliError(
                f"--batch-size {batch_size} does not split evenly over {self.replicas} replicas "
                f"(--distribute {self.mode}); use a multiple of {self.replicas} (it is the global batch)"
            )

    def datasets(self, cfg, index, train, val, skipped):
        """The ``(train, val)`` datasets this process feeds to ``fit``/``evaluate``.

        ``train``/``val`` are what ``training.fit.load_data`` made for one device.
        """
        self.check_batch_size(cfg.batch_size)
        if self.replicas <= 1 and self.mode != "multiworker":
            return train, val
        if self.mode == "multiworker":
            return self._multiworker_train(cfg, index, skipped), self._whole_validation(val, cfg.batch_size)
        return whole_replica_batches(train, self.replicas, cfg.batch_size), whole_replica_batches(
            val, self.replicas, cfg.batch_size
        )

    def _whole_validation(self, val, batch_size: int):
        # Every worker evaluates all of it (auto-sharding OFF); the metrics, summed over the
        # workers, are then exact ratios and no worker runs out of batches before another.
        import tensorflow as tf

        val = whole_replica_batches(val, self.replicas, batch_size)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return val.with_options(options)

    def _multiworker_train(self, cfg, index, skipped):
        """Each worker decodes only its shard of the training videos.

        Every worker runs the same number of steps, ``ceil(n / batch_size)`` (what one device
        runs), each with full per-replica batches: a worker's shard is repeated as needed, so
        the epoch ends everywhere at once and no replica ever gets an empty batch.
        """
        import tensorflow as tf

        if index.kind == "tfds" or not index.train:
            raise CliError(
                "--distribute multiworker shards a list of video files; TFDS sources have none here: "
                "use --distribute mirrored (one machine) or a UCF101 / class-folder copy of the data"
            )
        steps = max(1, math.ceil(len(index.train) / cfg.batch_size))
        if len(index.train) < self.workers:
            raise CliError(f"{len(index.train)} training videos cannot be shared by {self.workers} workers")
        from training.pipeline import make_clip_dataset

        batch_size = cfg.batch_size

        def dataset_fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(batch_size)
            videos = shard(index.train, ctx.input_pipeline_id, ctx.num_input_pipelines)
            ds = make_clip_dataset(
                videos,
                frames=cfg.frames,
                stride=cfg.stride,
                size=(cfg.size, cfg.size),
                batch_size=per_replica,
                training=True,
                seed=cfg.seed + 7919 * ctx.input_pipeline_id,
                class_count=index.num_classes,
                skipped=skipped,
            )
            local = self.replicas // max(1, ctx.num_input_pipelines)
            ds = ds.unbatch().repeat().batch(per_replica, drop_remainder=True).take(steps * local)
            return ds.prefetch(tf.data.AUTOTUNE)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # --- output ----------------------------------------------------------------------------------

    def write_dir(self, out: str | os.PathLike) -> Path:
        """Where this process writes: ``out`` on the chief, a temporary folder elsewhere."""
        out = Path(out)
        if self.is_chief:
            return out
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"deltanet-worker{self.worker_index}-"))
        return self._tmp / (out.name or "out")

    def close(self) -> None:
        """Remove a non-chief worker's temporary output (idempotent)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


# --- setup -----------------------------------------------------------------------------------------


def setup(mode: str | None = "none", *, batch_size: int | None = None) -> Distributor:
    """Create the strategy or distribution for ``mode``; call before TensorFlow runs any op.

    (``MultiWorkerMirroredStrategy`` and logical CPU devices must be configured before
    the TensorFlow runtime starts; ``training.fit`` calls this right after importing it.)
    ``batch_size`` (the global batch), when given, is checked against the replica count.

    Raises ``CliError`` (one line, exit code 2 from the CLI) for a mode that cannot run here.
    """
    dist = _setup(mode)
    if batch_size is not None:
        dist.check_batch_size(batch_size)
    return dist


def _setup(mode: str | None) -> Distributor:
    mode = mode or "none"
    if mode not in MODES:
        raise CliError(f"--distribute must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none":
        return Distributor("none")
    import keras

    backend = keras.backend.backend()
    if mode == "data-parallel":
        if backend != "jax":
            raise CliError(
                f"--distribute data-parallel runs on the JAX backend, this run uses KERAS_BACKEND={backend}: "
                "set KERAS_BACKEND=jax (pip install jax), or use --distribute mirrored with TensorFlow"
            )
        devices = keras.distribution.list_devices()
        distribution = keras.distribution.DataParallel(devices=devices)
        keras.distribution.set_distribution(distribution)
        return Distributor(mode, distribution=distribution, replicas=len(devices), devices=devices)
    if backend != "tensorflow":
        raise CliError(
            f"--distribute {mode} is a TensorFlow strategy, this run uses KERAS_BACKEND={backend}: "
            "use --distribute data-parallel with JAX, or KERAS_BACKEND=tensorflow"
        )
    import tensorflow as tf

    if mode == "mirrored":
        devices = _mirrored_devices(tf)
        strategy = tf.distribute.MirroredStrategy(devices)
        if strategy.num_replicas_in_sync < 2:
            warnings.warn(
                f"--distribute mirrored found one device ({devices[0]}): nothing to mirror over "
                f"(set {LOGICAL_CPUS_ENV}=2 to split the CPU for a test)",
                stacklevel=2,
            )
        return Distributor(mode, strategy=strategy, replicas=strategy.num_replicas_in_sync, devices=devices)
    return _multiworker(tf)


def _mirrored_devices(tf) -> list[str]:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return [f"/gpu:{i}" for i in range(len(gpus))]
    wanted = os.environ.get(LOGICAL_CPUS_ENV, "").strip()
    n = 1
    if wanted:
        try:
            n = int(wanted)
        except ValueError:
            raise CliError(f"{LOGICAL_CPUS_ENV} must be a positive integer, got {wanted!r}") from None
        if n < 1:
            raise CliError(f"{LOGICAL_CPUS_ENV} must be a positive integer, got {wanted!r}")
    if n > 1:
        split_cpu(n)
    return [f"/cpu:{i}" for i in range(n)]


def split_cpu(n: int) -> None:
    """Split the (first) CPU into ``n`` logical devices; before TensorFlow runs any op."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as e:
        raise CliError(
            f"cannot split the CPU into {n} logical devices: TensorFlow already started its runtime ({e})"
        ) from e


def read_tf_config(environ=None) -> dict:
    """``$TF_CONFIG`` parsed and checked: ``{"cluster": {...}, "task": {"type", "index"}}``."""
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        raise CliError(
            "--distribute multiworker needs TF_CONFIG, e.g. "
            '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\' '
            "(one process per worker, same command everywhere)"
        )
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, task_index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise CliError(f"TF_CONFIG is not valid JSON with 'cluster' and 'task' {{type, index}}: {e}") from None
    if task_type not in ("chief", "worker"):
        raise CliError(f"TF_CONFIG task type {task_type!r} is not supported (only 'chief' and 'worker')")
    members = cluster.get(task_type) if isinstance(cluster, dict) else None
    if not isinstance(members, list) or not 0 <= task_index < len(members):
        raise CliError(f"TF_CONFIG task {task_type}:{task_index} is not in the cluster {cluster!r}")
    return config


def is_chief_task(config: dict) -> bool:
    """The chief: task type ``chief``, or worker 0 when the cluster has no chief."""
    task_type, task_index = config["task"]["type"], int(config["task"]["index"])
    return task_type == "chief" or (task_type == "worker" and task_index == 0 and "chief" not in config["cluster"])


def _multiworker(tf) -> Distributor:
    config = read_tf_config()
    cluster = config["cluster"]
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
        raise CliError(f"cannot start MultiWorkerMirroredStrategy from TF_CONFIG: {e}") from e
    task_type, task_index = config["task"]["type"], int(config["task"]["index"])
    order = (["chief"] if "chief" in cluster else []) + ["worker"]
    index = sum(len(cluster.get(t, [])) for t in order[: order.index(task_type)]) + task_index
    return Distributor(
        "multiworker",
        strategy=strategy,
        replicas=strategy.num_replicas_in_sync,
        workers=workers,
        worker_index=index,
        is_chief=is_chief_task(config),
    )


# --- pieces ------------------------------------------------------------------------------------------


def whole_replica_batches(ds, replicas: int, batch_size: int):
    """Re-batch ``ds`` (batches of ``batch_size``) so every batch holds a multiple of ``replicas``.

    Drops the last ``n % replicas`` clips (fewer than ``replicas``) and nothing else; the
    order is unchanged. ``batch_size`` must itself be a multiple of ``replicas``.
    """
    import tensorflow as tf

    if replicas <= 1:
        return ds
    if batch_size % replicas:
        raise ValueError(f"batch_size {batch_size} is not a multiple of {replicas} replicas")
    ds = ds.unbatch().batch(replicas, drop_remainder=True).unbatch().batch(int(batch_size))
    return ds.prefetch(tf.data.AUTOTUNE)


def _all_layers(model):
    seen, out, stack = set(), [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        inner = getattr(layer, "layer", None)  # wrappers (FrameWise, TimeDistributed)
        if inner is not None:
            stack.append(inner)
        stack.extend(getattr(layer, "layers", []) or [])
    return out


def synchronize_batchnorm(model) -> int:
    """Compute BatchNormalization statistics over all replicas (TensorFlow backend).

    Sets ``synchronized = True`` on every ``BatchNormalization`` layer of ``model`` (inside
    wrappers and nested models too) while keeping its saved configuration unchanged
    (``synchronized`` is a property of how a run is distributed, not of the model; a config
    with ``True`` cannot be loaded under JAX). Returns the number of layers changed.
    """
    import keras

    changed = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            original = layer.get_config

            def get_config(original=original):
                config = original()
                config["synchronized"] = False
                return config

            layer.get_config = get_config
            changed += 1
    return changed


class _PerThreadList:
    """A list whose contents belong to the calling thread (see :func:`per_replica_losses`)."""

    def __init__(self):
        self._local = threading.local()

    def _items(self) -> list:
        items = getattr(self._local, "items", None)
        if items is None:
            items = self._local.items = []
        return items

    def append(self, value):
        self._items().append(value)

    def extend(self, values):
        self._items().extend(values)

    def clear(self):
        self._items().clear()

    def __getitem__(self, index):
        return self._items()[index]

    def __iter__(self):
        return iter(self._items())

    def __len__(self):
        return len(self._items())

    def __repr__(self):
        return f"_PerThreadList({self._items()!r})"


def per_replica_losses(model) -> int:
    """Keep each replica's ``add_loss`` losses to itself (TensorFlow ``MirroredStrategy``).

    ``MirroredStrategy`` traces every replica's step in its own thread, the threads taking
    turns at each cross-replica sync point, but Keras 3 keeps ``add_loss`` losses in one
    plain list per layer (``Layer._losses``) that all the threads share (the Keras 3 form of
    tensorflow/tensorflow#23056). A replica entering the model clears the list, so the
    penalties another replica added before its first sync point (a synchronized
    BatchNorm, an aggregated counter) are lost from that replica's loss - their gradients
    are missing - and the penalties added after it appear in every replica's reported
    loss. DeltaActivation's sparsity penalty is such a loss. Here each layer's list
    becomes per thread, i.e. per replica. Returns the number of layers changed.
    """
    from deltanet import upstream

    changed = 0
    for layer in [model, *_all_layers(model)]:
        if not isinstance(upstream.layer_losses(layer), _PerThreadList):
            upstream.set_layer_losses(layer, _PerThreadList())
            changed += 1
    return changed


def decorrelate_dropout(model) -> int:
    """Give every replica its own dropout masks (TensorFlow strategies).

    Keras 3 draws random masks from a ``SeedGenerator`` whose state is a mirrored variable,
    so under a ``tf.distribute`` strategy every replica draws the *same* mask for its
    sub-batch (measured with TF 2.21 / Keras 3.15): correlated noise, weaker regularization
    than on one device. The replica id is added to the seed (replica 0 keeps the seed
    unchanged; one device is unaffected). Returns the number of seed generators changed.
    """
    import keras
    import tensorflow as tf

    changed = 0
    for layer in _all_layers(model):
        generator = getattr(layer, "seed_generator", None)
        if not isinstance(generator, keras.random.SeedGenerator) or getattr(generator, "_per_replica", False):
            continue
        original = generator.next

        def next_seed(ordered=True, original=original):
            seed = original(ordered)
            replica = tf.distribute.get_replica_context()
            if replica is None:
                return seed
            rid = tf.cast(replica.replica_id_in_sync_group, seed.dtype)
            return seed + tf.stack([rid * 1000003, tf.zeros((), seed.dtype)])

        generator.next = next_seed
        generator._per_replica = True
        changed += 1
    return changed


def _vector_step_logs(model) -> None:
    """Work around Keras 3's per-step log reduction under MultiWorkerMirroredStrategy.

    After each step Keras 3 reduces the step's logs (scalar metric values) with
    ``strategy.reduce("MEAN", value, axis=0)`` when the strategy runs on several workers,
    which fails on a scalar ("Invalid reduction dimension 0 for input with 0 dimensions";
    ``model.fit`` cannot run at all, keras-team/keras#20585; ``distribute_reduction_method``
    does not reach that call). Each value is returned with shape ``(1,)``: the reduction
    then averages it over the replicas and hands back a scalar, as it does for
    ``MirroredStrategy``. (The epoch logs - History, history.csv - are read from the metric
    variables, summed over all replicas of all workers.)
    """
    from keras import ops

    original = model.compute_metrics

    def compute_metrics(*args, **kwargs):
        logs = original(*args, **kwargs)
        if not isinstance(logs, dict):
            return logs
        return {k: ops.reshape(v, (1,)) if getattr(v, "shape", None) == () else v for k, v in logs.items()}

    model.compute_metrics = compute_metrics


def build_before_tracing(model) -> None:
    """On one device, build the optimizer's and the metrics' variables before ``fit`` traces its step.

    Without a distribution strategy, Keras 3 on TensorFlow defers that build to the first
    trace of the training step (``Trainer._maybe_symbolic_build`` returns early, "for
    backwards compatibility"); variables created during a trace make ``tf.function`` trace
    the whole step a second time. Building first from the dataset's element spec, as under a
    strategy, saves that second trace: the default model's first ``fit`` epoch call (one
    batch, validation included) took 22.5 s instead of 39.0 s, one trace instead of two
    (2026-12-01, loaded machine). The JAX trainer always builds first; nothing to do there.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        _spec_symbolic_build(model, None)


def _spec_symbolic_build(model, strategy) -> None:
    """Let Keras build metrics/optimizer from the dataset's element spec, not from a batch.

    Under any ``tf.distribute`` strategy, Keras 3's ``fit``/``evaluate`` start with
    ``Trainer._maybe_symbolic_build``, which pulls one batch out of a fresh iterator of the
    dataset just to read its shapes. Two upstream problems follow:

    * the training pipeline is re-randomized per iteration (clip starts, shuffle), so the
      first epoch then trains on the *second* iteration's clips: not the clips one device
      sees (measured: a different first-epoch loss than one device);
    * under ``MultiWorkerMirroredStrategy`` that batch, a tuple of per-replica values, is
      reduced with ``strategy.reduce("MEAN", ...)``, which fails ("Attempt to convert a
      value (PerReplica...) ... to a Tensor"; keras-team/keras#20585).

    Only shapes and dtypes are needed, and ``element_spec`` has them without reading data.
    Uses private Keras API, through ``deltanet.upstream`` (which checks it at import).
    """
    import keras
    import tensorflow as tf

    from deltanet import upstream

    def symbolic(spec):
        specs = upstream.per_replica_specs(spec)  # PerReplicaSpec: one spec per local replica
        if specs:
            spec = specs[0]
        if isinstance(spec, tf.TensorSpec):
            return keras.KerasTensor(tuple(spec.shape), dtype=spec.dtype.name)
        return spec

    def build(model, data_batch, dataset):
        if data_batch is None:
            data_batch = tf.nest.map_structure(symbolic, dataset.element_spec)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            upstream.symbolic_build(model, data_batch)

    upstream.replace_symbolic_build(model, build)


def shard(entries: list, index: int, count: int) -> list:
    """Entry ``index``, ``index + count``, ... of ``entries`` (a worker's share of a file list)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside [0, {count})")
    return list(entries[index::count])


__all__ = [
    "LOGICAL_CPUS_ENV",
    "MODES",
    "Distributor",
    "decorrelate_dropout",
    "is_chief_task",
    "per_replica_losses",
    "read_tf_config",
    "setup",
    "shard",
    "split_cpu",
    "synchronize_batchnorm",
    "whole_replica_batches",
]
