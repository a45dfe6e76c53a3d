"""The native TensorFlow op of DeltaActivation's training fast path (deltanet.native_op,
deltanet/native/threshold_clip_op.cc): bit for bit the numpy_function path it replaces, in the
training graph, clear errors, and a build that falls back, never half-writes and runs once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from backends import require_native_op
from deltanet import native_op
from test_threshold_clip import _clips, _pass_and_gradient, _thetas


def test_native_op_equals_the_numpy_function_path_bit_for_bit(monkeypatch):
    """Seven clips shared out over TensorFlow's threads: the references, all four statistics
    (summed clip after clip, like the serial kernels) and the gradient are identical."""
    import tensorflow as tf

    from deltanet import threshold_clip_tf

    require_native_op()
    x = _clips((7, 4, 6, 5, 8), seed=21)
    x[3, 2, 1] = np.inf
    x = tf.constant(x)
    theta = tf.constant(_thetas(8, seed=22))
    w = tf.constant(np.random.default_rng(23).normal(size=x.shape).astype("float32"))
    monkeypatch.setattr(threshold_clip_tf, "PARALLEL", False)
    results = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("DELTANET_NATIVE_OP", mode)
        fn = tf.function(lambda x: _pass_and_gradient(threshold_clip_tf.threshold_clip_tf, x, theta, w))
        results[mode] = fn(x)
        assert ("DeltanetThresholdClipForward" in _op_types(fn.get_concrete_function(x).graph)) == (mode == "1")
    (out_np, g_np), (out_native, g_native) = results["0"], results["1"]
    for a, b in zip(out_native, out_np):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(g_native.numpy(), g_np.numpy())
    assert 0 < float(out_native[3]) < float(out_native[4])


def _op_types(graph) -> set[str]:
    """The op types of a traced graph and of the functions inside it (custom gradients)."""
    inner = getattr(graph, "_functions", {})
    return {op.type for op in graph.get_operations()} | {op.type for f in inner.values() for op in f.graph.get_operations()}


def test_a_training_step_runs_the_native_ops_and_no_numpy_function(monkeypatch):
    """What the op is for: the traced training step of a delta layer holds the two native ops
    and no PyFunc (a numpy_function) at all."""
    import tensorflow as tf

    from deltanet.delta_activation import DeltaActivation

    require_native_op()
    monkeypatch.setenv("DELTANET_NATIVE_OP", "1")
    layer = DeltaActivation(mode="threshold", threshold=0.1, penalty_weight=2.0)
    x = tf.constant(_clips((2, 4, 3, 3, 4), seed=24))
    layer.build(x.shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True)) + tf.add_n(layer.losses)
        return tape.gradient(loss, x)

    found = _op_types(step.get_concrete_function(x).graph)
    assert "DeltanetThresholdClipForward" in found and "DeltanetThresholdClipBackward" in found, sorted(found)
    assert not {"PyFunc", "EagerPyFunc", "PyFuncStateless"} & found
    assert np.isfinite(step(x).numpy()).all()


def test_native_op_rejects_bad_shapes_with_one_clear_error():
    import tensorflow as tf

    module = require_native_op()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must be \(N, T, \.\.\., C\)"):
        module.deltanet_threshold_clip_forward(tf.zeros((3, 4)), tf.zeros((4,)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="theta must be"):
        module.deltanet_threshold_clip_forward(tf.zeros((2, 3, 4)), tf.zeros((5,)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one shape"):
        module.deltanet_threshold_clip_backward(tf.zeros((2, 3, 4)), tf.zeros((2, 3, 5)), 0.0, 0.0)
    y, stats = module.deltanet_threshold_clip_forward(tf.zeros((0, 3, 4)), tf.zeros((4,)))  # an empty batch
    assert y.shape == (0, 3, 4) and stats.numpy().tolist() == [0.0] * 4


def test_without_a_compiler_training_falls_back_with_one_warning(monkeypatch, tmp_path):
    """No compiler: `load` warns and returns None (the numpy_function path trains, with the same
    results); with DELTANET_NATIVE_OP=1 the same failure is an error; nothing is left half-built."""
    import tensorflow as tf

    from deltanet.threshold_clip_tf import threshold_clip_tf

    monkeypatch.setattr(native_op, "_loaded", {})
    monkeypatch.setenv("DELTANET_NATIVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    monkeypatch.setenv("DELTANET_NATIVE_OP", "auto")
    with pytest.warns(RuntimeWarning, match="native training op unavailable .*no C\\+\\+ compiler"):
        assert native_op.load() is None
    out = threshold_clip_tf(tf.constant(_clips((2, 3, 4, 2), seed=25)), tf.constant(_thetas(2)))  # the fallback runs
    assert out[0].shape == (2, 3, 4, 2)
    monkeypatch.setattr(native_op, "_loaded", {})
    monkeypatch.setenv("DELTANET_NATIVE_OP", "1")
    with pytest.raises(RuntimeError, match="DELTANET_NATIVE_OP=1 but the native training op is unavailable"):
        native_op.load()
    monkeypatch.setenv("DELTANET_NATIVE_OP", "0")
    assert native_op.load() is None
    monkeypatch.setenv("DELTANET_NATIVE_OP", "sometimes")
    with pytest.raises(ValueError, match="DELTANET_NATIVE_OP must be auto, 0 or 1"):
        native_op.load()


def test_a_failed_compile_leaves_no_library_behind(monkeypatch, tmp_path):
    """A compiler that fails (here `false`): the error says so and the cache folder holds no
    `.so`, partial or whole, so the next process tries again instead of loading garbage."""
    import tensorflow as tf

    monkeypatch.setenv("CXX", "false")
    with pytest.raises(RuntimeError, match="false failed"):
        native_op._build(tf, tmp_path / "d")
    assert not list((tmp_path / "d").glob("*.so"))


def test_concurrent_builds_compile_once(monkeypatch, tmp_path, capfd):
    """Three builders of one fresh cache folder at once (threads here, processes in pytest-xdist
    or multi-worker training; one of them `training.fit`'s background build): one compiles, the
    others wait and take its library. A temporary file left by a killed build is cleared."""
    import tensorflow as tf

    require_native_op()
    monkeypatch.setenv("DELTANET_NATIVE_CACHE_DIR", str(tmp_path))
    folder = tmp_path / native_op._digest(tf, native_op._compiler())
    folder.mkdir()
    (folder / "tmpkilled.so.tmp").write_bytes(b"half")
    background = native_op.build_in_background()
    paths, errors = [], []

    def build():
        try:
            paths.append(native_op._build(tf, folder))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in [*threads, background]:
        t.join()
    assert not errors and len(paths) == 2 and paths[0] == paths[1] and paths[0].stat().st_size > 0
    assert capfd.readouterr().err.count("compiling the native training op") == 1
    assert sorted(p.name for p in folder.iterdir()) == [".build.lock", native_op.LIBRARY]
