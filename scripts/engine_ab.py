"""A/B timing of two checkouts' ``DeltaEngine`` on the same frames: ``python scripts/engine_ab.py``.

Each side runs in its own long-lived worker process whose ``PYTHONPATH`` (and working
directory) is its checkout, so the two engines never share a process. The parent interleaves
them finely: block by block of frames (A then B, the order flipped every block), every
measure, several passes, so machine-load drift hits both sides alike. The report gives
per-side medians and the median of the per-block paired ratios ``B / A`` (with its
interquartile range), which is what to read on a loaded machine.

The model travels as a bundle (written once by this checkout; plan format 1, which both
sides read), the frames as one ``.npy`` file, the kernel choice as one JSON value (measured
once by this checkout's tuner unless ``--granularity``).

Measures (milliseconds per frame):

* ``delta``: delta frames (the stream's keyframe, frame 0, left out);
* ``keyframe``: every frame a keyframe (the dense pass through the delta layers);
* ``profiled``: delta frames with per-step profiling;
* ``dense_mode``: ``mode="dense"`` (delta layers as identities);
* ``zero_change``: the first frame again and again (per-frame engine overhead: nothing changes).

Example (the previous commit's engine against this one)::

    mkdir -p /tmp/engine_base && git archive b592761 | tar -x -C /tmp/engine_base
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/engine_ab.py --a /tmp/engine_base --b . \\
        --model /work/models/seed-0.keras --source ../shared/data/box.mp4 --frames 300 --threads 1 --json ab.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.cli import ArgumentParser, CliError, fail, positive_int  # noqa: E402

MEASURES = ("delta", "keyframe", "profiled", "dense_mode", "zero_change")

# The worker: runs inside the checkout named by PYTHONPATH; one JSON line per command.
WORKER = r"""
import json, sys, time
import numpy as np
bundle, frames_path, gran_path, threads = sys.argv[1:5]
threads = int(threads)
from streaming.bundle import load_bundle
from streaming.engine import DeltaEngine
plan = load_bundle(bundle)
frames = np.load(frames_path)
gran = json.load(open(gran_path))
engines = {
    "delta": DeltaEngine(plan, granularity=gran, threads=threads),
    "keyframe": DeltaEngine(plan, granularity=gran, threads=threads, keyframe_interval=1),
    "profiled": DeltaEngine(plan, granularity=gran, threads=threads, profile=True),
    "dense_mode": DeltaEngine(plan, mode="dense", threads=threads),
    "zero_change": DeltaEngine(plan, granularity=gran, threads=threads),
}
for e in engines.values():
    e.warmup()
clock = time.perf_counter
print("READY", flush=True)
for line in sys.stdin:
    measure, start, count = line.split()
    start, count = int(start), int(count)
    engine = engines[measure]
    if start == 0:
        engine.reset()
    clip = np.repeat(frames[:1], count, axis=0) if measure == "zero_change" else frames[start : start + count]
    ms = []
    for f in clip:
        t0 = clock()
        engine.step(f)
        ms.append((clock() - t0) * 1e3)
    print(json.dumps(ms), flush=True)
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python scripts/engine_ab.py", description="Paired, interleaved A/B timing of two checkouts' delta engines.")
    p.add_argument("--a", required=True, help="checkout A (e.g. the previous commit, exported with git archive)")
    p.add_argument("--b", default=str(ROOT), help="checkout B (default: this one)")
    p.add_argument("--model", required=True, help="a trained clip model (.keras) or a bundle folder")
    p.add_argument("--source", required=True, help="a video file (any streaming.sources spec)")
    p.add_argument("--frames", type=positive_int, default=300, help="frames to run (default 300)")
    p.add_argument("--threads", type=positive_int, default=1, help="engine threads on both sides (default 1)")
    p.add_argument("--blas-threads", type=positive_int, default=1, help="OPENBLAS_NUM_THREADS on both sides (default 1)")
    p.add_argument("--passes", type=positive_int, default=3, help="passes over the frames (default 3)")
    p.add_argument("--block", type=positive_int, default=25, help="frames per interleaved block (default 25)")
    p.add_argument("--granularity", default="auto", help="element, pixel or auto (tuned once by this checkout's code; default auto)")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def _prepare(model: str, source: str, n: int, granularity: str, threads: int, work: Path) -> list[Path]:
    import numpy as np

    from streaming.bench import read_frames
    from streaming.bundle import is_bundle, load_bundle, save_bundle

    if granularity not in ("auto", "element", "pixel"):
        raise CliError(f"--granularity must be element, pixel or auto, got {granularity!r}")
    if is_bundle(model):
        plan = load_bundle(model)
    else:
        if not Path(model).is_file():
            raise CliError(f"--model: no such file: {model}")
        from streaming.convert import to_plan
        from deltanet.cli import import_tensorflow_quietly

        import_tensorflow_quietly()
        import deltanet

        plan = to_plan(deltanet.load_model(model))
    bundle = save_bundle(plan, work / "model.bundle")
    frames = read_frames(source, n, plan.input_shape[:2])
    np.save(work / "frames.npy", frames)
    gran = granularity
    if granularity == "auto":
        from streaming.tuning import tune_granularity

        gran = tune_granularity(plan, frames[: min(len(frames), 60)], threads=threads)
    (work / "granularity.json").write_text(json.dumps(gran))
    return [bundle, work / "frames.npy", work / "granularity.json"]


