"""One way for the CLIs to turn ``--model PATH`` into a :class:`~streaming.engine.DeltaEngine`.

* ``*.keras``: a Keras clip model, converted by ``streaming.convert`` (imports TensorFlow);
* anything else that exists (a directory or a file): a *bundle*, loaded by
  ``streaming.bundle.load_bundle`` (NumPy + JSON, no TensorFlow).

Every user-facing failure (missing path, unreadable file, a layer the runtime cannot
convert, a broken bundle) is a :class:`deltanet.cli.CliError` with a one-line message, so
``python -m streaming.live`` and ``python -m streaming.report`` exit 2 with one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from deltanet.cli import CliError, quiet_stderr_fd


def model_kind(model_path: str | os.PathLike) -> str:
    """``"keras"`` for a ``.keras`` file, ``"bundle"`` for anything else (a directory or a file).

    Raises ``CliError`` when nothing exists at the path.
    """
    path = Path(model_path)
    if not path.exists():
        raise CliError(f"--model: no such file or directory: {model_path}")
    if path.suffix.lower() == ".keras":
        if not path.is_file():
            raise CliError(f"--model: not a file: {model_path}")
        return "keras"
    return "bundle"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def load_keras_model(model_path: str | os.PathLike):
    """Load a ``.keras`` clip model (deltanet layers registered); ``CliError`` if it cannot be read."""
    from deltanet.cli import import_tensorflow_quietly

    model_kind(model_path)
    import_tensorflow_quietly()
    import deltanet

    try:
        with quiet_stderr_fd():
            return deltanet.load_model(model_path)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors, TypeError... for bad files
        raise CliError(f"cannot load model {model_path}: {_one_line(e)}") from e


def engine_from_keras_model(model, model_path: str | os.PathLike = "model", **engine_kwargs):
    """Convert a loaded Keras clip model; ``CliError`` naming the unsupported layers if it cannot be."""
    from streaming.convert import ConversionError, to_plan

    try:
        with quiet_stderr_fd():
            plan = to_plan(model)
    except ConversionError as e:
        raise CliError(f"cannot run model {model_path}: {_one_line(e)}") from e
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CliError(f"cannot convert model {model_path}: {_one_line(e)}") from e
    return _engine(plan, model_path, engine_kwargs)


def _engine(plan, model_path, engine_kwargs):
    from streaming.engine import DeltaEngine
    from streaming.plan import PlanError

    try:
        return DeltaEngine(plan, **engine_kwargs)
    except PlanError as e:
        raise CliError(f"invalid model {model_path}: {_one_line(e)}") from e


def load_bundle_engine(model_path: str | os.PathLike, **engine_kwargs):
    """Load a bundle (directory or file) through ``streaming.bundle.load_bundle``."""
    try:
        from streaming.bundle import load_bundle
    except ImportError as e:
        raise CliError(
            f"--model {model_path}: not a .keras file, and bundles cannot be read here "
            f"(streaming.bundle is not available: {_one_line(e)})"
        ) from e
    from streaming.engine import DeltaEngine

    try:
        loaded = load_bundle(model_path)
    except (ValueError, OSError, KeyError, TypeError) as e:  # PlanError is a ValueError
        raise CliError(f"cannot load bundle {model_path}: {_one_line(e)}") from e
    if isinstance(loaded, DeltaEngine):
        return loaded.clone(**engine_kwargs) if engine_kwargs else loaded
    return _engine(loaded, model_path, engine_kwargs)


def load_engine(model_path: str | os.PathLike, **engine_kwargs):
    """``--model PATH`` -> ``DeltaEngine`` (``engine_kwargs`` go to the engine: ``threads``, ``mode``...).

    ``.keras`` -> ``DeltaEngine.from_keras``-equivalent conversion; a directory or any other
    file -> ``streaming.bundle.load_bundle``. Raises ``CliError`` (one line) on any failure.
    """
    if model_kind(model_path) == "keras":
        return engine_from_keras_model(load_keras_model(model_path), model_path, **engine_kwargs)
    return load_bundle_engine(model_path, **engine_kwargs)


def apply_motion(engine, motion: str, model_path: str | os.PathLike = "model"):
    """``--motion``: ``engine`` itself (``"none"``) or a ``streaming.canvas.MotionEngine`` around it
    (``"global"``); ``CliError`` (one line) if the model cannot be compensated."""
    if motion == "none":
        return engine
    from streaming.canvas import with_motion

    try:
        return with_motion(engine, motion)
    except ValueError as e:  # PlanError is a ValueError
        raise CliError(f"--motion {motion}: cannot compensate {model_path}: {_one_line(e)}") from e
