"""Choosing, by measurement, the delta MAC kernel per layer and when a layer falls back to dense.

Element-wise scatter wins when few channels of an active pixel changed; pixel-wise gather +
dense product wins when active pixels change in most channels. Which one holds depends on
the layer and the video, so it is measured: run the same frames with each kernel choice and
keep, for each MAC layer, the fastest median time (its encoder included). The kernel choice
is a per-frame parameter of the interpreter, so one profiled engine measures every choice.

The dense fallback's break-even (``DeltaEngine(..., breakeven=)``) is measured per layer too,
on synthetic deltas rather than frames (a clip rarely spans the densities needed): the
layer's chosen delta kernel at several densities against its dense kernel.

Both together are a *tuning* (:func:`tune`): a small JSON record (:func:`save_tuning`) that
``streaming.bench --save-tuning`` and ``python -m streaming.tune`` write and ``streaming.live`` /
``streaming.report`` / ``training.evaluate --streaming`` load (``--tuning``; by default the file
saved beside the model, :func:`tuning_path`), so a deployed engine runs the kernels that were
measured on frames it never times, instead of the untuned defaults (element-wise kernels, fall
back only when a layer's whole input changed).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ops import interpreter as ip
from streaming.engine import GRANULARITIES, KERNEL_CHOICES, DeltaEngine
from streaming.plan import Plan


def measure_layer_ms(engine: DeltaEngine, frames: np.ndarray, granularity: str, repeats: int = 2) -> np.ndarray:
    """Median per-MAC-layer milliseconds over ``frames`` (after the first) at one kernel choice.

    ``engine`` must profile (``profile=True``); its kernel choice is changed to ``granularity``.
    """
    if not engine.profile:
        raise ValueError("measure_layer_ms needs an engine built with profile=True")
    engine.granularity = granularity
    return np.median(np.stack([s.layer_ms for s in _delta_frames(engine, frames, repeats)]), axis=0)


def _delta_frames(engine: DeltaEngine, frames: np.ndarray, repeats: int) -> list:
    """``FrameStats`` of the delta frames of ``repeats`` passes over ``frames``, each from a reset,
    after a warm-up (``engine``'s stream is restarted)."""
    engine.warmup()
    stats = []
    for _ in range(repeats):
        engine.reset()
        for f in frames:
            _, s = engine.step(f)
            if not s.keyframe:
                stats.append(s)
    return stats


def tune_granularity(plan: Plan, frames: np.ndarray, threads: int | None = None) -> dict[str, str]:
    """``{mac layer name: kernel choice}``, whichever measured fastest on ``frames``.

    With ``threads > 1`` the parallel variants compete too: a parallel region costs
    microseconds to open, which only large layers pay back.
    """
    if len(frames) < 2:
        raise ValueError("tune_granularity needs at least 2 frames")
    choices = KERNEL_CHOICES if threads and threads > 1 else GRANULARITIES
    engine = DeltaEngine(plan, threads=threads, profile=True)
    times = {g: measure_layer_ms(engine, frames, g) for g in choices}

    def applicable(g: str, layer) -> bool:  # patch-wise is a Conv2D kernel (1x1: the pixel-wise one)
        return not g.startswith("patch") or layer.kind == ip.MAC_CONV

    return {m.name: min((g for g in choices if applicable(g, m)), key=lambda g: times[g][i])
            for i, m in enumerate(engine.program.mac_layers)}  # fmt: skip


#: delta fractions at which ``tune_fallback`` times each layer's delta kernel
FALLBACK_DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)


def crossover(densities, delta_ns, dense_ns: float) -> float:
    """The delta fraction at which the delta kernel's time (``delta_ns`` at ``densities``,
    ascending) first reaches ``dense_ns``, linearly interpolated; ``inf`` if it never does
    (and, below the first density, assuming time proportional to density)."""
    prev_d, prev_t = 0.0, 0.0
    for d, t in zip(densities, delta_ns):
        if t >= dense_ns:
            return prev_d + (d - prev_d) * (dense_ns - prev_t) / (t - prev_t)
        prev_d, prev_t = d, t
    return math.inf


