"""Build, cache and load the native TensorFlow op of ``DeltaActivation``'s training fast path.

``deltanet/native/threshold_clip_op.cc`` is two CPU ops that run the numba kernels of
``ops.threshold_clip`` (through :func:`ops.threshold_clip.clip_cfuncs`) with no Python per call.
Through ``tf.numpy_function`` the delta layers' round trips alone took 1.17-1.26x the baseline
training step (``docs/training_speed.md``, "Session 11"); the op removes them.

The op is compiled against the installed TensorFlow (``tf.sysconfig``) with the system's C++
compiler the first time a process needs it (about 10-15 s, printed), and cached under
``$XDG_CACHE_HOME/deltanet/native/<digest>/``; the digest covers the source, TensorFlow's
version and flags and the compiler's version, so a cached library never outlives what it was
built against. Builds are locked across processes and written under a temporary name, so
concurrent processes (pytest workers, multi-worker training) build it once and never load a
half-written file.

If it cannot be built or loaded (no compiler, no TensorFlow headers), :func:`load` warns once
and returns None, and training falls back to the ``numpy_function`` path (same results, slower
step). ``DELTANET_NATIVE_OP=0`` turns it off; ``DELTANET_NATIVE_OP=1`` makes a failure an error
(CI uses it so that a broken build cannot hide behind the fallback).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "native" / "threshold_clip_op.cc"
LIBRARY = "threshold_clip_op.so"

_lock = threading.Lock()
_loaded: dict = {}


def setting() -> str:
    """``DELTANET_NATIVE_OP``: ``auto`` (default: use it if it builds), ``0`` (off) or ``1`` (required)."""
    value = os.environ.get("DELTANET_NATIVE_OP", "auto").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in ("0", "false", "off", "no"):
        return "0"
    if value in ("1", "true", "on", "yes"):
        return "1"
    raise ValueError(f"DELTANET_NATIVE_OP must be auto, 0 or 1, got {os.environ.get('DELTANET_NATIVE_OP')!r}")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("DELTANET_NATIVE_CACHE_DIR") or Path(base) / "deltanet" / "native")


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        raise RuntimeError(f"no C++ compiler ({cxx!r} is not on PATH; apt-get install g++, or set CXX)")
    return path


def _flags(tf) -> list[str]:
    return [*tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def _digest(tf, cxx: str) -> str:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(repr((tf.__version__, _flags(tf), version, sys.platform)).encode())
    return h.hexdigest()[:20]


def _build(tf, folder: Path) -> Path:
    """The compiled library in ``folder``, compiling it first if it is not there."""
    import fcntl

    target = folder / LIBRARY
    if target.exists():
        return target
    cxx = _compiler()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if target.exists():  # another process built it while this one waited
            return target
        for stale in folder.glob("*.so.tmp"):  # left by a process killed while compiling
            stale.unlink(missing_ok=True)
        print("deltanet: compiling the native training op against TensorFlow (once per installation, ~15 s)", file=sys.stderr, flush=True)
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=folder)
        os.close(fd)
        cmd = [cxx, "-shared", "-fPIC", "-O2", "-w", str(SOURCE), "-o", tmp, *_flags(tf)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                errors = [line for line in done.stderr.splitlines() if "error" in line][:5]
                raise RuntimeError(f"{Path(cxx).name} failed (exit {done.returncode}): " + (" | ".join(errors) or done.stderr[-500:]))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return target


def _load_now():
    import tensorflow as tf

    from ops.threshold_clip import clip_cfuncs

    path = _build(tf, cache_root() / _digest(tf, _compiler()))
    module = tf.load_op_library(str(path))
    forward, backward = clip_cfuncs()
    # the same file dlopen'ed again: the same library, so the same globals as TensorFlow's handle
    ctypes.CDLL(str(path)).deltanet_set_threshold_clip_kernels(ctypes.c_void_p(forward.address), ctypes.c_void_p(backward.address))
    return module


def build_in_background() -> threading.Thread | None:
    """Start building the library on a thread (the compiler is a subprocess: it takes no GIL) and
    return the thread, or None where the op is off. ``training.fit`` calls this before it
    generates and loads the data (single-core Python), so a first run's ~10 s compile overlaps
    it; :func:`load` later waits for the build through the lock. A failure is left to
    :func:`load` to report."""
    if setting() == "0":
        return None

    def build() -> None:
        try:
            import tensorflow as tf

            _build(tf, cache_root() / _digest(tf, _compiler()))
        except Exception:  # noqa: BLE001 - load() reports it
            pass

    thread = threading.Thread(target=build, name="deltanet-native-op-build", daemon=True)
    thread.start()
    return thread


def load():
    """The op module (``deltanet_threshold_clip_forward``, ``..._backward``), or None where it is
    turned off or cannot be built (one warning per process, then the ``numpy_function`` path)."""
    mode = setting()
    if mode == "0":
        return None
    with _lock:
        if "module" not in _loaded:
            try:
                _loaded["module"] = _load_now()
            except Exception as exc:  # noqa: BLE001 - any failure means: use the fallback
                if mode == "1":
                    raise RuntimeError(f"DELTANET_NATIVE_OP=1 but the native training op is unavailable: {exc}") from exc
                warnings.warn(
                    f"deltanet: native training op unavailable ({exc}); training uses the slower numpy_function path",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _loaded["module"] = None
        return _loaded["module"]
