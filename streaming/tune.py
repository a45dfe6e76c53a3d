"""``python -m streaming.tune``: measure the delta engine's kernel choice and dense-fallback
break-evens for a model on frames of its own camera, and save them for the other CLIs.

    python -m streaming.tune --model runs/fit/model.keras --source camera.mp4 --threads 2
    python -m streaming.live --model runs/fit/model.keras --source 0 --threads 2   # finds model.tuning.json

What is measured (``streaming.tuning.tune``): per MAC layer, which delta kernel is fastest on the
first ``--frames`` frames of the source (element-wise or pixel-wise, serial or parallel), then
the delta fraction at which that kernel loses to the layer's dense kernel (the fallback's
break-even, on synthetic deltas); with ``--refresh``, the share of 8x8 tiles changed at the input
from which a whole frame is cheaper run dense as a refresh frame (``DeltaEngine(refresh_at=)``). Both depend on the model, the thread count and the machine, so
the record names the threads and is refused by an engine that runs another count. The default
output, ``MODEL.tuning.json`` beside the model (``tuning.json`` inside a bundle), is what
``--tuning auto`` (the default of ``streaming.live``, ``streaming.report`` and
``training.evaluate``) loads.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from deltanet.cli import ArgumentParser, CliError, add_crop_argument, fail, positive_int

PROG = "python -m streaming.tune"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Measure and save the delta engine's kernel choice and dense-fallback break-evens.")
    p.add_argument("--model", required=True, help="a clip model (.keras) or a bundle (directory or file)")
    p.add_argument("--source", required=True, help="a video of the camera the model will watch (or any streaming.sources spec)")
    p.add_argument("--frames", type=positive_int, default=60, help="frames from the start of the source to measure on (default 60)")
    p.add_argument("--threads", type=positive_int, default=2, help="numba threads the engine will run with (default 2)")
    p.add_argument("--refresh", action="store_true",
                   help="also measure when refresh frames pay (a cut or a pan then runs as a dense frame that resets every "
                        "reference; its logits are the dense network's, not the delta model's) and turn them on in the record")
    p.add_argument("--out", default=None, help="where to write the tuning (default: MODEL.tuning.json, tuning.json inside a bundle)")
    add_crop_argument(p)
    return p


def run(model: str, source: str, *, frames: int = 60, threads: int = 2, out: str | None = None, crop=None, log=print,
        refresh: bool = False) -> dict:
    """Tune an engine for ``model`` on ``source``'s first ``frames`` frames; write and return the record."""
    from streaming.bench import read_frames
    from streaming.model_io import load_engine, model_kind
    from streaming.tuning import save_tuning, tune, tuning_path

    model_kind(model)  # CliError for a missing model, before TensorFlow loads
    path = Path(out) if out else tuning_path(model)
    if not path.resolve().parent.is_dir():
        raise CliError(f"--out: folder {path.parent} does not exist")
    if frames < 2:
        raise CliError("--frames: need at least 2 frames")
    engine = load_engine(model, threads=threads)  # CliError for an unconvertible model
    clip = read_frames(source, frames, engine.input_shape, crop)
    t0 = time.perf_counter()
    record = tune(engine, clip, refresh=refresh)
    record["source"] = str(source)
    save_tuning(record, path)
    kinds = sorted(set(record["granularity"].values()))
    fallbacks = sum(v is not None for v in record["breakeven"].values())
    log(f"{PROG}: {len(clip)} frames, {threads} thread(s), {time.perf_counter() - t0:.1f} s; kernels "
        + ", ".join(f"{k}: {sum(v == k for v in record['granularity'].values())}" for k in kinds)
        + f"; {fallbacks} of {len(record['breakeven'])} layers fall back above a measured break-even"
        + ("" if not refresh else "; refresh frames: never faster" if record["refresh_at"] is None
           else f"; refresh frames from a tile occupancy of {record['refresh_at']:.2f}")
        + f"; wrote {path}")
    return record


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args.model, args.source, frames=args.frames, threads=args.threads, out=args.out, crop=args.crop,
            log=lambda m: print(m, file=sys.stderr), refresh=args.refresh)
    except CliError as e:
        return fail(PROG, str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
