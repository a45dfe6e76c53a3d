"""The delta runtime's own model format: a folder with ``manifest.json`` + ``weights.npz``.

A bundle is data, never code: the manifest is plain JSON (schema-checked before any array
is touched) and the weights are read with ``numpy.load(allow_pickle=False)``. Loading needs
NumPy only (running it: NumPy, numba, OpenCV), so ``python -m streaming.live --model BUNDLE``
works on a machine without TensorFlow. A truncated, tampered or mismatched bundle raises
``BundleError`` with one line saying what is wrong.

Manifest (``bundle_version`` 1)::

    {"format": "deltanet-bundle", "bundle_version": 1, "plan_version": 1,
     "input_shape": [H, W, 3], "tensors": {name: [H, W, C]}, "steps": [...],
     "output": name, "info": {"class_names": [...], ...},
     "arrays": {key: {"shape": [...], "dtype": "float32"}}}

``steps`` are the engine plan's steps (see ``streaming.plan``).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from streaming.plan import PLAN_VERSION, STEP_FIELDS, Plan, PlanError, validate_plan

FORMAT = "deltanet-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
MAX_MANIFEST_BYTES = 16 << 20
MAX_DIM = 1 << 16  # any single dimension
MAX_ELEMENTS = 1 << 27  # any single array or tensor (512 MiB of float32)
MAX_TOTAL_ELEMENTS = 1 << 28


class BundleError(ValueError):
    """A bundle that cannot be used; the message is one line naming the problem."""


def export_bundle(model, path: str | os.PathLike) -> Path:
    """Convert a Keras clip model (or a ``.keras`` path) and write it as a bundle folder at ``path``."""
    from streaming.convert import to_plan

    if isinstance(model, (str, os.PathLike)):
        from deltanet.saving import load_model

        model = load_model(model)
    return save_bundle(to_plan(model), path)


def save_bundle(plan: Plan, path: str | os.PathLike) -> Path:
    """Write ``plan`` as a bundle folder (``path`` must not exist yet or be an empty folder)."""
    validate_plan(plan)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    manifest = plan.manifest()
    manifest = {"format": FORMAT, "bundle_version": BUNDLE_VERSION, **manifest}
    np.savez(path / WEIGHTS, **{k: np.ascontiguousarray(v, np.float32) for k, v in plan.arrays.items()})
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return path


def is_bundle(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


def _need(cond, msg):
    if not cond:
        raise BundleError(msg)


def _int_list(value, what, length=None):
    _need(isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value), f"{what} must be a list of integers")
    _need(length is None or len(value) == length, f"{what} must have {length} entries")
    _need(all(0 < v <= MAX_DIM for v in value), f"{what} has a dimension outside 1..{MAX_DIM}: {value}")
    return value


def _check_manifest(m) -> None:
    _need(isinstance(m, dict), "manifest is not a JSON object")
    _need(m.get("format") == FORMAT, f"not a deltanet bundle (format {m.get('format')!r})")
    _need(m.get("bundle_version") == BUNDLE_VERSION, f"unsupported bundle_version {m.get('bundle_version')!r} (this runtime reads {BUNDLE_VERSION})")
    _need(m.get("plan_version") == PLAN_VERSION, f"unsupported plan_version {m.get('plan_version')!r}")
    for key in ("input_shape", "tensors", "steps", "output", "arrays"):
        _need(key in m, f"manifest lacks {key!r}")
    _int_list(m["input_shape"], "input_shape", 3)
    _need(isinstance(m["tensors"], dict) and m["tensors"], "tensors must be a non-empty object")
    for name, shape in m["tensors"].items():
        _int_list(shape, f"tensor {name!r}", 3)
        _need(int(np.prod(shape)) <= MAX_ELEMENTS, f"tensor {name!r} is too large: {shape}")
    _need(isinstance(m["arrays"], dict), "arrays must be an object")
    total = 0
    for key, spec in m["arrays"].items():
        _need(isinstance(spec, dict) and spec.get("dtype") == "float32", f"array {key!r} must be declared float32")
        shape = spec.get("shape")
        _need(isinstance(shape, list) and len(shape) <= 4, f"array {key!r} has a bad shape")
        _int_list(shape, f"array {key!r}")
        n = int(np.prod(shape)) if shape else 1
        _need(n <= MAX_ELEMENTS, f"array {key!r} is too large: {shape}")
        total += n
    _need(total <= MAX_TOTAL_ELEMENTS, f"the arrays hold {total} values, more than {MAX_TOTAL_ELEMENTS}")
    _need(isinstance(m["steps"], list) and m["steps"], "steps must be a non-empty list")
    for i, s in enumerate(m["steps"]):
        _need(isinstance(s, dict), f"step {i} is not an object")
        _need(s.get("op") in STEP_FIELDS, f"step {i}: unknown layer kind {s.get('op')!r}")
        _need(isinstance(s.get("inputs"), list) and all(isinstance(t, str) for t in s["inputs"]), f"step {i}: inputs must be a list of names")
        for f in ("stride", "pad_top", "pad_left", "top", "bottom", "left", "right", "kh", "kw"):
            if f in s:
                _need(isinstance(s[f], int) and 0 <= s[f] <= MAX_DIM, f"step {i}: {f} must be an integer in 0..{MAX_DIM}")
        for f in ("a0", "a1", "a2"):
            if f in s:
                _need(isinstance(s[f], (int, float)) and np.isfinite(s[f]), f"step {i}: {f} must be a finite number")
    _need(isinstance(m.get("info", {}), dict), "info must be an object")


def load_bundle(path: str | os.PathLike) -> Plan:
    """Read and validate a bundle folder; returns the engine ``Plan``. Raises ``BundleError``."""
    path = Path(path)
    _need(path.exists(), f"no such bundle: {path}")
    _need(is_bundle(path), f"{path} is not a bundle folder (no {MANIFEST})")
    mpath, wpath = path / MANIFEST, path / WEIGHTS
    _need(mpath.stat().st_size <= MAX_MANIFEST_BYTES, f"{mpath} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({e.__class__.__name__}: {e})") from None
    _check_manifest(manifest)
    _need(wpath.is_file(), f"{wpath} is missing")
    arrays = {}
    try:
        with np.load(wpath, allow_pickle=False) as npz:
            names = set(npz.files)
            declared = set(manifest["arrays"])
            _need(names == declared, f"{WEIGHTS} holds {sorted(names - declared)[:3]} not in the manifest, or lacks {sorted(declared - names)[:3]}")
            for key, spec in manifest["arrays"].items():
                a = npz[key]
                _need(a.dtype == np.float32, f"array {key!r} is {a.dtype}, the manifest says float32")
                _need(list(a.shape) == spec["shape"], f"array {key!r} has shape {list(a.shape)}, the manifest says {spec['shape']}")
                _need(bool(np.all(np.isfinite(a))), f"array {key!r} holds NaN or Inf values")
                arrays[key] = np.ascontiguousarray(a)
    except BundleError:
        raise
    except ValueError as e:  # allow_pickle=False refusing an object array lands here
        raise BundleError(f"{wpath} cannot be read safely: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise BundleError(f"{wpath} is truncated or corrupt ({e.__class__.__name__}: {e})") from None
    plan = Plan(
        tuple(manifest["input_shape"]),
        {k: tuple(v) for k, v in manifest["tensors"].items()},
        manifest["steps"],
        arrays,
        manifest["output"],
        manifest.get("info", {}),
    )
    try:
        validate_plan(plan, max_elements=MAX_ELEMENTS)
    except PlanError as e:
        raise BundleError(f"invalid bundle {path}: {e}") from None
    return plan


def bundle_frame_logits(path: str | os.PathLike, clip: np.ndarray) -> np.ndarray:
    """Per-frame logits ``(batch, time, classes)`` of a bundle run by the delta engine (export check)."""
    from streaming.engine import DeltaEngine

    engine = DeltaEngine(load_bundle(path))
    out = []
    for stream in np.asarray(clip):
        engine.reset()
        out.append(engine.run(stream)[0])
    return np.stack(out)
