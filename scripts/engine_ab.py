"""A/B timing of two checkouts' ``DeltaEngine`` on the same frames: ``python scripts/engine_ab.py``.

Each side runs in its own subprocess whose ``PYTHONPATH`` (and working directory) is the
checkout, so the two engines never share a process; rounds alternate A and B (order flipped
every round) so machine-load drift hits both alike, and the report gives per-round paired
ratios ``B / A`` and their median. The model travels as a bundle (written once by this
checkout; plan format 1, which both sides read), the frames as one ``.npy`` file, the kernel
choice as one JSON dict (measured once by this checkout's tuner unless ``--granularity``).

Per side and round (medians over the frames, milliseconds):

* ``delta``: delta frames (keyframe at frame 0 only);
* ``keyframe``: every frame a keyframe (the dense pass through the delta layers);
* ``profiled``: delta frames with per-step profiling;
* ``dense_mode``: ``mode="dense"`` (delta layers as identities);
* ``zero_change``: the same frame again and again (per-frame engine overhead, nothing changes).

Example (the previous commit's engine against this one, 2 threads)::

    mkdir -p /tmp/engine_base && git archive b592761 | tar -x -C /tmp/engine_base
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/engine_ab.py --a /tmp/engine_base --b . \\
        --model /work/models/seed-0.keras --source ../shared/data/box.mp4 --frames 300 --threads 2 --rounds 5
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

from training.cli import ArgumentParser, CliError, fail, positive_int  # noqa: E402

MEASURES = ("delta", "keyframe", "profiled", "dense_mode", "zero_change")

# Runs inside the subprocess, against whichever checkout PYTHONPATH names.
WORKER = r"""
import json, sys, time
import numpy as np
bundle, frames_path, gran_path, threads, passes = sys.argv[1:6]
threads, passes = int(threads), int(passes)
from streaming.bundle import load_bundle
from streaming.engine import DeltaEngine
plan = load_bundle(bundle)
frames = np.load(frames_path)
gran = json.load(open(gran_path))
clock = time.perf_counter

def timed(engine, clip, skip_first=True):
    engine.reset()
    ms = []
    for f in clip:
        t0 = clock()
        engine.step(f)
        ms.append((clock() - t0) * 1e3)
    return ms[1:] if skip_first else ms

def median(engine, clip, skip_first=True):
    engine.warmup()
    return float(np.median([m for _ in range(passes) for m in timed(engine, clip, skip_first)]))

out = {}
out["delta"] = median(DeltaEngine(plan, granularity=gran, threads=threads), frames)
out["keyframe"] = median(DeltaEngine(plan, granularity=gran, threads=threads, keyframe_interval=1), frames, False)
out["profiled"] = median(DeltaEngine(plan, granularity=gran, threads=threads, profile=True), frames)
out["dense_mode"] = median(DeltaEngine(plan, mode="dense", threads=threads), frames)
same = np.repeat(frames[:1], 200, axis=0)
out["zero_change"] = median(DeltaEngine(plan, granularity=gran, threads=threads), same)
print("RESULT " + json.dumps(out))
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python scripts/engine_ab.py", description="Paired A/B timing of two checkouts' delta engines.")
    p.add_argument("--a", required=True, help="checkout A (e.g. the previous commit, exported with git archive)")
    p.add_argument("--b", default=str(ROOT), help="checkout B (default: this one)")
    p.add_argument("--model", required=True, help="a trained clip model (.keras) or a bundle folder")
    p.add_argument("--source", required=True, help="a video file (any streaming.sources spec)")
    p.add_argument("--frames", type=positive_int, default=300, help="frames to run (default 300)")
    p.add_argument("--threads", type=positive_int, default=2, help="engine threads on both sides (default 2)")
    p.add_argument("--blas-threads", type=positive_int, default=1, help="OPENBLAS_NUM_THREADS on both sides (default 1)")
    p.add_argument("--rounds", type=positive_int, default=5, help="A/B rounds (default 5)")
    p.add_argument("--passes", type=positive_int, default=2, help="passes over the frames per measure and round (default 2)")
    p.add_argument("--granularity", default="auto", help="element, pixel or auto (tuned once by checkout B's code; default auto)")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def _prepare(model: str, source: str, n: int, granularity: str, threads: int, work: Path) -> tuple[Path, Path, Path]:
    import numpy as np

    from streaming.bench import _read_frames
    from streaming.bundle import is_bundle, load_bundle, save_bundle

    if is_bundle(model):
        plan = load_bundle(model)
    else:
        from streaming.convert import to_plan
        from training.cli import import_tensorflow_quietly

        import_tensorflow_quietly()
        import deltanet

        plan = to_plan(deltanet.load_model(model))
    bundle = save_bundle(plan, work / "model.bundle")
    frames = _read_frames(source, n, plan.input_shape[:2])
    np.save(work / "frames.npy", frames)
    if granularity == "auto":
        from streaming.tuning import tune_granularity

        gran = tune_granularity(plan, frames[: min(len(frames), 60)], threads=threads)
    elif granularity in ("element", "pixel"):
        gran = granularity
    else:
        raise CliError(f"--granularity must be element, pixel or auto, got {granularity!r}")
    (work / "granularity.json").write_text(json.dumps(gran))
    return bundle, work / "frames.npy", work / "granularity.json"


def _side(checkout: Path, args, files, threads: int, passes: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(PYTHONPATH=str(checkout), OPENBLAS_NUM_THREADS=str(args.blas_threads))
    r = subprocess.run([sys.executable, "-c", WORKER, *map(str, files), str(threads), str(passes)], cwd=checkout, env=env,
                       capture_output=True, text=True)  # fmt: skip
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise CliError(f"{checkout}: the worker failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return json.loads(line[len("RESULT ") :])


def run(args) -> dict:
    import numpy as np

    a, b = Path(args.a).resolve(), Path(args.b).resolve()
    for side in (a, b):
        if not (side / "streaming" / "engine.py").is_file():
            raise CliError(f"{side} is not a deltanet checkout (no streaming/engine.py)")
    with tempfile.TemporaryDirectory() as tmp:
        files = _prepare(args.model, args.source, args.frames, args.granularity, args.threads, Path(tmp))
        rounds = []
        for k in range(args.rounds):
            order = (("a", a), ("b", b)) if k % 2 == 0 else (("b", b), ("a", a))
            got = {name: _side(path, args, files, args.threads, args.passes) for name, path in order}
            rounds.append(got)
            print(f"round {k + 1}: " + ", ".join(f"{m} {got['a'][m]:.4f} -> {got['b'][m]:.4f} ms" for m in MEASURES), file=sys.stderr)
    summary = {}
    for m in MEASURES:
        ratios = [r["b"][m] / r["a"][m] for r in rounds]
        summary[m] = {"a_ms": float(np.median([r["a"][m] for r in rounds])), "b_ms": float(np.median([r["b"][m] for r in rounds])),
                      "ratio_b_over_a": float(np.median(ratios)), "ratios": ratios}  # fmt: skip
    result = {"a": str(a), "b": str(b), "model": args.model, "source": args.source, "frames": args.frames, "threads": args.threads,
              "rounds": rounds, "summary": summary}  # fmt: skip
    for m, s in summary.items():
        print(f"{m:<12} A {s['a_ms']:.4f} ms  B {s['b_ms']:.4f} ms  B/A {s['ratio_b_over_a']:.3f} (rounds {', '.join(f'{x:.3f}' for x in s['ratios'])})")
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
