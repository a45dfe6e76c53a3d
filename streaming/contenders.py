"""The dense runtimes ``streaming.bench`` times against the delta engine, one builder per contender.

Each builder returns a ``Contender``: ``run(frame) -> logits`` for one prepared float frame ``(H, W, C)``
(values 0..255, what ``DeltaEngine.prepare`` gives), at batch 1, on ``threads`` threads. The TFLite and
ONNX builders take the serialized model, so that ``streaming.bench_memory`` can load the very same
artifact in a fresh process. A runtime that is not installed raises ``Unavailable`` with the reason,
which the benchmark reports as "skipped" instead of crashing.

TensorFlow, the TFLite runtime and ONNX Runtime are imported inside the builders only: this module is
also imported by the memory probe, whose point is to load nothing but the runtime it measures.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

from deltanet.cli import quiet_stderr_fd

#: every contender the benchmark knows, in the order it times them
CONTENDERS = ("delta_engine", "dense_engine", "keras", "keras_nojit", "tflite", "tflite_int8", "onnxruntime")
#: what ``--skip`` may leave out (the two engines are the point of the benchmark)
SKIPPABLE = CONTENDERS[2:]


class Unavailable(RuntimeError):
    """The contender cannot run here (a package missing, a converter that refuses); one line says why."""


@dataclass
class Contender:
    run: Callable[[np.ndarray], np.ndarray]
    runtime: str  # what ran it, with versions


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def keras_contender(per_frame, jit: bool) -> Contender:
    """The per-frame Keras model as a ``tf.function`` at batch 1, compiled by XLA or not."""
    import keras
    import tensorflow as tf

    serve = tf.function(lambda x: per_frame(x, training=False), jit_compile=jit, reduce_retracing=True)
    how = "XLA (jit_compile=True)" if jit else "TensorFlow kernels (jit_compile=False)"
    return Contender(lambda f: serve(tf.constant(f[None], tf.float32)).numpy()[0],
                     f"keras {keras.__version__} / tensorflow {tf.__version__}, tf.function, {how}")


def tflite_flatbuffer(per_frame, shape, calibration: np.ndarray | None = None) -> bytes:
    """The per-frame model as a TFLite flatbuffer: float32, or full-integer int8 when ``calibration`` is given.

    int8: post-training quantization with ``calibration`` (frames that are never timed) as the
    representative dataset, every op restricted to ``TFLITE_BUILTINS_INT8`` (conversion fails rather
    than leave a float op behind), per-channel weights. Input and output stay float32: the model gets
    the same frames and returns logits comparable with every other contender's, and the quantize /
    dequantize at its ends (one pass over the input frame, one over the logits) is counted in its time.
    """
    import keras
    import tensorflow as tf

    # A batch-1 input, as every contender runs; from_keras_model, because a concrete function's
    # resource variables break the int8 calibrator (READ_VARIABLE fails to invoke).
    frame = keras.Input(tuple(shape), batch_size=1, name="frame")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(frame, per_frame(frame), name=per_frame.name))
    if calibration is not None:
        if len(calibration) == 0:
            raise ValueError("int8 calibration needs at least one frame")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([f[None].astype(np.float32)] for f in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:  # Keras prints the SavedModel it exports on the way to stdout, the converter talks on fd 2
        with quiet_stderr_fd(), contextlib.redirect_stdout(io.StringIO()):
            return converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        kind = "int8" if calibration is not None else "float32"
        raise Unavailable(f"the TFLite converter cannot make a {kind} model: {_one_line(e)}") from e


def tflite_contender(content: bytes, threads: int) -> Contender:
    """A TFLite flatbuffer in the LiteRT interpreter (XNNPACK applied by default, float32 and int8 alike)."""
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        runtime = f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '?')} Interpreter (XNNPACK)"
    except ImportError:  # older stacks: the interpreter inside TensorFlow
        try:
            import tensorflow as tf
        except ImportError as e:
            raise Unavailable("neither ai_edge_litert nor tensorflow is installed") from e
        Interpreter = tf.lite.Interpreter
        runtime = f"tf.lite.Interpreter {tf.__version__} (XNNPACK)"
    with quiet_stderr_fd():  # "Created TensorFlow Lite XNNPACK delegate" goes straight to fd 2
        interp = Interpreter(model_content=content, num_threads=threads)
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]

    def run(frame):
        interp.set_tensor(inp, frame[None].astype(np.float32))
        interp.invoke()
        return interp.get_tensor(out)[0].copy()

    return Contender(run, runtime)


def tflite_runner(per_frame, threads: int, shape) -> Callable[[np.ndarray], np.ndarray]:
    """``frame -> logits`` of ``per_frame`` in TFLite fp32 (the scripts' one-contender shortcut)."""
    return tflite_contender(tflite_flatbuffer(per_frame, shape), threads).run


def onnx_bytes(per_frame) -> bytes:
    """The per-frame model as ONNX (``deltanet.onnx_export``, the converter ``training.export`` uses)."""
    import keras

    from deltanet.onnx_export import OnnxUnavailable, keras_to_onnx

    named = keras.Model({"frame": per_frame.inputs[0]}, {"logits": per_frame.outputs[0]}, name=per_frame.name)
    try:
        return keras_to_onnx(named).SerializeToString()
    except OnnxUnavailable as e:
        raise Unavailable(str(e)) from e


def onnx_contender(content: bytes, threads: int) -> Contender:
    """An ONNX model in ONNX Runtime, CPU execution provider, ``threads`` intra-op threads, sequential."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable("onnxruntime is not installed") from e
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Contender(lambda f: session.run(None, {name: f[None].astype(np.float32)})[0][0],
                     f"onnxruntime {ort.__version__}, CPUExecutionProvider")


def engine_contender(engine, stats: list | None = None) -> Contender:
    """A ``DeltaEngine`` (delta or dense mode); each frame's ``FrameStats`` is appended to ``stats``."""

    def run(frame):
        logits, s = engine.step(frame)
        if stats is not None:
            stats.append(s)
        return logits

    mode = "dense mode" if engine.mode == "dense" else "delta mode"
    return Contender(run, f"deltanet DeltaEngine ({mode}, numba interpreter)")


def engine_arena_bytes(engine) -> dict[str, int]:
    """The engine's resident arrays by role, in bytes (``streaming.lower`` sizes every arena).

    ``weights``: the packed weight arena (shared by clones); ``state``: what ``reset`` zeroes (activations,
    encoder references, delta rows in ``fbuf``; the previous input and dedup marks in ``ubuf``);
    ``scratch``: the rest of ``fbuf`` (region scales, gather/product and im2col scratch) and ``ibuf``
    (changed-pixel lists); ``tables``: the interpreter's step and tensor tables.
    """
    p = engine.program
    f32, i32 = np.dtype(np.float32).itemsize, np.dtype(np.int32).itemsize
    return {
        "weights": int(p.weights.wbuf.nbytes),
        "state": int(p.fbuf_state * f32 + p.ubuf_size),
        "scratch": int((p.fbuf_size - p.fbuf_state) * f32 + p.ibuf_size * i32),
        "tables": int(sum(a.nbytes for a in (p.steps, p.params, p.inputs, p.tensors, p.scratch))),
    }
