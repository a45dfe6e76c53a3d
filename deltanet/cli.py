"""Command-line helpers shared by every CLI (`training.*`, `streaming.*`, `scripts/`): argparse only, no Keras.

The one-line error convention: a bad argument prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys


class CliError(Exception):
    """A user error (bad argument, missing or invalid input): one line on stderr, exit code 2."""


def fail(prog: str, message: str) -> int:
    """Print ``prog: error: message`` as one line on stderr and return exit code 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def fraction_arg(text: str) -> float:
    """A number strictly between 0 and 1 (a target MAC density)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def crop_arg(text: str):
    """``--crop x,y,w,h`` -> ``streaming.preprocess.Crop`` (pixels, or fractions of the frame)."""
    from streaming.preprocess import Crop

    try:
        return Crop.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def rescale_arg(text: str) -> tuple[float, float]:
    """``--rescale SCALE,OFFSET`` -> ``(scale, offset)`` (Keras ``Rescaling``: ``x * scale + offset``).

    Fractions are allowed (``1/127.5,-1``); both values finite, ``SCALE != 0``.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected SCALE,OFFSET (e.g. 1/127.5,-1), got {text!r}")
    values = []
    for part in parts:
        num, _, den = part.partition("/")
        try:
            values.append(float(num) / float(den) if den else float(num))
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"expected SCALE,OFFSET as two numbers (a/b allowed), got {text!r}") from None
    scale, offset = values
    if not (math.isfinite(scale) and math.isfinite(offset)) or scale == 0:
        raise argparse.ArgumentTypeError(f"SCALE must be finite and non-zero, OFFSET finite, got {text!r}")
    return scale, offset


def add_crop_argument(parser: argparse.ArgumentParser) -> None:
    """The one ``--crop`` option of every CLI that feeds frames to a model."""
    parser.add_argument(
        "--crop", type=crop_arg, default=None, metavar="x,y,w,h",
        help="region of interest cut from every frame before resizing: pixels (262,45,115,115) or fractions "
        "of the frame (0.25,0,0.5,1.0) (default: the whole frame)",
    )


def add_rescale_argument(parser: argparse.ArgumentParser) -> None:
    """The one ``--rescale`` option of every CLI that takes a pretrained model."""
    parser.add_argument(
        "--rescale", type=rescale_arg, default=None, metavar="SCALE,OFFSET",
        help="input normalization the pretrained model expects, as a Keras Rescaling layer in front of it "
        "(x * SCALE + OFFSET on 0..255 pixels, e.g. 1/127.5,-1 for [-1, 1]) (default: none, the model has its own)",
    )


#: ``--motion`` values: no compensation, or global camera motion (``streaming.canvas.MotionEngine``)
MOTIONS = ("none", "global")


def add_motion_argument(parser: argparse.ArgumentParser) -> None:
    """The one ``--motion`` option of every CLI that runs the delta engine on a stream."""
    parser.add_argument(
        "--motion", choices=MOTIONS, default="none",
        help="camera-motion compensation: none, or global (estimate the camera's shift every frame and run the "
        "network on a world canvas, so a panning camera keeps its sparsity)",
    )


def add_tuning_argument(parser: argparse.ArgumentParser) -> None:
    """The one ``--tuning`` option of every CLI that runs the delta engine (``streaming.tuning.use_tuning``)."""
    parser.add_argument(
        "--tuning", default="auto", metavar="auto|none|PATH",
        help="the engine's measured kernel choice and dense-fallback break-evens (python -m streaming.tune, or "
        "streaming.bench --save-tuning): auto uses MODEL.tuning.json (tuning.json in a bundle) if it exists, "
        "none the untuned defaults",
    )


class _DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help text already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.nargs == 0:  # a flag (store_true/false, help): its default says nothing
            return text
        default = "none" if action.default is None else action.default
        return f"{text} (default: {default})".strip()


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr (no usage block), exit 2,
    and whose ``--help`` shows every option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


@contextlib.contextmanager
def quiet_stderr_fd():
    """Point file descriptor 2 at /dev/null for the duration (restored on exit, exceptions pass).

    TensorFlow's C++ runtime (and its converters) write absl/oneDNN banners straight to fd 2,
    before any log-level setting is read (``TF_CPP_MIN_LOG_LEVEL`` does not stop them in TF
    2.21); CLIs promise one line on stderr for a user error.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras with fd 2 silenced (see ``quiet_stderr_fd``); under another Keras
    backend (``KERAS_BACKEND=jax``) Keras alone, so Keras-only CLIs (fit, distill, calibrate) run there.

    An import that fails still raises normally once stderr is restored.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr_fd():
        if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
            # TensorFlow's import pulls in JAX when it is installed (the `jax` extra), only for
            # TFLite's JAX converter (tensorflow/lite/python/util.py: `from jax import jit`), which
            # nothing here uses: ~1.5-2.5 s of every CLI start on this 2-core machine (7.4-9.2 s ->
            # 6.0-7.4 s for `import tensorflow, keras`). Hidden for the import only: a later
            # `import jax` in the process works as usual.
            hide = "jax" not in sys.modules
            if hide:
                sys.modules["jax"] = None  # makes `import jax` raise ImportError, which TensorFlow catches
            try:
                import tensorflow  # noqa: F401
            finally:
                if hide and sys.modules.get("jax", 0) is None:
                    del sys.modules["jax"]
        import keras  # noqa: F401  (another backend, e.g. KERAS_BACKEND=jax on a machine without TensorFlow: Keras only)
