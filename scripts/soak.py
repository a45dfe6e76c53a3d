"""Soak test: a long real stream through ``streaming.live --headless``, ``streaming.report`` and the engine.

    python scripts/soak.py --model runs/fit/model.keras \
        --source ../shared/data/real/surveillance_person-bicycle-car-detection.gif --frames 10000 --json soak.json

Three parts, on the same frames (the source played with ``--repeat 0`` until ``--frames``):

1. ``live``: ``python -m streaming.live --headless`` as a child process, for the ``.keras``
   model and for a bundle exported from it, keyframes off and every ``--keyframe-interval``
   frames. The child's resident memory (``/proc/PID/status`` VmRSS) is sampled every 500
   frames (read off its JSON lines), and its per-frame latency summarised per 1,000 frames
   (p50 / p99).
2. ``error``: in this process, the engine (from the bundle, keyframes off and on; and the
   engine converted from the ``.keras`` model, which must equal the bundle's bit for bit on
   every frame) against the Keras model run frame by frame with its states carried
   (``streaming.reference``). Per 1,000 frames: max relative logit error, frames over 1e-4,
   top-1 agreement, and whether the error stays inside the flip envelope of
   ``training.export_check.check_free_running`` (no drift); RSS of this process every 500
   frames.
3. ``report``: ``python -m streaming.report --frames N`` as a child, RSS sampled every
   second, wall time.

Timing figures are only meaningful on a quiet machine; memory figures are meaningful anyway.
Results: ``--json`` (full) and a Markdown summary on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deltanet.cli import ArgumentParser, positive_int  # noqa: E402

RSS_EVERY = 500
BLOCK = 1000


def log(msg: str) -> None:
    print(f"soak: {msg}", file=sys.stderr, flush=True)


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MB (VmRSS), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def per_block(values, block: int = BLOCK) -> list[dict]:
    """p50 / p99 of ``values`` per ``block`` consecutive frames."""
    v = np.asarray(values, np.float64)
    return [{"frames": f"{i}-{min(i + block, len(v)) - 1}", "p50": float(np.percentile(v[i:i + block], 50)),
             "p99": float(np.percentile(v[i:i + block], 99))} for i in range(0, len(v), block)]


def flatness(samples: list[tuple[int, float]], warmup_frames: int) -> dict:
    """RSS growth after warm-up: the samples from ``warmup_frames`` on, max - min and last - first."""
    later = [mb for frame, mb in samples if frame >= warmup_frames]
    if len(later) < 2:
        return {"after_warmup_range_mb": None, "after_warmup_growth_mb": None}
    return {"after_warmup_range_mb": max(later) - min(later), "after_warmup_growth_mb": later[-1] - later[0]}


def soak_live(model: str, source: str, frames: int, keyframe_interval: int | None, warmup: int) -> dict:
    """``streaming.live --headless`` in a child: RSS every 500 frames, latency per 1,000 frames."""
    cmd = [sys.executable, "-m", "streaming.live", "--model", model, "--source", source, "--repeat", "0",
           "--max-frames", str(frames), "--headless", "--threads", "1"]
    if keyframe_interval:
        cmd += ["--keyframe-interval", str(keyframe_interval)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    drain.start()
    latency, rss = [], []
    for n, line in enumerate(proc.stdout, 1):
        latency.append(json.loads(line)["latency_ms"])
        if n % RSS_EVERY == 0:
            rss.append((n, rss_mb(proc.pid)))
    proc.wait()
    drain.join(10)
    if proc.returncode != 0:
        raise SystemExit(f"soak: {' '.join(cmd)} failed ({proc.returncode}): {''.join(stderr)[-2000:]}")
    return {"command": " ".join(cmd), "frames": len(latency), "wall_s": time.monotonic() - t0, "rss_mb": rss,
            **flatness(rss, warmup), "latency_ms": per_block(latency), "summary": stderr[-1].strip() if stderr else ""}


def soak_report(model: str, source: str, frames: int, out_dir: str) -> dict:
    """``streaming.report`` in a child: RSS every second, wall time."""
    cmd = [sys.executable, "-m", "streaming.report", "--model", model, "--source", source, "--repeat", "0",
           "--frames", str(frames), "--out", out_dir, "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rss = []
    while proc.poll() is None:
        mb = rss_mb(proc.pid)
        if mb is not None:
            rss.append((round(time.monotonic() - t0, 1), mb))
        time.sleep(1.0)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"soak: {' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    report = json.loads((Path(out_dir) / "report.json").read_text())
    return {"command": " ".join(cmd), "wall_s": time.monotonic() - t0, "peak_rss_mb": max(mb for _, mb in rss),
            "rss_mb_per_s": rss, "frames": report["frames"], "max_rel_logit_error": report["max_rel_logit_error"],
            "top1_agreement": report["top1_agreement"]}


def soak_error(model_path: str, bundle: str, source: str, frames: int, keyframe_interval: int, warmup: int) -> dict:
    """Engines against the Keras reference, per 1,000 frames; RSS of this process every 500 frames."""
    import deltanet
    from deltanet.models import per_frame_model
    from streaming.bundle import load_bundle
    from streaming.engine import DeltaEngine
    from streaming.reference import KerasReference
    from streaming.sources import open_source
    from training.export_check import CheckFailed, check_free_running, top1_agreement

    clip_model = deltanet.load_model(model_path)
    keras_ref, dense = KerasReference(clip_model), per_frame_model(clip_model)
    plan = load_bundle(bundle)
    engines = {"bundle": DeltaEngine(plan, threads=1), f"bundle, keyframe every {keyframe_interval}":
               DeltaEngine(plan, threads=1, keyframe_interval=keyframe_interval),
               "converted from .keras": DeltaEngine.from_keras(clip_model, threads=1)}
    for e in engines.values():
        e.warmup()
    logits = {name: [] for name in engines}
    reference, dense_logits, rss, batch = [], [], [], []
    t0 = time.monotonic()
    with open_source(source, repeat=0, max_frames=frames) as src:
        for n, frame in enumerate(src, 1):
            x = next(iter(engines.values())).prepare(frame.image)
            for name, e in engines.items():
                logits[name].append(e.step(x)[0])
            reference.append(keras_ref.step(x))
            batch.append(x)
            if len(batch) == 100:   # the dense network has no state: batches
                dense_logits.append(dense.predict_on_batch(np.stack(batch).astype(np.float32)))
                batch = []
            if n % RSS_EVERY == 0:
                rss.append((n, rss_mb()))
            if n % BLOCK == 0:
                log(f"error: {n} frames, {time.monotonic() - t0:.0f} s")
    if batch:
        dense_logits.append(dense.predict_on_batch(np.stack(batch).astype(np.float32)))
    reference, dense_logits = np.stack(reference), np.concatenate(dense_logits)
    out = {"frames": len(reference), "rss_mb": rss, **flatness(rss, warmup), "engines": {}}
    converted = np.stack(logits["converted from .keras"])
    for name, values in logits.items():
        got = np.stack(values)
        blocks = []
        for i in range(0, len(got), BLOCK):
            g, r, d = got[i:i + BLOCK], reference[i:i + BLOCK], dense_logits[i:i + BLOCK]
            err = np.abs(g - r).max(axis=1) / np.abs(r).max()
            try:
                envelope, within = check_free_running(g, r, d, 1e-4)["envelope"], True
            except CheckFailed as e:
                envelope, within = str(e), False
            blocks.append({"frames": f"{i}-{i + len(g) - 1}", "max_rel": float(err.max()),
                           "frames_over_1e-4": int((err > 1e-4).sum()), "top1": top1_agreement(g, r, 1e-4)[0],
                           "envelope": envelope, "within_envelope": within})
        out["engines"][name] = {"blocks": blocks, "equals_converted_bit_for_bit": bool(np.array_equal(got, converted))}
    return out


def markdown(result: dict) -> str:
    lines = [f"Source `{result['source']}` (played with `--repeat 0`), {result['frames']} frames, model "
             f"`{result['model']}`. {result['machine']}.", ""]
    lines += ["| live run | frames | RSS at 500 / 2000 / last (MB) | RSS range after warm-up (MB) | p50 / p99 latency per 1,000 frames (ms) |",
              "| --- | --- | --- | --- | --- |"]
    for name, r in result["live"].items():
        rss = dict(r["rss_mb"])
        pick = [rss.get(500), rss.get(2000), r["rss_mb"][-1][1] if r["rss_mb"] else None]
        lat = ", ".join(f"{b['p50']:.2f}/{b['p99']:.2f}" for b in r["latency_ms"])
        rng = r["after_warmup_range_mb"]
        lines.append(f"| {name} | {r['frames']} | {' / '.join('n/a' if v is None else f'{v:.0f}' for v in pick)} | "
                     f"{'n/a' if rng is None else f'{rng:.1f}'} | {lat} |")
    e = result["error"]
    rng = e["after_warmup_range_mb"]
    lines += ["", f"Engine against the Keras model (frame by frame, states carried), per 1,000 frames "
              f"(RSS of that process after warm-up: range {'n/a' if rng is None else f'{rng:.1f}'} MB):", "",
              "| engine | max rel err per block | frames > 1e-4 per block | top-1 agreement (min) | inside the flip envelope | = converted engine bit for bit |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, r in e["engines"].items():
        b = r["blocks"]
        errs = ", ".join(f"{x['max_rel']:.2g}" for x in b)
        over = ", ".join(str(x["frames_over_1e-4"]) for x in b)
        lines.append(f"| {name} | {errs} | {over} | {min(x['top1'] for x in b):.3f} | "
                     f"{all(x['within_envelope'] for x in b)} | {r['equals_converted_bit_for_bit'] or 'n/a'} |")
    if "report" in result:
        r = result["report"]
        lines += ["", f"`streaming.report --frames {r['frames']}`: {r['wall_s']:.0f} s wall, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"max rel logit error {r['max_rel_logit_error']:.3g}, top-1 agreement {r['top1_agreement']:.3f}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python scripts/soak.py", description="Soak test of live, report and the engine on a long stream.")
    p.add_argument("--model", required=True, help="a trained clip model (.keras)")
    p.add_argument("--source", required=True, help="a video file or synthetic: spec, played endlessly (--repeat 0)")
    p.add_argument("--frames", type=positive_int, default=10000, help="frames per run (default 10000)")
    p.add_argument("--keyframe-interval", type=positive_int, default=100, help="the keyframes-on runs (default 100)")
    p.add_argument("--warmup", type=positive_int, default=2000, help="frames before RSS must be flat (default 2000)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: live, error, report (default none)")
    p.add_argument("--json", default=None, help="write the full results here")
    args = p.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    from streaming.report import _machine

    result = {"model": args.model, "source": args.source, "frames": args.frames, "machine": _machine(),
              "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        from deltanet.cli import import_tensorflow_quietly

        import_tensorflow_quietly()
        from streaming.bundle import export_bundle

        bundle = str(export_bundle(args.model, Path(tmp) / "model.bundle"))
        if "live" not in skip:
            result["live"] = {}
            for kind, model in (("keras", args.model), ("bundle", bundle)):
                for kf in (None, args.keyframe_interval):
                    name = f"{kind}, keyframes {'off' if kf is None else f'every {kf}'}"
                    log(f"live: {name}")
                    result["live"][name] = soak_live(model, args.source, args.frames, kf, args.warmup)
        if "error" not in skip:
            log("error: engines against the Keras reference")
            result["error"] = soak_error(args.model, bundle, args.source, args.frames, args.keyframe_interval, args.warmup)
        if "report" not in skip:
            log("report")
            result["report"] = soak_report(args.model, args.source, args.frames, str(Path(tmp) / "report"))
    result["load_average_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if not skip:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