def tune_fallback(engine: DeltaEngine, densities=FALLBACK_DENSITIES, reps: int = 7) -> dict[str, float]:
    """``{mac layer name: break-even delta fraction}`` for ``engine``'s kernel choice and threads.

    Per layer: its chosen delta kernel on synthetic deltas (a random ``d`` of the input pixels
    active, every channel non-zero, so the element and pixel fractions that
    ``ops.interpreter.delta_fraction`` compares are both ``d``) at each density, its dense
    kernel timed beside each, then the crossover (``crossover``). Each time is the fastest of
    ``reps`` runs: the work is deterministic, so anything slower is the machine's load. Runs
    on a clone; ``engine`` is not touched. Assign the result with ``engine.breakeven = ...``;
    re-tune after changing ``granularity``.
    """
    scratch = engine.clone(profile=False, worker_stats=False)
    rng = np.random.default_rng(0)
    out = {}
    for i, m in enumerate(scratch.program.mac_layers):
        hw = m.in_shape[0] * m.in_shape[1]
        scratch.time_mac_layer(i, None, 1)  # warm the caches
        dense_ns, fractions, delta_ns = math.inf, [], []
        for d in densities:
            n = max(1, min(hw, round(d * hw)))
            active = np.sort(rng.choice(hw, n, replace=False)).astype(np.int32)
            fractions.append(n / hw)
            delta_ns.append(float(scratch.time_mac_layer(i, active, reps).min()))
            dense_ns = min(dense_ns, float(scratch.time_mac_layer(i, None, reps).min()))
        out[m.name] = crossover(fractions, delta_ns, dense_ns)
    return out


def tune_dense_parallel(engine: DeltaEngine, reps: int = 7) -> dict[str, bool]:
    """``{mac layer name: bool}``: whether each layer's dense kernel is faster split among the
    threads (the fastest of ``reps`` runs each way). All False for a single-threaded engine.
    Runs on a clone; ``engine`` is not touched (assign with ``engine.dense_parallel = ...``)."""
    if not engine.parallel:
        return {n: False for n in engine.layer_names}
    names = engine.layer_names
    ns = {}
    for par in (False, True):
        scratch = engine.clone(profile=False, worker_stats=False, dense_parallel={n: par for n in names})
        for i in range(len(names)):
            scratch.time_mac_layer(i, None, 1)  # warm the caches
            ns[par, i] = float(scratch.time_mac_layer(i, None, reps).min())
    return {n: ns[True, i] < ns[False, i] for i, n in enumerate(names)}


#: shares of the last tuning frame's ``REFRESH_TILE``-pixel tiles that ``tune_refresh``'s synthetic cuts replace
REFRESH_CUTS = (0.25, 0.5, 0.75, 1.0)


def tune_refresh(engine: DeltaEngine, frames: np.ndarray, cuts=REFRESH_CUTS, repeats: int = 2, reps: int = 3) -> float | None:
    """The first encoder's tile occupancy (``DeltaEngine.occupancy``) at and above which a refresh
    frame (``DeltaEngine(refresh_at=)``) is faster than ``engine``'s delta frame; ``None`` if it
    never is, 0.0 if it always is.

    Points (occupancy, ms of the delta frame): every delta frame of ``frames`` (the fastest of
    ``repeats`` passes from a reset), and synthetic cuts of the last frame in which a share ``c``
    of its tiles, chosen at random, shows the first frame upside down (another picture; the
    fastest of ``reps`` runs, each after a keyframe and a delta frame). A line fitted to them is
    crossed with the fastest refresh frame of the same cuts. Real frames alone rarely span the
    occupancies of a cut or a pan; cuts alone change whole tiles, where a real frame changes a
    few pixels in each (denser early layers: the break-even leans towards refreshing). Runs on
    clones; ``engine`` is not touched (assign with ``engine.refresh_at = ...``). Re-tune after
    changing the kernel choice or the break-evens.
    """
    if len(frames) < 2:
        raise ValueError("tune_refresh needs at least 2 frames")
    delta = engine.clone(profile=False, worker_stats=False, refresh_at=None)
    refresh = engine.clone(profile=False, worker_stats=False, refresh_at=0.0)
    best: dict[int, tuple[float, float]] = {}
    delta.warmup()
    for _ in range(repeats):
        delta.reset()
        for i, f in enumerate(frames):
            _, s = delta.step(f)
            if i > 0:
                best[i] = (delta.occupancy, min(best.get(i, (0.0, math.inf))[1], s.total_ms))
    points = list(best.values())
    prev, base = frames[-2], frames[-1]
    other = np.ascontiguousarray(frames[0][::-1, ::-1])
    h, w = base.shape[:2]
    t = ip.REFRESH_TILE
    tiles = [(y, x) for y in range(0, h, t) for x in range(0, w, t)]
    rng = np.random.default_rng(0)
    refresh_ms = math.inf
    for c in cuts:
        cut = base.copy()
        for k in rng.choice(len(tiles), max(1, round(c * len(tiles))), replace=False):
            y, x = tiles[k]
            cut[y : y + t, x : x + t] = other[y : y + t, x : x + t]
        ms = {}
        for _ in range(reps):
            for name, e in (("delta", delta), ("refresh", refresh)):
                e.reset()
                e.step(prev)
                e.step(base)
                _, s = e.step(cut)
                ms[name] = min(ms.get(name, math.inf), s.total_ms)
        points.append((delta.occupancy, ms["delta"]))
        refresh_ms = min(refresh_ms, ms["refresh"])
    occ, ms_ = np.array(points).T
    slope, intercept = np.polyfit(occ, ms_, 1) if np.ptp(occ) > 0 else (0.0, float(np.median(ms_)))
    if intercept + slope * 1.0 < refresh_ms:  # a delta frame is cheaper even with every tile changed
        return None
    return float(min(1.0, max(0.0, (refresh_ms - intercept) / slope))) if slope > 0 else 0.0


