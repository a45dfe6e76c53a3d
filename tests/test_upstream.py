"""The seam to upstream internals (deltanet/upstream.py): its import-time check, and that no other
project file uses a private Keras, TensorFlow or numba name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import keras

from deltanet import upstream

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("deltanet", "ops", "streaming", "training", "scripts")
SEAM = ROOT / "deltanet" / "upstream.py"
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "numba.core", "numba.np", "numba.parfors", "numba.misc")


def _sources():
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _defined_names(trees) -> set[str]:
    """Every name the project itself defines or assigns (functions, classes, variables, attributes, arguments)."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return names


def _private_uses(path: Path, tree, defined: set[str]) -> list[str]:
    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__") and name not in defined

    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and private(node.attr):
            found.append(f"{where} .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr"):
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) and private(node.args[1].value):
                found.append(f"{where} {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in modules:
                if m.startswith(PRIVATE_MODULES) or any(part.startswith("_") and not part.startswith("__") for part in m.split(".")):
                    found.append(f"{where} import {m}")
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] not in PACKAGES:
                found += [f"{where} from {node.module} import {a.name}" for a in node.names if private(a.name)]
    return found


def test_no_private_upstream_name_outside_the_seam():
    trees = {p: ast.parse(p.read_text(), str(p)) for p in _sources()}
    defined = _defined_names(trees.values())
    found = [use for p, tree in trees.items() if p != SEAM for use in _private_uses(p, tree, defined)]
    assert not found, "private upstream names outside deltanet/upstream.py:\n" + "\n".join(found)
    # the scan does see the seam's own uses (so it is not vacuous)
    assert any("_nodes_by_depth" in use for use in _private_uses(SEAM, trees[SEAM], defined))


def test_the_seam_checks_pass_on_the_installed_versions():
    upstream._check()  # what the import ran; raises UpstreamError otherwise
    inp = keras.Input((3,))
    layer = keras.layers.Dense(2)
    out = layer(inp)
    assert upstream.producer_of(out) is layer
    assert [n.operation for n in upstream.graph_nodes(keras.Model(inp, out))] == [layer]


def test_the_seam_raises_naming_the_version_when_an_internal_is_missing(monkeypatch):
    monkeypatch.setattr(keras.Model, "_symbolic_build", None)
    with pytest.raises(upstream.UpstreamError, match=rf"Trainer._symbolic_build.*keras {keras.__version__}.*tested with keras 3\.15"):
        upstream._check()


def test_the_seam_raises_when_a_tensor_loses_its_history(monkeypatch):
    monkeypatch.setattr(upstream, "producer_of", lambda tensor: None)
    with pytest.raises(upstream.UpstreamError, match="_keras_history"):
        upstream._check()
