"""The JAX backend in tests: subprocesses with ``KERAS_BACKEND=jax`` (Keras picks its backend once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def require_jax() -> None:
    """Skip when JAX is not installed, except in CI (``CI=true``, ``.ci/run`` installs the
    ``jax`` extra), where a missing JAX is an install failure and must not pass as a skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        import jax  # noqa: F401  (an ImportError fails the test)
    else:
        pytest.importorskip("jax", reason="JAX is not installed: pip install -e '.[jax]'")


def jax_env(devices: int = 1, **extra: str) -> dict[str, str]:
    """The environment of a JAX subprocess on ``devices`` CPU devices (XLA's host platform)."""
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_jax(code: str, *argv: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """Run ``python -c code *argv`` under JAX in the repository root; fails the test on a non-zero exit.

    ``timeout`` only catches a hang: on the loaded 2-core machine one tiny JAX fit took 10 minutes.
    """
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=jax_env(**env), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def require_native_op():
    """The native training op's module (``deltanet.native_op``), built if needed. Skips where it
    cannot be built (no compiler), except in CI, where ``.ci/run`` installs a compiler and a
    failed build must fail the test rather than pass as a skip."""
    from deltanet import native_op

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return native_op._load_now()
    module = native_op.load()
    if module is None:
        pytest.skip("the native training op cannot be built here (see the warning)")
    return module
