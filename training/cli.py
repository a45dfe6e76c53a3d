"""Shared command-line helpers: argument types and the one-line error convention (exit code 2)."""

from __future__ import annotations

import argparse
import contextlib
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


class _DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help text already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
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
    """Import TensorFlow and Keras with fd 2 silenced (see ``quiet_stderr_fd``).

    An import that fails still raises normally once stderr is restored.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr_fd():
        import tensorflow  # noqa: F401
        import keras  # noqa: F401
