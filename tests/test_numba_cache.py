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
