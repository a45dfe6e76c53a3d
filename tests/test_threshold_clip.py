"""The training fast path of threshold mode (ops.threshold_clip, deltanet.threshold_clip_tf)
against the NumPy reference (tests/naive.py) and the backend-neutral keras.ops pass."""

from __future__ import annotations

import numpy as np
import pytest

import naive
from backends import require_native_op
from deltanet.delta_activation import DeltaActivation, _threshold_clip
from ops.threshold_clip import threshold_clip_backward, threshold_clip_forward


def _clips(shape, seed=0):
    """Random-walk clips ``(N, T, ...)``: elements that drift, some that never change, a repeated frame."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0, 0.2, shape), axis=1).astype("float32")
    x[:, :, 0] = 0.0
    x[:, 2] = x[:, 1]
    return x


def _thetas(c, seed=1):
    theta = np.abs(np.random.default_rng(seed).normal(0, 0.2, c)).astype("float32")
    theta[0] = 0.0  # fires on any change
    return theta


def test_forward_matches_the_numpy_reference_bit_for_bit():
    x = _clips((3, 6, 7, 4))
    theta = _thetas(4)
    y, (l1, l2, nonzero_d, nonzero_y) = threshold_clip_forward(x, theta)
    ref = [naive.threshold_stream(clip, theta) for clip in x]
    y_ref = np.stack([r[0] for r in ref])
    d = np.stack([r[1] for r in ref])[:, 1:]
    np.testing.assert_array_equal(y, y_ref)
    assert nonzero_d == np.count_nonzero(d) and nonzero_y == np.count_nonzero(y_ref)
    assert 0 < nonzero_d < d.size
    # float32 sums within a block of elements (ops.threshold_clip.BLOCK), float64 across blocks
    np.testing.assert_allclose(l1, np.abs(d.astype(np.float64)).sum(), rtol=1e-6)
    np.testing.assert_allclose(l2, np.square(d.astype(np.float64)).sum(), rtol=1e-6)


@pytest.mark.parametrize("parallel", [False, True])
def test_forward_over_several_blocks_and_a_partial_one(parallel):
    """Frames of more than BLOCK elements (the default model's large layers): the blocked loops
    cover every element once, the last block partial."""
    from ops.threshold_clip import BLOCK

    pixels, channels = 2 * BLOCK // 8 + 5, 8  # 2 full blocks + 40 elements
    x = _clips((2, 4, pixels, channels), seed=5)
    theta = _thetas(channels, seed=6)
    y, (l1, l2, nonzero_d, nonzero_y) = threshold_clip_forward(x, theta, parallel)
    ref = [naive.threshold_stream(clip, theta) for clip in x]
    y_ref = np.stack([r[0] for r in ref])
    d = np.stack([r[1] for r in ref])[:, 1:]
    np.testing.assert_array_equal(y, y_ref)
    assert nonzero_d == np.count_nonzero(d) and nonzero_y == np.count_nonzero(y_ref)
    np.testing.assert_allclose(l1, np.abs(d.astype(np.float64)).sum(), rtol=1e-5)
    np.testing.assert_allclose(l2, np.square(d.astype(np.float64)).sum(), rtol=1e-5)


def test_backward_is_the_hand_written_gradient():
    x = _clips((2, 5, 6, 3), seed=2)
    theta = _thetas(3)
    y, _ = threshold_clip_forward(x, theta)
    g_y = np.random.default_rng(3).normal(size=x.shape).astype("float32")
    g_x = threshold_clip_backward(y, g_y, 0.7, 1.3)
    d = np.diff(y, axis=1)
    expected = g_y.copy()
    expected[:, 1:] += np.float32(0.7) * np.sign(d) + np.float32(2.6) * d
    np.testing.assert_array_equal(g_x, expected)


def test_empty_batch_and_bad_arguments():
    for parallel in (False, True):
        y, stats = threshold_clip_forward(np.zeros((0, 3, 2, 4), "float32"), np.zeros(4, "float32"), parallel)
        assert y.shape == (0, 3, 2, 4) and stats.tolist() == [0.0, 0.0, 0.0, 0.0]
    x = np.zeros((1, 3, 2, 4), "float32")
    with pytest.raises(ValueError, match="dtype float32"):
        threshold_clip_forward(x.astype("float64"), np.zeros(4, "float32"))
    with pytest.raises(ValueError, match=r"theta must have shape \(4\)"):
        threshold_clip_forward(x, np.zeros(3, "float32"))
    with pytest.raises(ValueError, match=">= 0"):
        threshold_clip_forward(x, np.full(4, -1.0, "float32"))
    with pytest.raises(ValueError, match="C-contiguous"):
        threshold_clip_forward(np.zeros((1, 3, 4, 2), "float32").transpose(0, 1, 3, 2), np.zeros(4, "float32"))
    with pytest.raises(ValueError, match="one shape"):
        threshold_clip_backward(x, x[:, 1:], 1.0, 1.0)


def _pass_and_gradient(clip, x, theta, w):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        out = clip(x, theta)
        loss = tf.reduce_sum(out[0] * w) + 0.9 * out[1] + 1.7 * out[2]
    return out, tape.gradient(loss, x)


@pytest.fixture(params=["native", "numpy_function"])
def fast_path(request, monkeypatch):
    """Each TensorFlow fast path in turn: the native op (``deltanet.native_op``) and the
    ``numpy_function`` fallback."""
    if request.param == "native":
        require_native_op()
        monkeypatch.setenv("DELTANET_NATIVE_OP", "1")
    else:
        monkeypatch.setenv("DELTANET_NATIVE_OP", "0")
    return request.param


@pytest.fixture
def numpy_function_path(monkeypatch):
    """Tests of the ``numpy_function`` path's own machinery (output pool, prange kernels)."""
    monkeypatch.setenv("DELTANET_NATIVE_OP", "0")


@pytest.mark.parametrize(
    "shape, per_channel", [((3, 4, 5, 6, 3), True), ((3, 4, 5, 6, 3), False), ((4, 3, 16), True), ((2, 3, 1, 1, 8), True)]
)
def test_tensorflow_fast_path_equals_the_keras_ops_pass(shape, per_channel, fast_path):
    """Same outputs (the sums within float32 rounding), same gradient, eagerly and in a graph."""
    import tensorflow as tf

    from deltanet.threshold_clip_tf import threshold_clip_tf

    x = _clips(shape, seed=4)
    x[0, 1, 0] = np.inf  # fires, then stays: inf - inf must not leak NaN into d or its gradient
    x[0, 2, 0] = np.inf
    x = tf.constant(x)
    theta = tf.constant(_thetas(shape[-1]) if per_channel else np.float32(0.15))
    w = tf.constant(np.random.default_rng(5).normal(size=shape).astype("float32"))
    as_numpy = lambda out, grad: ([o.numpy() for o in out], grad.numpy())  # noqa: E731
    reference, g_reference = as_numpy(*_pass_and_gradient(_threshold_clip, x, theta, w))
    graph = tf.function(lambda x: _pass_and_gradient(threshold_clip_tf, x, theta, w))
    for fast, g_fast in (as_numpy(*_pass_and_gradient(threshold_clip_tf, x, theta, w)), as_numpy(*graph(x))):
        np.testing.assert_array_equal(fast[0], reference[0])
        np.testing.assert_array_equal(fast[3:], reference[3:])  # counts
        np.testing.assert_allclose(fast[1:3], reference[1:3], rtol=1e-6)
        np.testing.assert_allclose(g_fast, g_reference, rtol=1e-6, atol=1e-6)
    assert 0 < reference[3] < reference[4]


def test_training_calls_take_the_fast_path_and_match_inference_calls(monkeypatch, fast_path):
    """DeltaActivation(training=True) under TensorFlow: the fast path's output, penalty and
    density counters are those of the keras.ops pass (what training=False runs)."""
    from deltanet import threshold_clip_tf

    calls = []
    fast = threshold_clip_tf.threshold_clip_tf
    monkeypatch.setattr(threshold_clip_tf, "threshold_clip_tf", lambda *a: calls.append(1) or fast(*a))
    x = _clips((2, 5, 4, 4, 3), seed=6)
    results = []
    for training in (True, False):
        layer = DeltaActivation(mode="threshold", threshold=0.1, penalty_weight=2.0, cost_per_nonzero=3.0)
        layer.build(x.shape)
        y = np.asarray(layer(x, training=training))
        penalty = float(layer._penalty(*[np.float32(v) for v in _stats(x, 0.1)]))
        results.append((y, layer.temporal_density, layer.spatial_density, [float(v) for v in layer.losses] or [penalty]))
    assert calls == [1]
    (y_fast, t_fast, s_fast, loss_fast), (y_ref, t_ref, s_ref, loss_ref) = results
    np.testing.assert_array_equal(y_fast, y_ref)
    assert t_fast == t_ref and s_fast == s_ref and 0 < t_fast < s_fast < 1
    np.testing.assert_allclose(loss_fast, loss_ref, rtol=1e-6)


def _stats(x, theta):
    """``(sum|d|, sum d^2, delta elements)`` of the NumPy reference (frames t >= 1)."""
    d = np.stack([naive.threshold_stream(clip, np.float32(theta))[1] for clip in x])[:, 1:]
    return np.abs(d).sum(), np.square(d).sum(), d.size


def test_parallel_kernels_equal_the_serial_ones_and_outputs_are_aligned():
    """The prange kernels (clips shared out among threads) compute what the serial ones do;
    every output starts on an ALIGNMENT boundary, so TensorFlow can wrap it without a copy."""
    from ops.threshold_clip import ALIGNMENT

    x = _clips((5, 4, 9, 3), seed=7)
    theta = _thetas(3)
    g_y = np.random.default_rng(8).normal(size=x.shape).astype("float32")
    y, stats = threshold_clip_forward(x, theta)
    y_par, stats_par = threshold_clip_forward(x, theta, parallel=True)
    np.testing.assert_array_equal(y_par, y)
    np.testing.assert_array_equal(stats_par[2:], stats[2:])
    np.testing.assert_allclose(stats_par[:2], stats[:2], rtol=1e-12)  # float64 sums, another order
    g_x = threshold_clip_backward(y, g_y, 0.3, 0.8)
    np.testing.assert_array_equal(threshold_clip_backward(y, g_y, 0.3, 0.8, parallel=True), g_x)
    for a in (y, y_par, g_x):
        assert a.ctypes.data % ALIGNMENT == 0 and a.flags.c_contiguous and a.dtype == np.float32


def test_tensorflow_fast_path_on_parallel_kernels_equals_the_serial_one(monkeypatch, numpy_function_path):
    import tensorflow as tf

    from deltanet import threshold_clip_tf

    x = tf.constant(_clips((4, 3, 5, 4), seed=9))
    theta = tf.constant(_thetas(4))
    w = tf.constant(np.random.default_rng(10).normal(size=x.shape).astype("float32"))
    serial, g_serial = _pass_and_gradient(threshold_clip_tf.threshold_clip_tf, x, theta, w)
    monkeypatch.setattr(threshold_clip_tf, "PARALLEL", True)
    parallel, g_parallel = tf.function(lambda x: _pass_and_gradient(threshold_clip_tf.threshold_clip_tf, x, theta, w))(x)
    np.testing.assert_array_equal(parallel[0].numpy(), serial[0].numpy())
    np.testing.assert_array_equal(g_parallel.numpy(), g_serial.numpy())
    np.testing.assert_allclose([float(v) for v in parallel[1:]], [float(v) for v in serial[1:]], rtol=1e-6)


def test_tensorflow_takes_an_aligned_output_without_copying_it():
    """What the alignment is for: a numpy_function's aligned output reaches the next
    numpy_function as the same memory (TensorFlow wrapped it), a 16-byte aligned one (NumPy's
    own alignment) as a copy."""
    import tensorflow as tf

    from ops.threshold_clip import aligned_empty

    addresses = {}

    def produce(x, aligned):
        out = aligned_empty(x.shape) if aligned else aligned_empty((x.size + 4,))[4:].reshape(x.shape)  # 16 bytes off
        out[...] = x
        addresses["out"] = out.ctypes.data
        return out

    def consume(a):
        addresses["in"] = a.ctypes.data
        return np.float32(0)

    for aligned in (True, False):
        produced = lambda x, aligned=aligned: produce(x, aligned)  # noqa: E731
        tf.function(
            lambda x: tf.numpy_function(consume, [tf.numpy_function(produced, [x], tf.float32, stateful=False)], tf.float32, stateful=False)
        )(tf.zeros((3, 100)))
        assert (addresses["in"] == addresses["out"]) is aligned


def test_outputs_are_reused_only_once_tensorflow_let_go_of_them(monkeypatch, numpy_function_path):
    """The fast path's output pool: an output that a live tensor still uses is never written
    again; once the tensor is gone its array serves the next call (no new memory per step)."""
    import tensorflow as tf

    from deltanet import threshold_clip_tf

    x = tf.constant(_clips((2, 3, 4, 5), seed=11))
    theta = tf.constant(_thetas(5))
    step = tf.function(lambda x: threshold_clip_tf.threshold_clip_tf(x, theta)[0])
    pool = threshold_clip_tf._ReusedOutputs()
    monkeypatch.setattr(threshold_clip_tf, "_outputs", pool)
    first = step(x)
    kept = first.numpy().copy()
    second = step(x * 2.0)  # `first` is alive: another array
    np.testing.assert_array_equal(first.numpy(), kept)
    assert len(pool._arrays[tuple(x.shape)]) == 2
    view = second.numpy()  # NumPy's view of a tensor keeps its memory after the tensor is gone
    kept_second = view.copy()
    del first, second
    for _ in range(5):
        np.testing.assert_array_equal(step(x).numpy(), kept)
    np.testing.assert_array_equal(view, kept_second)
    assert len(pool._arrays[tuple(x.shape)]) <= 3