class _Worker:
    """One side: a worker process in its checkout, answering one JSON line per command."""

    def __init__(self, checkout: Path, files: list[Path], threads: int, blas_threads: int):
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        env.update(PYTHONPATH=str(checkout), OPENBLAS_NUM_THREADS=str(blas_threads), PYTHONUNBUFFERED="1")
        self.checkout = checkout
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, *map(str, files), str(threads)], cwd=checkout, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        if self._line() != "READY":
            raise CliError(f"{checkout}: the worker did not start")

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise CliError(f"{self.checkout}: the worker exited (code {self.proc.poll()})")
        return line.strip()

    def run(self, measure: str, start: int, count: int) -> list[float]:
        self.proc.stdin.write(f"{measure} {start} {count}\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run(args) -> dict:
    import numpy as np

    a, b = Path(args.a).resolve(), Path(args.b).resolve()
    for side in (a, b):
        if not (side / "streaming" / "engine.py").is_file():
            raise CliError(f"{side} is not a deltanet checkout (no streaming/engine.py)")
    with tempfile.TemporaryDirectory() as tmp:
        files = _prepare(args.model, args.source, args.frames, args.granularity, args.threads, Path(tmp))
        n = len(np.load(files[1], mmap_mode="r"))
        workers = {"a": _Worker(a, files, args.threads, args.blas_threads), "b": _Worker(b, files, args.threads, args.blas_threads)}
        times = {m: {"a": [], "b": []} for m in MEASURES}
        block_ratios = {m: [] for m in MEASURES}
        k = 0
        try:
            for p in range(args.passes):
                for start in range(0, n, args.block):
                    count = min(args.block, n - start)
                    for m in MEASURES:
                        order = ("a", "b") if k % 2 == 0 else ("b", "a")
                        k += 1
                        got = {side: workers[side].run(m, start, count) for side in order}
                        skip = 1 if start == 0 and m in ("delta", "profiled", "zero_change") else 0  # the stream's keyframe
                        for side in ("a", "b"):
                            times[m][side] += got[side][skip:]
                        if count > skip:
                            block_ratios[m].append(float(np.median(got["b"][skip:]) / np.median(got["a"][skip:])))
                print(f"pass {p + 1}/{args.passes}: " + ", ".join(
                    f"{m} B/A {np.median(block_ratios[m]):.3f}" for m in MEASURES), file=sys.stderr)  # fmt: skip
        finally:
            for w in workers.values():
                w.close()
    summary = {}
    for m in MEASURES:
        r = np.asarray(block_ratios[m])
        summary[m] = {"a_ms": float(np.median(times[m]["a"])), "b_ms": float(np.median(times[m]["b"])),
                      "ratio_b_over_a": float(np.median(r)), "ratio_iqr": [float(np.percentile(r, 25)), float(np.percentile(r, 75))],
                      "blocks": int(r.size)}  # fmt: skip
    result = {"a": str(a), "b": str(b), "model": args.model, "source": args.source, "frames": n, "threads": args.threads,
              "blas_threads": args.blas_threads, "passes": args.passes, "block": args.block, "summary": summary}  # fmt: skip
    for m, s in summary.items():
        print(f"{m:<12} A {s['a_ms']:.4f} ms  B {s['b_ms']:.4f} ms  B/A {s['ratio_b_over_a']:.3f} "
              f"(IQR {s['ratio_iqr'][0]:.3f}-{s['ratio_iqr'][1]:.3f}, {s['blocks']} blocks)")  # fmt: skip
    if args.json:
        tmp = Path(args.json).with_name(Path(args.json).name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.json)
    return result


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except CliError as e:
        return fail(parser.prog, str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