#: bumped when the record's meaning changes; older records are refused, not guessed at
TUNING_VERSION = 1


def tune(engine: DeltaEngine, frames: np.ndarray, refresh: bool = False) -> dict:
    """Measure ``engine``'s kernel choice on ``frames``, its dense kernels' parallelism and its
    fallback break-evens (and with ``refresh``, the occupancy from which refresh frames pay:
    :func:`tune_refresh`), apply them to ``engine``, and return them as a tuning record
    (:func:`save_tuning`)."""
    engine.granularity = tune_granularity(engine.plan, frames, threads=engine.threads)
    engine.dense_parallel = tune_dense_parallel(engine)  # before the break-evens, which time the dense kernels
    if engine.fallback:
        engine.breakeven = tune_fallback(engine)
    check_tuning(engine, frames)
    if refresh:
        engine.refresh_at = tune_refresh(engine, frames)
    return tuning_record(engine, len(frames))


def frame_ms(engine: DeltaEngine, frames: np.ndarray, repeats: int = 2) -> float:
    """Median milliseconds per delta frame of ``engine`` on ``frames`` (from a reset; the keyframe
    not counted), on a clone: ``engine``'s stream is not touched."""
    scratch = engine.clone(profile=False, worker_stats=False)
    return float(np.median([s.total_ms for s in _delta_frames(scratch, frames, repeats)]))


def check_tuning(engine: DeltaEngine, frames: np.ndarray) -> dict:
    """The per-layer choices are measured layer by layer (break-evens on synthetic deltas), so the
    whole frame is checked too: ``engine`` as tuned, without the fallback, with the untuned
    kernels (element-wise, no fallback) and, if the fallback is on, with every layer falling back
    whenever it receives a delta, each run ``frames``; the fastest setting is kept (assigned to
    ``engine``). Returns ``{setting: ms per frame}``."""
    tuned = dict(granularity=engine.granularity, breakeven=engine.breakeven)
    never = {n: math.inf for n in engine.layer_names}
    settings = {"tuned": tuned, "tuned, no fallback": dict(granularity=tuned["granularity"], breakeven=never),
                "element-wise, no fallback": dict(granularity="element", breakeven=never)}
    if engine.fallback:  # every layer that receives a delta runs dense: the closest a delta stream gets to dense mode
        settings["every layer dense"] = dict(granularity=tuned["granularity"], breakeven={n: 1e-9 for n in engine.layer_names})
    ms = {}
    for name, setting in settings.items():
        engine.granularity, engine.breakeven = setting["granularity"], setting["breakeven"]
        ms[name] = frame_ms(engine, frames)
    best = min(ms, key=ms.get)
    engine.granularity, engine.breakeven = settings[best]["granularity"], settings[best]["breakeven"]
    engine.tuning_check = {"ms_per_frame": ms, "kept": best}
    return ms


def tuning_record(engine: DeltaEngine, tuning_frames: int) -> dict:
    """``engine``'s kernel choice and break-evens as a JSON-able record (``None``: never fall back)."""
    return {
        "version": TUNING_VERSION,
        "threads": engine.threads,
        "tuning_frames": int(tuning_frames),
        "granularity": engine.granularity,
        "breakeven": {k: (float(v) if math.isfinite(v) else None) for k, v in engine.breakeven.items()},
        "dense_parallel": engine.dense_parallel,
        "refresh_at": engine.refresh_at,  # refresh frames from this tile occupancy on (None: off)
        "check": engine.tuning_check,  # check_tuning: whole-frame ms of each setting, the one kept
    }


