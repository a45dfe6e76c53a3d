"""numba's on-disk cache cannot run stale code: every kernel is cached under a digest of every
``ops`` source (and its own file, and the settings), so an edit anywhere compiles afresh."""

from __future__ import annotations

import shutil
from pathlib import Path

from ops import config
from ops.interpreter import run_frame


def _digest_of(ops_dir: Path, monkeypatch) -> str:
    monkeypatch.setattr(config, "_OPS_DIR", ops_dir)
    monkeypatch.setattr(config, "_digests", {})
    return config._digest(ops_dir / "interpreter.py")


def test_the_digest_covers_every_ops_source(tmp_path, monkeypatch):
    ops_dir = tmp_path / "ops"
    shutil.copytree(Path(config.__file__).parent, ops_dir, ignore=shutil.ignore_patterns("__pycache__"))
    base = _digest_of(ops_dir, monkeypatch)
    assert _digest_of(ops_dir, monkeypatch) == base  # deterministic
    for name in ("conv.py", "touch.py", "encode.py"):  # files the interpreter compiles in
        path = ops_dir / name
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        assert _digest_of(ops_dir, monkeypatch) != base, name
        path.write_text(original)
    assert _digest_of(ops_dir, monkeypatch) == base


def test_the_digest_covers_the_settings(monkeypatch):
    monkeypatch.setattr(config, "_digests", {})
    base = config._digest(Path(config.__file__))
    monkeypatch.setattr(config, "_digests", {})
    monkeypatch.setattr(config, "PAR_BLOCKS", config.PAR_BLOCKS + 1)
    assert config._digest(Path(config.__file__)) != base


def test_kernels_are_cached_in_the_digest_folder():
    if not config.CACHE:
        return  # DELTANET_NUMBA_CACHE=0: nothing is cached
    folder = config.CACHE_ROOT / config._digest(Path(run_frame.py_func.__code__.co_filename).resolve())
    assert str(run_frame.stats.cache_path).startswith(str(folder))


def test_cache_off_compiles_without_a_cache():
    kernel = config._jit(dict(config.JIT_EXACT, cache=False))(lambda x: x + 1)
    assert kernel(1) == 2 and kernel.stats.cache_path is None


def test_every_kernel_goes_through_ops_config():
    """No module compiles with numba's decorators directly (they would bypass the settings and the
    keyed cache)."""
    import ast

    root = Path(config.__file__).resolve().parents[1]
    offenders = []
    for pkg in ("deltanet", "ops", "streaming", "training", "scripts"):
        for path in (root / pkg).rglob("*.py"):
            if path == Path(config.__file__).resolve():
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("njit", "jit", "generated_jit", "vectorize") and \
                        isinstance(node.value, ast.Name) and node.value.id == "numba":  # fmt: skip
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} numba.{node.attr}")
                if isinstance(node, ast.ImportFrom) and node.module == "numba":
                    offenders += [f"{path.relative_to(root)}:{node.lineno} from numba import {a.name}" for a in node.names
                                  if a.name in ("njit", "jit", "generated_jit", "vectorize")]  # fmt: skip
    assert not offenders, offenders


_RACER = '''
import os, sys, time
import numba.core.caching as caching

# widen numba's save window so that two processes' saves overlap every time
_save_index, _save_data = caching.IndexDataCacheFile._save_index, caching.IndexDataCacheFile._save_data
caching.IndexDataCacheFile._save_index = lambda self, o: (time.sleep(0.5), _save_index(self, o))[1]
caching.IndexDataCacheFile._save_data = lambda self, n, d: (time.sleep(float(os.environ["SLOW_DATA"])), _save_data(self, n, d))[1]

from ops.config import njit_exact

@njit_exact
def twice_plus_one(x):
    return x * 2 + 1

time.sleep(float(os.environ["DELAY"]))
arg = {"int": 3, "float": 1.25}[sys.argv[1]]
print(twice_plus_one(arg), sum(twice_plus_one.stats.cache_hits.values()))
'''


def test_processes_compiling_one_kernel_at_once_leave_a_consistent_cache(tmp_path):
    """Two processes save different signatures of one kernel at the same time (numba's own save
    would give both data file ``.1.nbc``, so that a later process runs the int64 machine code on a
    float64: 3.0 instead of 3.5); a third process then loads each signature's own code."""
    import os
    import subprocess
    import sys

    if not config.CACHE:
        return  # DELTANET_NUMBA_CACHE=0: nothing is cached
    (tmp_path / "racer.py").write_text(_RACER)
    root = Path(config.__file__).resolve().parents[1]
    env = dict(os.environ, DELTANET_NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=f"{root}{os.pathsep}{tmp_path}")

    def start(kind, delay, slow_data):
        return subprocess.Popen([sys.executable, str(tmp_path / "racer.py"), kind], env=dict(env, DELAY=str(delay), SLOW_DATA=str(slow_data)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    racers = [start("int", 0, 1.0), start("float", 0.2, 0)]
    first = [r.communicate(timeout=120) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], [err[-1000:] for _, err in first]
    assert [out.split()[0] for out, _ in first] == ["7", "3.5"]  # compiled, not loaded
    for kind, expected in (("int", "7"), ("float", "3.5")):
        loader = start(kind, 0, 0)
        out, err = loader.communicate(timeout=120)
        assert loader.returncode == 0, err[-1000:]
        assert out.split() == [expected, "1"], (kind, out)  # loaded from the cache, and right
