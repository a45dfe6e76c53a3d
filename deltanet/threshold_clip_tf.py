"""TensorFlow-only fast path of ``DeltaActivation``'s fused threshold pass (training steps).

``deltanet.delta_activation._threshold_clip`` writes the pass in backend-neutral ``keras.ops``;
under TensorFlow on a CPU that is about twenty element-wise ops, each a full pass over the
activations, and the delta model's training step took 1.8-1.9x the baseline's
(``docs/training_speed.md``, "Session 5"). Here the same computation runs as two numba kernels
(``ops.threshold_clip``: one pass forward, one backward), called one of two ways:

* through a **native TensorFlow op** (``deltanet.native_op``, the default where a C++ compiler
  is present): TensorFlow calls the kernels' C entry points clip by clip on its own threads, no
  Python per call. The delta step took 1.16-1.26x the baseline's against 1.38-1.45x through
  ``numpy_function`` (``scripts/step_time.py``, alternated runs, docs/training_speed.md, "Session 12");
* through ``tf.numpy_function`` (the fallback: no compiler, or ``DELTANET_NATIVE_OP=0``).

Both give the same outputs (bit for bit; the two sums within float32 rounding: float32 per block of elements, float64 across blocks),
same gradient (bit for bit), tested against the ``keras.ops`` version
(``tests/test_threshold_clip.py``).

What the ``numpy_function`` calls cost besides the kernels (``docs/training_speed.md``, "Session 6"): each output
array is taken by TensorFlow without a copy if it is 64-byte aligned (a full copy of every
activation otherwise), and is written into memory reused from earlier steps
(:class:`_ReusedOutputs`) rather than into fresh pages; the four statistics come back as one
output.

A ``numpy_function`` needs Python at run time and the native op needs this process's kernels
(their addresses), so ``DeltaActivation`` uses either in training calls only; inference graphs (exports, ``predict``) keep the neutral ops, and so do XLA and
GPU training steps (:func:`applies`).
"""

from __future__ import annotations

import functools
import math
import sys
import threading

import numpy as np
import tensorflow as tf

from deltanet import native_op
from deltanet.upstream import in_xla_compilation
from ops.threshold_clip import aligned_empty, threshold_clip_backward, threshold_clip_forward


#: Run the kernels on numba's threads (``prange`` over the clips) instead of the calling one;
#: read when a graph is traced. On by default: on a quiet machine the delta step took 1.35x /
#: 1.29x the baseline's with it against 1.46x / 1.40x serial (``scripts/step_time.py --steps 15
#: --keras-ops --parallel-kernels``, malloc / pooled allocator, 2026-12-01, docs/training_speed.md).
#: Under heavy load a parallel region can wait for a descheduled thread (session 5): set False.
PARALLEL = True


class _ReusedOutputs:
    """The kernels' output arrays, each handed out again once TensorFlow has let go of it.

    A fresh array per call is fresh memory: with ~75 MB of activations forward and as much
    backward per step, malloc gives pages back to the system and takes them again, a page
    fault per 4 KiB (``scripts/step_time.py`` counts them). TensorFlow holds a reference to
    every NumPy array it wrapped (:data:`ops.threshold_clip.ALIGNMENT`) until the last tensor
    using it is gone, so an array that nothing but this pool references is free. The pool
    keeps the step's peak of outputs allocated for the life of the process.
    """

    def __init__(self) -> None:
        self._arrays: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            arrays = self._arrays.setdefault(tuple(shape), [])
            for a in arrays:
                if sys.getrefcount(a) == 3:  # the list, `a` and getrefcount's argument: free
                    return a
            a = aligned_empty(shape)
            arrays.append(a)
            return a


_outputs = _ReusedOutputs()


def _forward(x: np.ndarray, theta: np.ndarray, parallel: bool):
    n, t, c = x.shape[0], x.shape[1], x.shape[-1]
    y = _outputs.take(x.shape)
    flat = (n, t, math.prod(x.shape[2:-1]), c)
    _, stats = threshold_clip_forward(x.reshape(flat), theta, parallel, out=y.reshape(flat))
    return y, stats.astype(np.float32)


def _backward(y: np.ndarray, g_y: np.ndarray, g_l1: np.ndarray, g_l2: np.ndarray, parallel: bool) -> np.ndarray:
    return threshold_clip_backward(y, g_y, g_l1, g_l2, parallel, out=_outputs.take(y.shape))


def applies() -> bool:
    """Whether the fast path can run in the graph being built: not under XLA (which cannot
    compile a ``numpy_function``), and not where GPUs would copy every activation to the host."""
    return not in_xla_compilation() and not tf.config.list_logical_devices("GPU")


def threshold_clip_tf(x, theta):
    """``_threshold_clip(x, theta)`` (float32 ``x`` of shape ``(batch, time >= 2, ..., C)``)
    computed by ``ops.threshold_clip``: ``(y, sum|d|, sum d^2, non-zero deltas, delta elements,
    non-zero outputs)``, with the same hand-written gradient. One ``numpy_function`` each way
    (the four statistics come back as one array: each extra output is a conversion). The
    kernels run on numba's threads if :data:`PARALLEL` is set when the graph is traced."""
    theta = tf.broadcast_to(tf.cast(theta, tf.float32), [x.shape[-1]])
    steps = x.shape[1]
    native = native_op.load()
    if native is not None:
        return _native_fused(native, theta, steps)(x)
    parallel = PARALLEL

    @tf.custom_gradient
    def fused(x):
        y, stats = tf.numpy_function(
            functools.partial(_forward, parallel=parallel),
            [x, theta],
            [tf.float32] * 2,
            stateful=False,
            name="threshold_clip_forward",
        )
        y.set_shape(x.shape)
        l1, l2, nonzero, nonzero_y = tf.unstack(tf.reshape(stats, [4]))
        count = tf.cast(tf.size(x) // steps * (steps - 1), tf.float32)

        def grad(g_y, g_l1, g_l2, *unused):
            g_x = tf.numpy_function(
                functools.partial(_backward, parallel=parallel),
                [y, g_y, g_l1, g_l2],
                tf.float32,
                stateful=False,
                name="threshold_clip_backward",
            )
            g_x.set_shape(x.shape)
            return g_x

        return (y, l1, l2, nonzero, count, nonzero_y), grad

    return fused(x)


def _native_fused(native, theta, steps):
    """``fused`` of :func:`threshold_clip_tf` on the native op (``deltanet.native_op``): the
    same kernels, called by TensorFlow on its own threads, no Python per step."""

    @tf.custom_gradient
    def fused(x):
        y, stats = native.deltanet_threshold_clip_forward(x, theta, name="threshold_clip_forward")
        l1, l2, nonzero, nonzero_y = tf.unstack(stats)
        count = tf.cast(tf.size(x) // steps * (steps - 1), tf.float32)

        def grad(g_y, g_l1, g_l2, *unused):
            return native.deltanet_threshold_clip_backward(y, g_y, g_l1, g_l2, name="threshold_clip_backward")

        return (y, l1, l2, nonzero, count, nonzero_y), grad

    return fused
