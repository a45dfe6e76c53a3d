"""The project's import graph has no cycle (module-level and lazy, in-function imports alike)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("deltanet", "ops", "streaming", "training")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
            else:
                continue
            graph[m] |= {t for t in targets if t in modules and t != m}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None (depth-first search with an explicit stack)."""
    state = {m: 0 for m in graph}  # 0 new, 1 on the current path, 2 done
    for root in sorted(graph):
        if state[root]:
            continue
        path, stack = [], [(root, iter(sorted(graph[root])))]
        state[root] = 1
        path.append(root)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state[child] == 1:
                return path[path.index(child) :] + [child]
            elif state[child] == 0:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_no_import_cycle_in_the_project():
    graph = _import_graph()
    assert "streaming.engine" in graph and "ops.interpreter" in graph["streaming.engine"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_runtime_packages_do_not_import_training():
    """``streaming/`` and ``ops/`` are the deployable runtime: they never import ``training`` (CLI helpers live in
    ``deltanet.cli``), so a bundle runs from a checkout without the training code's dependencies."""
    graph = _import_graph()
    offenders = sorted(
        f"{m} -> {t}" for m, targets in graph.items() if m.split(".")[0] in ("streaming", "ops") for t in targets if t.split(".")[0] == "training"
    )
    assert offenders == []


def test_cli_tensorflow_import_skips_jax_and_a_later_jax_import_still_works():
    """``import_tensorflow_quietly`` keeps TensorFlow from importing JAX (only its TFLite JAX converter wants it;
    ~2 s of every CLI start), and JAX stays importable afterwards."""
    import importlib.util
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from deltanet.cli import import_tensorflow_quietly\n"
        "import_tensorflow_quietly()\n"
        "import tensorflow, keras\n"
        "assert 'tensorflow' in sys.modules and 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('jax'))\n"
        "if HAVE_JAX:\n"
        "    import jax\n"
        "    assert jax.numpy.add(1, 2) == 3\n"
        "print('ok')\n"
    ).replace("HAVE_JAX", str(importlib.util.find_spec("jax") is not None))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
