"""How ``python -m training.export`` checks an export against the Keras model, float32 decisions included.

A threshold-mode delta model makes a decision per element and frame: ``|x_t - r_{t-1}| > theta``.
Two correct float32 implementations (Keras and TFLite, Keras and the delta engine, even Keras
with oneDNN on and off) sum in different orders, so an element whose ``|x - r|`` lies within
rounding of ``theta`` can fire in one and not in the other. From then on that reference
differs by up to ``theta`` until the element fires again, and the logits by ~1e-3 relative
(README, runtime section). Comparing free-running logits at a rounding tolerance therefore
fails on trained models for a reason that says nothing about the export. The checks here
tell such flips from real defects:

**Stateful exports** (SavedModel, TFLite, ONNX of a threshold model; ``check_resynced``).
Every frame, the Keras per-frame model (``deltanet.stream_model.stateful_frame_model``) is run
from the export's *own* previous states, so both compute one frame from identical inputs and
nothing can accumulate. Then, per state tensor in graph order:

* elements that agree within ``delta = tol * max|r|`` of that tensor are fine;
* a disagreement is a flip if exactly one side kept its reference (``r = r_{t-1}``) and the
  other fired (``r = x``), and it is accepted only if the decision was marginal: with ``x``
  the value of the side that fired, ``| |x - r_{t-1}| - theta | <= delta`` (the first layer
  that differs has identical inputs on both sides up to rounding, so this is exact);
* an accepted flip is imposed on Keras by nudging its input reference by ``2 * delta`` (Keras
  then makes the export's decision) and Keras is rerun, so the next differing layer is
  again tested on identical inputs.

When every state agrees, the logits must agree within ``tol`` (max abs error over the largest
reference logit). So every frame of the export equals the Keras frame function up to float32
rounding and decisions within rounding of their threshold; a wrong weight, a wrong threshold
or an ignored state input fails. The free-running error and top-1 agreement against the clip
model are reported too.

**The bundle** (``check_bundle``). The engine exposes no states, so two checks: (a) the engine
loaded from the bundle equals the engine converted from the Keras model *bit for bit* on the
check clip (same plan, same arithmetic: any difference is a bundle defect); (b) the engine
agrees with Keras within the documented float32 behaviour (``check_free_running``): frames up
to the first one over ``tol`` are exact by definition; on every frame top-1 agrees (where
Keras' top-2 gap exceeds rounding, ``2 * tol``), and the error stays within the *lag
envelope*: the largest distance so far between Keras' delta model and its dense network
(``deltanet.models.per_frame_model``), plus ``tol``. Justification: every reference of either
implementation lags its input by at most ``theta`` (the hysteresis invariant ``|r - x| <=
theta``); the delta model's distance to its dense network is the effect of *all* non-firing
elements lagging at once, a flip is one element lagging differently, so a flip moves the
logits less than the thresholding itself does.
"""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np


class CheckFailed(Exception):
    """The exported model does not reproduce the Keras model within the format's tolerance (exit 1)."""


