"""``python -m training.export``: export a trained clip model for deployment, and check the export.

Usage::

    python -m training.export --model runs/fit/model.keras --format tflite --out model.tflite

Formats
-------

| format       | what is written                                   | what it is for                                   | run by the check                                         | tolerance |
|--------------|---------------------------------------------------|--------------------------------------------------|----------------------------------------------------------|-----------|
| `keras`      | the clip model, re-saved as a `.keras` file (no optimizer) | training, `deltanet` tools, streaming converter | reloading it with `deltanet.load_model` (safe mode) and running `frame_logits_model` on the clip | 1e-5 |
| `savedmodel` | a SavedModel folder of the per-frame model, signature `serving_default` (also callable as `.serve`) | TF Serving, TF.js, further conversion | `tf.saved_model.load(out).signatures["serving_default"]`, frame by frame, states carried | 1e-5 |
| `tflite`     | a float32 `.tflite` flatbuffer (`TFLiteConverter.from_saved_model` on that SavedModel, no optimizations), signature `serving_default` | mobile / embedded CPU (XNNPACK) | the TFLite interpreter `ai_edge_litert.interpreter.Interpreter` (falls back to `tf.lite.Interpreter` when ai-edge-litert is not installed) through `get_signature_runner("serving_default")`, states carried by name | 1e-3 |
| `onnx`       | an `.onnx` model (opset 17) converted by `tf2onnx.convert.from_function` | ONNX Runtime, TensorRT, OpenVINO | `onnxruntime.InferenceSession` (CPU provider), states carried | 1e-4 |
| `bundle`     | a folder: `manifest.json` (versioned, schema-checked) + `weights.npz` (no pickle) | the CPU delta runtime without TensorFlow (`streaming.live --model BUNDLE`) | the delta engine loaded from the bundle, and the one converted from the Keras model | bit for bit; 1e-4 |

Every exported per-frame model has the interface of ``deltanet.stream_model.stateful_frame_model``:
inputs ``frame`` ``(batch, H, W, 3)`` float32 (RGB, values 0..255; the model rescales) plus,
for threshold-mode delta models, one state ``<delta_name>_ref`` per ``DeltaActivation``
(start with zeros); outputs ``logits`` ``(batch, classes)`` plus the new states under the
same names, to feed back with the next frame. Baselines and quantize-mode models have no
state tensors. ONNX forbids an input and an output of the same name, so there the new
states come out as ``<delta_name>_ref_out`` (feed ``X_ref_out`` back as ``X_ref``).

The check: a short smooth random clip (``--frames``, default 6, ``--seed``) goes through the
Keras model and through the exported artifact frame by frame; what is compared, and how
float32 threshold decisions that flip between two correct implementations are told from
defects, is ``training.export_check`` (its docstring states the rules). In short: a stateful
export (SavedModel, TFLite, ONNX) must equal the Keras per-frame model run from the export's
own states to the format's tolerance, up to threshold decisions within rounding of their
threshold; a bundle's engine must equal the engine converted from the ``.keras`` model bit
for bit, and agree with Keras on top-1 and within the error that flips can explain. The
figures are printed to stderr. If the check fails, nothing is written at ``--out`` and the
exit code is 1.

Writes are atomic: everything is built in a temporary sibling folder
``.<out name>.partial-<pid>-<random>`` next to ``--out`` and renamed into place only after the
check passed; the temporary folder is removed on any failure (including Ctrl-C and, for the
command, SIGTERM). A hard kill (SIGKILL) cannot clean up after itself: the next export to the
same ``--out`` removes partial folders whose process is gone. ``--out`` is never half-written.
An existing ``--out`` is replaced only with ``--overwrite`` (a file atomically; a folder is
renamed aside first, so for a moment ``--out`` is missing, never mixed).

Test hook (not for users): the environment variable ``DELTANET_EXPORT_FAIL_AFTER_WRITE``
makes the export fail right after the artifact was written to the temporary folder, before
the check and the rename: ``1`` (or any value but those below) raises ``RuntimeError``,
``interrupt`` raises ``KeyboardInterrupt``, ``kill`` sends SIGKILL to the process itself;
unset, empty or ``0`` does nothing.

Exit codes: 0 ok, 1 the check failed (or an unexpected error), 2 a user error (bad argument,
missing / truncated / not-a-model ``--model`` file, an upstream converter that cannot handle
the model), 130 interrupted. User errors are one line on stderr.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import zipfile
from pathlib import Path

from deltanet.cli import ArgumentParser, CliError, fail, import_tensorflow_quietly, positive_int, quiet_stderr_fd
from training.export_check import ONNX_STATE_OUT_SUFFIX, CheckFailed, check_clip, check_export, compare, describe_check  # noqa: F401
from training.export_check import log as _log
from deltanet.onnx_export import ONNX_OPSET, first_line as _first_line

FORMATS = ("keras", "savedmodel", "tflite", "onnx", "bundle")
#: Max allowed (max abs error / max abs reference logit) of each format's check.
TOLERANCES = {"keras": 1e-5, "savedmodel": 1e-5, "tflite": 1e-3, "onnx": 1e-4, "bundle": 1e-4}
FAIL_HOOK_ENV = "DELTANET_EXPORT_FAIL_AFTER_WRITE"
PARTIAL_MARK = ".partial-"
PROG = "python -m training.export"




# --- arguments ----------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Export a trained clip model (.keras) for deployment and check that the export reproduces it.",
    )
    p.add_argument("--model", required=True, help="the trained clip model (.keras, e.g. runs/fit/model.keras)")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write (see the module docstring)")
    p.add_argument("--out", required=True, help="output file (.keras, .tflite, .onnx) or folder (savedmodel)")
    p.add_argument("--frames", type=positive_int, default=6, help="frames of the generated clip the check runs (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the check clip")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


# --- writers (each writes one artifact at `path`, inside the temporary folder) -----------------


def _write_keras(clip_model, stream_model, path: Path, work: Path):
    clip_model.save(path)


def _write_savedmodel(clip_model, stream_model, path: Path, work: Path):
    with quiet_stderr_fd():
        stream_model.export(str(path), format="tf_saved_model", verbose=False)


def _write_tflite(clip_model, stream_model, path: Path, work: Path):
    import tensorflow as tf

    saved = work / "savedmodel"
    _write_savedmodel(clip_model, stream_model, saved, work)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    try:
        with quiet_stderr_fd():
            flatbuffer = converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise CliError(f"the TFLite converter cannot convert {stream_model.name}: {_first_line(e)}") from e
    path.write_bytes(flatbuffer)


def _write_onnx(clip_model, stream_model, path: Path, work: Path):
    from deltanet.onnx_export import OnnxUnavailable, keras_to_onnx
    from deltanet.stream_model import LOGITS_OUTPUT

    rename = {k: k + ONNX_STATE_OUT_SUFFIX for k in stream_model.output if k != LOGITS_OUTPUT}
    try:
        model_proto = keras_to_onnx(stream_model, rename, opset=ONNX_OPSET)
    except OnnxUnavailable as e:
        raise CliError(f"onnx export: {e}") from e
    path.write_bytes(model_proto.SerializeToString())


def _write_bundle(clip_model, stream_model, path: Path, work: Path):
    from streaming.bundle import export_bundle
    from streaming.convert import ConversionError

    try:
        export_bundle(clip_model, path)
    except ConversionError as e:
        raise CliError(f"the delta runtime cannot run {clip_model.name}: {_first_line(e)}") from e


WRITERS = {"keras": _write_keras, "bundle": _write_bundle, "savedmodel": _write_savedmodel, "tflite": _write_tflite, "onnx": _write_onnx}


# --- files --------------------------------------------------------------------------------------


def load_clip_model(path):
    """Load a deltanet clip model from a ``.keras`` file (safe mode); ``CliError`` if it is not one."""
    path = Path(path)
    if not path.exists():
        raise CliError(f"--model: no such file: {path}")
    if not path.is_file():
        raise CliError(f"--model: not a file: {path}")
    if not zipfile.is_zipfile(path):
        raise CliError(
            f"--model: {path} is not a .keras model file (not a zip archive: truncated or another kind of file)"
        )
    import_tensorflow_quietly()
    from deltanet.saving import load_model

    try:
        with quiet_stderr_fd():
            model = load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        raise CliError(f"--model: cannot load {path} as a Keras model ({_first_line(e)})") from e
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 5:
        raise CliError(
            f"--model: {path} is not a deltanet clip model (expected one input (batch, time, H, W, C), "
            f"got {[tuple(t.shape) for t in model.inputs]})"
        )
    if any(s is None for s in model.inputs[0].shape[2:]):
        raise CliError(f"--model: {path} has a frame size that is not fixed: {tuple(model.inputs[0].shape)}")
    return model


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_partials(out: Path) -> None:
    """Remove the temporary folders of earlier exports to ``out`` whose process is gone."""
    prefix = f".{out.name}{PARTIAL_MARK}"
    if not out.parent.is_dir():
        return
    for entry in out.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _partial_dir(out: Path) -> Path:
    work = out.parent / f".{out.name}{PARTIAL_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir()
    return work


def _move_into_place(built: Path, out: Path, work: Path) -> None:
    """Rename ``built`` to ``out``; an existing ``out`` (only with --overwrite) is set aside first."""
    if out.exists() or out.is_symlink():
        if built.is_file() and out.is_file():
            os.replace(built, out)  # atomic for files
            return
        os.replace(out, work / "previous")  # same folder: a rename, then removed with `work`
    os.replace(built, out)


def _fail_hook() -> None:
    action = os.environ.get(FAIL_HOOK_ENV, "").strip().lower()
    if not action or action in ("0", "false", "no"):
        return
    if action == "interrupt":
        raise KeyboardInterrupt(f"{FAIL_HOOK_ENV}=interrupt")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"{FAIL_HOOK_ENV} is set: failing after writing the temporary export (test hook)")


# --- the run ------------------------------------------------------------------------------------


def run(
    model,
    fmt: str,
    out,
    *,
    frames: int = 6,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Export ``model`` (a ``.keras`` path or a loaded clip model) as ``fmt`` at ``out``, checked.

    Returns ``{"format", "out", "frames", "states", "tolerance", "max_abs", "max_rel", ...}`` plus
    the fields of the format's check (``training.export_check.check_export``).

    Raises:
        CliError: a user error (bad file, bad --out, a converter that cannot handle the model).
        CheckFailed: the export does not reproduce the Keras model; nothing was written.
    """
    if fmt not in FORMATS:
        raise CliError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if fmt == "keras" and out.suffix != ".keras":
        raise CliError(f"--out must end with .keras for --format keras, got {out}")
    if out.name in ("", ".", ".."):
        raise CliError(f"--out: not a usable path: {out}")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise CliError(f"--out {out} already exists (pass --overwrite to replace it)")
    if isinstance(model, (str, os.PathLike)):
        model = load_clip_model(model)
    else:
        import_tensorflow_quietly()

    from deltanet.stream_model import initial_states, stateful_frame_model

    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_partials(out)
    height, width, channels = (int(s) for s in model.inputs[0].shape[2:])
    clip = check_clip(height, width, channels, frames=frames, seed=seed)
    work = _partial_dir(out)
    try:
        try:
            stream_model = None if fmt == "bundle" else stateful_frame_model(model)
        except (ValueError, TypeError, KeyError) as e:
            raise CliError(f"cannot build the per-frame model of {model.name}: {_first_line(e)}") from e
        states = sorted(initial_states(stream_model, batch=1)) if stream_model is not None else []
        built = work / out.name
        WRITERS[fmt](model, stream_model, built, work)
        _fail_hook()
        report = {"format": fmt, "out": str(out), "frames": frames, "states": states, "tolerance": TOLERANCES[fmt]}
        try:
            report.update(check_export(fmt, built, model, stream_model, clip, TOLERANCES[fmt]))
        except CheckFailed as e:
            _log(f"check {fmt}: {frames} frames: FAILED: {e}")
            raise CheckFailed(f"the {fmt} export does not reproduce the Keras model: {e}; nothing written at {out}") from None
        report.pop("logits", None)
        _log(f"check {fmt}: {frames} frames, {describe_check(fmt, report)}: ok")
        _move_into_place(built, out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _log(f"exported {fmt} -> {out}")
    return report


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if __name__ == "__main__":  # SIGTERM cleans up like Ctrl-C (only SIGKILL leaves a partial folder)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        run(args.model, args.format, args.out, frames=args.frames, seed=args.seed, overwrite=args.overwrite)
    except CliError as e:
        return fail(parser.prog, str(e))
    except CheckFailed as e:
        print(f"{parser.prog}: check failed: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
