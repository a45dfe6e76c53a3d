"""Test setup: quiet TensorFlow, make tests/ importable (naive.py, fakes.py), shared fixtures."""

import os
import socket
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    """On the controller (not in xdist workers), before any worker starts: compile the engine's
    composite kernels in one clean process (tests/warm_numba_cache.py says why: a ``run_frame``
    compiled among other tests' kernels can be cached broken)."""
    import subprocess

    if hasattr(config, "workerinput") or os.environ.get("DELTANET_NUMBA_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    script = os.path.join(os.path.dirname(__file__), "warm_numba_cache.py")
    r = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise pytest.UsageError(f"tests/warm_numba_cache.py failed (exit {r.returncode}): {r.stderr[-2000:]}")


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """One persistent XLA compilation cache for every JAX subprocess of the session (they inherit
    the environment): a process that compiles what an earlier one compiled (a resumed fit) loads
    the executable instead. Measured on the loaded 2-core machine: a tiny JAX fit took 50 s cold,
    17 s with the cache warm, same results. Compiling is deterministic, so the cached program is
    the one JAX would build again."""
    saved = {k: os.environ.get(k) for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def no_network(monkeypatch):
    """Refuse network connections, and fail the test if any was attempted (even if swallowed)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Run the ``slow`` tests first (stable: otherwise in collection order).

    Longest-first scheduling: with several workers (pytest-xdist, ``-n auto``) the dozen tests of
    30-180 s each start at once on separate workers, and the ~770 short ones fill in behind them,
    instead of one long test starting last while the other core idles. ``trylast``: after pytest
    has grouped the items by fixture scope, so the slow tests keep that grouping among themselves.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