def check_clip(height: int, width: int, channels: int = 3, frames: int = 6, seed: int = 0) -> np.ndarray:
    """A smooth random clip ``(1, frames, height, width, channels)``, float32 integers in 0..255.

    A few slowly moving random sinusoids per channel: neighbouring frames differ a little, so
    thresholded deltas are sparse and the state of a threshold model matters.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    clip = np.zeros((frames, height, width, channels), np.float64)
    for c in range(channels):
        for _ in range(4):
            fy, fx = rng.uniform(0.5, 3.0, 2) * 2 * np.pi
            phase, speed, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.3), rng.uniform(20, 50)
            for t in range(frames):
                clip[t, :, :, c] += amp * np.sin(fy * yy + fx * xx + phase + speed * t)
    clip = np.clip(np.rint(127.5 + clip), 0, 255)
    return clip[None].astype("float32")


def compare(got, reference) -> dict:
    """``max_abs`` error and ``max_rel`` = max abs error / max abs reference (the logit scale)."""
    got = np.asarray(got, np.float64)
    reference = np.asarray(reference, np.float64)
    if got.shape != reference.shape:
        raise CheckFailed(f"the export returns per-frame logits of shape {got.shape}, expected {reference.shape}")
    max_abs = float(np.max(np.abs(got - reference))) if got.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return {"max_abs": max_abs, "max_rel": max_abs / max(scale, 1e-12)}


def top1_agreement(got, reference, slack) -> tuple[float, list[int]]:
    """Share of frames (of one stream, ``(time, classes)``) whose top-1 agrees, and the frames that
    disagree although the reference's top-2 gap exceeds twice the allowed error ``slack`` (relative
    to ``max|reference|``; a scalar or one value per frame): closer classes may swap legitimately."""
    got, reference = np.asarray(got, np.float64), np.asarray(reference, np.float64)
    agree = got.argmax(-1) == reference.argmax(-1)
    top2 = np.sort(reference, axis=-1)[:, -2:] if reference.shape[-1] > 1 else np.zeros((len(reference), 2))
    decidable = top2[:, 1] - top2[:, 0] > 2 * np.asarray(slack) * max(float(np.abs(reference).max()), 1e-12)
    return float(agree.mean()) if agree.size else 1.0, [int(t) for t in np.flatnonzero(~agree & decidable)]


# --- stateful exports: Keras resynced to the export's states -----------------------------------


def state_thresholds(stream_model) -> list[tuple[str, np.ndarray]]:
    """``(state name, theta)`` of every threshold state of a ``stateful_frame_model``, in graph order."""
    from deltanet.stream_model import STATE_SUFFIX, FrameThreshold

    return [
        (layer.name + STATE_SUFFIX, np.asarray(layer.threshold.numpy(), np.float32))
        for layer in stream_model.layers
        if isinstance(layer, FrameThreshold)
    ]


def _first_mismatch(order, exported: dict, keras_out: dict, allowance: dict, tol: float):
    """The first state (graph order) where the export and Keras differ beyond ``allowance`` (or None)."""
    for name, _ in order:
        delta = tol * max(float(np.abs(keras_out[name]).max()), 1e-12)
        if np.any(np.abs(exported[name] - keras_out[name]) > allowance.get(name, 1.0) * delta):
            return name, delta
    return None, 0.0


def _accept_flips(name, theta, before, exported, keras_out, delta, where: str):
    """Classify the disagreements of one state; return (mask of flips, Keras' nudged input reference).

    The nudge makes Keras take the export's decision. Where the export fired and Keras kept
    its reference, Keras' input reference moves ``2 * delta`` away from ``x`` (Keras then
    fires, and its output ``x`` does not depend on the reference). Where Keras fired and the
    export kept it, the reference moves to the float32 value from which ``x`` is exactly
    ``theta`` away (Keras then keeps that value, which differs from ``r_{t-1}`` by the margin
    alone, so downstream layers see a rounding-level difference). Raises ``CheckFailed`` when
    a disagreement is not a marginal threshold decision.
    """
    mismatch = np.abs(exported - keras_out) > delta
    theta = np.broadcast_to(np.asarray(theta, np.float32), before.shape)
    kept_e = np.abs(exported - before) <= theta / 2   # a fired element moved by more than theta
    kept_k = np.abs(keras_out - before) <= theta / 2
    flip = mismatch & (kept_e != kept_k)
    values = mismatch & ~flip
    if values.any():
        worst = float(np.abs(exported - keras_out)[values].max())
        raise CheckFailed(
            f"{where}: state {name!r} differs from Keras in {int(values.sum())} element(s) that are not threshold "
            f"decisions (max abs diff {worst:.3g}, rounding tolerance {delta:.3g})"
        )
    x = np.where(kept_e, keras_out, exported)   # the value of the side that fired
    margin = np.abs(np.abs(x - before) - theta)
    if np.any(margin[flip] > delta):
        worst = float(margin[flip].max())
        raise CheckFailed(
            f"{where}: state {name!r} makes {int((margin[flip] > delta).sum())} threshold decision(s) unlike Keras "
            f"that are not marginal (| |x - r| - theta | up to {worst:.3g}, rounding tolerance {delta:.3g})"
        )
    toward_x = np.sign(x - before).astype(np.float32)
    fed = np.where(flip & ~kept_e, before - toward_x * np.float32(2 * delta), before).astype(np.float32)
    at_theta = (x - toward_x * theta).astype(np.float32)
    for _ in range(8):   # float32 rounding of x - theta: step towards x until |x - r| <= theta holds
        too_far = np.abs(x - at_theta) > theta
        if not too_far.any():
            break
        at_theta = np.where(too_far, np.nextafter(at_theta, x), at_theta).astype(np.float32)
    return flip, np.where(flip & kept_e, at_theta, fed)


def check_resynced(
    call: Callable[[dict], dict],
    stream_model,
    clip: np.ndarray,
    tol: float,
    state_out: Callable[[str], str] = lambda name: name,
) -> dict:
    """Check a stateful export frame by frame against Keras run from the export's own states.

    Args:
        call: the export, ``inputs dict -> outputs dict`` (numpy), names as in
            ``stateful_frame_model`` (new states under ``state_out(name)``).
        stream_model: the Keras ``stateful_frame_model`` that was exported.
        clip: ``(1, time, H, W, C)`` float32 frames.
        tol: rounding tolerance, relative to the largest value of each tensor.

    Returns the export's per-frame logits ``"logits"`` ``(1, time, classes)``, ``"max_rel"`` and
    ``"max_abs"`` (the resynced logit error), ``"flips"`` (marginal decisions accepted) and
    ``"flip_frames"``. Raises ``CheckFailed`` (see the module docstring for the rules).
    """
    from deltanet.stream_model import FRAME_INPUT, LOGITS_OUTPUT, initial_states
    from streaming.reference import step_stream_model

    order = state_thresholds(stream_model)
    states = initial_states(stream_model, batch=clip.shape[0])
    logits, worst_abs, worst_rel, flips, flip_frames = [], 0.0, 0.0, 0, []
    for t in range(clip.shape[1]):
        frame = clip[:, t]
        out = call({FRAME_INPUT: frame, **states})
        exported = {name: np.asarray(out[state_out(name)]) for name, _ in order}
        got = np.asarray(out[LOGITS_OUTPUT])
        fed, allowance = dict(states), {}
        for _ in range(len(order) + 1):
            reference = step_stream_model(stream_model, frame, fed)
            name, delta = _first_mismatch(order, exported, reference, allowance, tol)
            if name is None:
                break
            theta = dict(order)[name]
            where = f"frame {t}"
            flip, nudged = _accept_flips(name, theta, states[name], exported[name], reference[name], delta, where)
            fed[name] = np.where(flip, nudged, fed[name])
            # a nudged element's margin itself may sit at the tolerance
            allowance[name] = np.where(flip | (allowance.get(name, 1.0) > 1.0), 2.0, 1.0)
            flips += int(flip.sum())
            if not flip_frames or flip_frames[-1] != t:
                flip_frames.append(t)
        else:
            raise CheckFailed(f"frame {t}: Keras could not be brought to the export's decisions")
        err = compare(got, reference[LOGITS_OUTPUT])
        if err["max_rel"] > tol:
            raise CheckFailed(
                f"frame {t}: with the same states as the export, Keras' logits differ by max rel err "
                f"{err['max_rel']:.3g} > {tol:g}"
            )
        worst_abs, worst_rel = max(worst_abs, err["max_abs"]), max(worst_rel, err["max_rel"])
        logits.append(got)
        states = {name: exported[name] for name, _ in order}
    return {"logits": np.stack(logits, axis=1), "max_abs": worst_abs, "max_rel": worst_rel, "flips": flips,
            "flip_frames": flip_frames}


# --- the delta engine: free running, flip-aware -------------------------------------------------


def check_free_running(got, reference, dense, tol: float) -> dict:
    """Engine logits ``got`` against Keras' ``reference`` (both ``(time, classes)``, one stream), flip-aware.

    ``dense`` are the dense network's logits on the same frames (the lag envelope; see the
    module docstring). Every frame's error must be within the envelope so far, and top-1 must
    agree wherever Keras' top-2 gap exceeds twice that (closer classes may swap after a flip;
    the envelope implies this, it is checked to say so plainly). Returns ``max_abs``,
    ``max_rel``, ``first_frame_over_tol``, ``top1_agreement`` (over all frames) and ``envelope``
    (the largest allowed relative error); raises ``CheckFailed``.
    """
    got, reference, dense = (np.asarray(a, np.float64) for a in (got, reference, dense))
    report = compare(got, reference)
    scale = max(float(np.abs(reference).max()), 1e-12)
    err = np.abs(got - reference).max(axis=-1) / scale
    allowed = np.maximum.accumulate(np.abs(dense - reference).max(axis=-1) / scale) + tol
    over = np.flatnonzero(err > tol)
    report["first_frame_over_tol"] = int(over[0]) if over.size else None
    report["envelope"] = float(allowed.max())
    outside = np.flatnonzero(err > allowed)
    if outside.size:
        t = int(outside[0])
        raise CheckFailed(
            f"frame {t}: rel err {err[t]:.3g} exceeds what float32 decision flips can explain (the delta model's "
            f"own lag behind its dense network so far, {allowed[t] - tol:.3g}, + {tol:g})"
        )
    report["top1_agreement"], wrong = top1_agreement(got, reference, np.where(err > tol, allowed, tol))
    if wrong:
        raise CheckFailed(f"top-1 differs from Keras on frame(s) {wrong[:5]} where Keras' top-2 gap is not a tie")
    return report


def check_bundle(path, clip_model, clip: np.ndarray, tol: float) -> dict:
    """(a) the bundle's engine equals the engine converted from ``clip_model`` bit for bit on ``clip``;
    (b) it agrees with Keras (``check_free_running``). Returns the report of (b) plus ``logits``."""
    from deltanet.models import frame_logits_model, per_frame_model
    from streaming.bundle import load_bundle
    from streaming.engine import DeltaEngine

    frames = clip[0]
    loaded, _ = DeltaEngine(load_bundle(path)).run(frames)
    converted, _ = DeltaEngine.from_keras(clip_model).run(frames)
    if loaded.shape != converted.shape or not np.array_equal(loaded, converted):
        diff = np.abs(loaded - converted).max() if loaded.shape == converted.shape else float("nan")
        raise CheckFailed(
            f"the engine loaded from the bundle differs from the engine converted from the Keras model "
            f"(max abs diff {diff:.3g}; they must be bit for bit equal): the bundle is damaged"
        )
    reference = frame_logits_model(clip_model).predict(clip, verbose=0)[0]
    dense = per_frame_model(clip_model).predict(frames, verbose=0)
    report = check_free_running(loaded, reference, dense, tol)
    report["logits"] = loaded[None]
    return report


# --- running each format -------------------------------------------------------------------------


def _savedmodel_runner(path):
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda inputs: {k: v.numpy() for k, v in serve(**inputs).items()}


def tflite_interpreter(path):
    """The TFLite interpreter (ai_edge_litert if installed, else tf.lite) and its name."""
    from deltanet.cli import quiet_stderr_fd

    try:
        from ai_edge_litert.interpreter import Interpreter

        name = "ai_edge_litert.interpreter.Interpreter"
    except ImportError:
        import tensorflow as tf

        Interpreter, name = tf.lite.Interpreter, "tf.lite.Interpreter"
    with quiet_stderr_fd():
        interpreter = Interpreter(model_path=str(path))
    return interpreter, name


def _tflite_runner(path):
    from deltanet.cli import quiet_stderr_fd

    interpreter, name = tflite_interpreter(path)
    log(f"check tflite: running the .tflite file in {name} (signature runner 'serving_default')")
    with quiet_stderr_fd():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        runner = interpreter.get_signature_runner("serving_default")
    return lambda inputs: runner(**inputs)


def _onnx_runner(path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(None, inputs)))


#: Suffix of the new-state outputs of an ONNX export (ONNX names must be unique in a graph).
ONNX_STATE_OUT_SUFFIX = "_out"
RUNNERS = {"savedmodel": _savedmodel_runner, "tflite": _tflite_runner, "onnx": _onnx_runner}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_export(fmt: str, path, clip_model, stream_model, clip: np.ndarray, tol: float) -> dict:
    """Check the artifact at ``path`` of format ``fmt`` against ``clip_model``; returns the report fields.

    ``keras``: the reloaded clip model on the clip, same graph and arithmetic (``max_rel <= tol``).
    ``savedmodel``/``tflite``/``onnx``: ``check_resynced`` (plus the free-running error and top-1
    agreement against the clip model, reported). ``bundle``: ``check_bundle``.
    """
    from deltanet.models import frame_logits_model

    if fmt == "bundle":
        report = check_bundle(path, clip_model, clip, tol)
    elif fmt == "keras":
        from deltanet.saving import load_model

        got = frame_logits_model(load_model(path, compile=False)).predict(clip, verbose=0)
        report = {**compare(got, frame_logits_model(clip_model).predict(clip, verbose=0)), "logits": got}
        if report["max_rel"] > tol:
            raise CheckFailed(f"the reloaded model differs: max rel err {report['max_rel']:.3g} > {tol:g}")
    else:
        suffix = ONNX_STATE_OUT_SUFFIX if fmt == "onnx" else ""
        report = check_resynced(RUNNERS[fmt](path), stream_model, clip, tol, lambda name: name + suffix)
        reference = frame_logits_model(clip_model).predict(clip, verbose=0)
        free = compare(report["logits"], reference)
        report["free_max_rel"] = free["max_rel"]
        report["top1_agreement"] = top1_agreement(report["logits"][0], reference[0], tol)[0]   # reported
    return report


def describe_check(fmt: str, r: dict) -> str:
    """One line of what the check of ``fmt`` compared and found (``r``: ``check_export``'s report)."""
    exact = f"max rel err {r['max_rel']:.3g} (tolerance {r['tolerance']:g})"
    if fmt == "keras":
        return f"the reloaded clip model: {exact}"
    if fmt == "bundle":
        first = r["first_frame_over_tol"]
        exact = ("exact to {:g} on every frame" if first is None else "over {:g} from frame 0" if first == 0
                 else f"exact to {{:g}} up to frame {first - 1}").format(r["tolerance"])
        return (f"the bundle's engine equals the engine converted from the Keras model bit for bit; against Keras: "
                f"max rel err {r['max_rel']:.3g} ({exact}), within the flip envelope {r['envelope']:.3g}, "
                f"top-1 agreement {r['top1_agreement']:.3f}")
    flips = f", {r['flips']} marginal threshold decision(s) accepted (frames {r['flip_frames']})" if r["flips"] else ""
    return (f"{len(r['states'])} state tensor(s) carried, Keras run from the export's own states: {exact}{flips}; "
            f"free-running against the clip model: max rel err {r['free_max_rel']:.3g}, "
            f"top-1 agreement {r['top1_agreement']:.3f}")
