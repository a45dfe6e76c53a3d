"""Resident memory of one ``streaming.bench`` contender, measured in a fresh process.

In the benchmark's own process the deltas of RSS mean little: TensorFlow, numba and every converter
are loaded already, and allocators keep freed pages. So each contender is loaded here, alone:
Python with NumPy, psutil and the frames first (``baseline``), then the contender is built from the
artifact the benchmark wrote (a bundle for the engines, ``.keras`` for Keras, the flatbuffer / ONNX
file for TFLite / ONNX Runtime: ``built``), then it runs the frames (``after_run``: buffers and arenas
that exist only once it ran). ``growth_mb`` is ``after_run - baseline``: the runtime's libraries, its
model and its buffers, i.e. what a process that runs only this contender would add. ``peak_mb`` is
the process's high-water mark (``VmHWM``; ``None`` off Linux).

``measure_rss`` runs ``python -m streaming.bench_memory`` and reads the JSON line it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from deltanet.cli import ArgumentParser
from streaming.contenders import CONTENDERS

MB = 1024 * 1024


def measure_rss(name: str, artifact: Path, frames: Path, threads: int, granularity: dict | None = None,
                timeout: float = 600) -> dict:
    """The memory figures of contender ``name`` (see the module docstring), or ``{"error": ...}``."""
    cmd = [sys.executable, "-m", "streaming.bench_memory", "--contender", name, "--artifact", str(artifact),
           "--frames", str(frames), "--threads", str(threads), "--granularity", json.dumps(granularity or {})]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe exited {r.returncode}: {tail}"}
    return json.loads(lines[-1])


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int | None:
    """The process's resident high-water mark (Linux ``VmHWM``; ``ru_maxrss`` would include the forking parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _build(name: str, artifact: Path, threads: int, granularity: dict):
    from streaming import contenders as c

    if name in ("delta_engine", "dense_engine"):
        from streaming.bundle import load_bundle
        from streaming.engine import DeltaEngine

        kwargs = {"mode": "dense"} if name == "dense_engine" else {"granularity": granularity or "element"}
        return c.engine_contender(DeltaEngine(load_bundle(artifact), threads=threads, **kwargs))
    if name in ("keras", "keras_nojit"):
        from deltanet.cli import import_tensorflow_quietly

        import_tensorflow_quietly()
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import deltanet

        per_frame = deltanet.per_frame_model(deltanet.load_model(artifact))
        return c.keras_contender(per_frame, jit=name == "keras")
    if name in ("tflite", "tflite_int8"):
        return c.tflite_contender(artifact.read_bytes(), threads)
    if name == "onnxruntime":
        return c.onnx_contender(artifact.read_bytes(), threads)
    raise ValueError(f"unknown contender {name!r}")


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m streaming.bench_memory", description="Resident memory of one bench contender (internal).")
    p.add_argument("--contender", required=True, choices=CONTENDERS, help="which contender (required)")
    p.add_argument("--artifact", required=True, type=Path, help="what to build it from (bundle, .keras, .tflite, .onnx)")
    p.add_argument("--frames", required=True, type=Path, help="an .npy of prepared frames to run")
    p.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    p.add_argument("--granularity", default="{}", help="the delta engine's kernel choice per layer, JSON (default {})")
    args = p.parse_args(argv)
    frames = np.load(args.frames)
    baseline = _rss()
    contender = _build(args.contender, args.artifact, args.threads, json.loads(args.granularity))
    built = _rss()
    for f in frames:
        contender.run(f)
    after = _rss()
    peak = _peak_rss()
    print(json.dumps({"baseline_mb": baseline / MB, "built_mb": built / MB, "after_run_mb": after / MB,
                      "growth_mb": (after - baseline) / MB,
                      "peak_mb": peak / MB if peak is not None else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