class TuningMismatch(ValueError):
    """A saved tuning that does not belong to this engine (another thread count, model or version)."""


def apply_tuning(engine: DeltaEngine, tuning: dict) -> None:
    """Give ``engine`` a saved tuning; ``TuningMismatch`` (one line) if it was measured for another
    model or thread count, since kernel choices and break-evens do not transfer between them."""
    if tuning.get("version") != TUNING_VERSION:
        raise TuningMismatch(f"tuning version {tuning.get('version')!r}, this deltanet reads version {TUNING_VERSION}: re-tune")
    if tuning.get("threads") != engine.threads:
        raise TuningMismatch(f"tuning was measured at threads={tuning.get('threads')}, the engine runs threads={engine.threads}: "
                             "re-tune, or run with the tuning's thread count (--threads)")  # fmt: skip
    names = set(engine.layer_names)
    for key in ("granularity", "breakeven"):
        got = set(tuning.get(key) or {})
        if got != names:
            raise TuningMismatch(f"tuning {key} does not match the model's MAC layers (missing {sorted(names - got)[:3]}, "
                             f"unknown {sorted(got - names)[:3]}): it was measured for another model")  # fmt: skip
    engine.granularity = dict(tuning["granularity"])
    # records written before dense kernels could run in parallel measured their break-evens
    # against the serial dense kernels: keep those
    engine.dense_parallel = {n: bool((tuning.get("dense_parallel") or {}).get(n, False)) for n in engine.layer_names}
    engine.breakeven = {k: (math.inf if v is None else float(v)) for k, v in tuning["breakeven"].items()}
    if engine.mode == "delta":  # (records without the key: refresh frames off; dense mode has no delta frames)
        engine.refresh_at = tuning.get("refresh_at")


def tuning_path(model_path: str | os.PathLike) -> Path:
    """Where a model's tuning is saved by default: ``tuning.json`` inside a bundle folder,
    ``NAME.tuning.json`` beside a file (``model.keras`` -> ``model.tuning.json``)."""
    path = Path(model_path)
    return path / "tuning.json" if path.is_dir() else path.with_name(path.stem + ".tuning.json")


def save_tuning(tuning: dict, path: str | os.PathLike) -> Path:
    """Write a tuning record atomically (a temporary file renamed: never half-written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(tuning, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_tuning(path: str | os.PathLike) -> dict:
    """Read a tuning record; ``ValueError`` (one line) if it is not one."""
    try:
        tuning = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read tuning {path}: {' '.join(str(e).split())}") from e
    if not isinstance(tuning, dict) or not isinstance(tuning.get("granularity"), dict) or not isinstance(tuning.get("breakeven"), dict):
        raise ValueError(f"{path} is not a deltanet tuning (no granularity/breakeven tables)")
    return tuning


def use_tuning(engine: DeltaEngine, spec: str, model_path: str | os.PathLike, log=None) -> Path | None:
    """The CLIs' ``--tuning``: ``"auto"`` (the file :func:`tuning_path` names, if there is one),
    ``"none"`` (untuned defaults) or a path. Returns the file applied, if any; ``CliError``
    (one line) if it cannot be. Under ``"auto"`` a file measured for another thread count or
    model is not an error (the user did not ask for it): the run goes on untuned and ``log``
    says why."""
    from deltanet.cli import CliError

    if spec == "none":
        return None
    path = tuning_path(model_path) if spec == "auto" else Path(spec)
    if spec == "auto" and not path.is_file():
        return None
    if not path.is_file():
        raise CliError(f"--tuning: no such file: {spec}")
    try:
        apply_tuning(engine, load_tuning(path))
    except TuningMismatch as e:
        if spec != "auto":
            raise CliError(f"--tuning {path}: {e}") from e
        if log is not None:
            log(f"tuning: {path} not used ({e}); running untuned")
        return None
    except ValueError as e:
        raise CliError(f"--tuning {path}: {e}") from e
    if log is not None:
        refresh = "" if engine.refresh_at is None else f"; refresh frames from a tile occupancy of {engine.refresh_at:.2f}"
        log(f"tuning: {path} (kernel choice and fallback break-evens{refresh})")
    return path
