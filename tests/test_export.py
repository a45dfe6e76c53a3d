"""``python -m training.export``: every format round-trips within its tolerance; bad input is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deltanet.models import frame_logits_model
from test_stream_model import make_model
from training import export
from training.export import CheckFailed, check_clip, run

ROOT = Path(__file__).resolve().parents[1]
EXT = {"keras": ".keras", "savedmodel": "", "tflite": ".tflite", "onnx": ".onnx"}
KINDS = ("baseline", "quantize", "threshold")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _export_cli(*args, timeout=180, **env):
    return subprocess.run(
        [sys.executable, "-m", "training.export", *args],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if export.PARTIAL_MARK in p.name)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    files = {}
    for kind in KINDS:
        files[kind] = folder / f"{kind}.keras"
        make_model(kind).save(files[kind])
    return files


# --- running the exported artifacts independently of training.export's own check ---------------


def _stream(call, clip, states, out_name=lambda n: n):
    logits = []
    for t in range(clip.shape[1]):
        out = call({"frame": clip[:, t], **states})
        logits.append(np.asarray(out["logits"]))
        states = {n: np.asarray(out[out_name(n)]) for n in states}
    return np.stack(logits, 1)


def _runner(fmt, path):
    """``call(inputs dict) -> outputs dict`` of an exported per-frame model, and the name of a
    state's output."""
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return (lambda x: {k: v.numpy() for k, v in loaded.serve(x).items()}), (lambda n: n)
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner()
        return (lambda x: runner(**x)), (lambda n: n)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return (lambda x: dict(zip(names, session.run(None, x)))), (lambda n: n + "_out")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["keras", "savedmodel", "tflite", "onnx"])
def test_each_format_round_trips_within_tolerance(fmt, kind, model_files, tmp_path):
    out = tmp_path / f"model{EXT[fmt]}"
    report = run(model_files[kind], fmt, out, frames=6)
    assert out.exists() and _litter(tmp_path) == []
    tol = export.TOLERANCES[fmt]
    assert report["max_rel"] <= tol
    # Independently of the export's own check: another clip, our own runner.
    model = make_model(kind)
    clip = check_clip(32, 32, frames=5, seed=11)
    reference = np.asarray(frame_logits_model(model)(clip))
    states = {}
    if kind == "threshold":
        from deltanet.stream_model import initial_states, stateful_frame_model

        states = initial_states(stateful_frame_model(model))
        assert len(states) == len(report["states"]) > 0
    if fmt == "keras":
        import deltanet

        got = np.asarray(frame_logits_model(deltanet.load_model(out))(clip))
    else:
        call, out_name = _runner(fmt, out)
        got = _stream(call, clip, states, out_name)
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() <= tol * np.abs(reference).max()
    if kind == "threshold" and fmt != "keras":
        # The state tensors are wired: zero states every frame give other logits.
        forgetful = np.stack([_stream(call, clip[:, t : t + 1], states, out_name)[:, 0] for t in range(5)], 1)
        assert np.abs(forgetful[:, 1:] - reference[:, 1:]).max() > 1e-3


def test_cli_exports_a_threshold_savedmodel(model_files, tmp_path):
    out = tmp_path / "exported"
    r = _export_cli("--model", str(model_files["threshold"]), "--format", "savedmodel", "--out", str(out), "--frames", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "check savedmodel: 4 frames" in r.stderr and "max rel err" in r.stderr and "ok" in r.stderr
    assert "Traceback" not in r.stderr and (out / "saved_model.pb").is_file()
    assert _litter(tmp_path) == []
    # the signature: frame + states in, logits + states out, same names
    import tensorflow as tf

    sig = tf.saved_model.load(str(out)).signatures["serving_default"]
    inputs = set(sig.structured_input_signature[1])
    outputs = set(sig.structured_outputs)
    assert "frame" in inputs and "logits" in outputs
    assert inputs - {"frame"} == outputs - {"logits"} and all(n.endswith("_ref") for n in inputs - {"frame"})
    # an existing --out is refused without --overwrite
    r = _export_cli("--model", str(model_files["threshold"]), "--format", "savedmodel", "--out", str(out))
    assert r.returncode == 2 and "--overwrite" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "case",
    ["missing", "truncated", "text", "not_a_model_zip", "unknown_format", "keras_suffix"],
)
def test_cli_user_errors_are_one_line_exit_2(case, model_files, tmp_path):
    model = model_files["baseline"]
    fmt = "onnx"
    out = tmp_path / "out.onnx"
    if case == "missing":
        model = tmp_path / "nope.keras"
    elif case == "truncated":
        model = tmp_path / "truncated.keras"
        model.write_bytes(model_files["baseline"].read_bytes()[:4000])
    elif case == "text":
        model = tmp_path / "notes.keras"
        model.write_text("these are not the weights you are looking for\n")
    elif case == "not_a_model_zip":
        import zipfile

        model = tmp_path / "other.keras"
        with zipfile.ZipFile(model, "w") as z:
            z.writestr("readme.txt", "hello")
    elif case == "unknown_format":
        fmt = "caffe"
    elif case == "keras_suffix":
        fmt = "keras"
    r = _export_cli("--model", str(model), "--format", fmt, "--out", str(out))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m training.export: error:"), r.stderr
    assert not out.exists() and _litter(tmp_path) == []
    expected = {
        "missing": "no such file",
        "truncated": "not a .keras model file",
        "text": "not a .keras model file",
        "not_a_model_zip": "cannot load",
        "unknown_format": "invalid choice",
        "keras_suffix": "must end with .keras",
    }[case]
    assert expected in lines[0]


def test_failed_check_writes_nothing(model_files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model.tflite"
    monkeypatch.setitem(export.TOLERANCES, "tflite", -1.0)  # no export can pass
    with pytest.raises(CheckFailed, match="nothing written"):
        run(model_files["quantize"], "tflite", out)
    assert not out.exists() and _litter(tmp_path) == []
    assert export.main(["--model", str(model_files["quantize"]), "--format", "tflite", "--out", str(out)]) == 1
    assert "check failed" in capsys.readouterr().err
    assert not out.exists() and _litter(tmp_path) == []


@pytest.mark.parametrize("action", ["1", "interrupt"])
def test_failure_after_writing_leaves_nothing(action, model_files, tmp_path, monkeypatch):
    monkeypatch.setenv(export.FAIL_HOOK_ENV, action)
    out = tmp_path / "saved"
    with pytest.raises(KeyboardInterrupt if action == "interrupt" else RuntimeError):
        run(model_files["threshold"], "savedmodel", out)
    assert not out.exists() and _litter(tmp_path) == []
    if action == "interrupt":
        argv = ["--model", str(model_files["threshold"]), "--format", "savedmodel", "--out", str(out)]
        assert export.main(argv) == 130
        assert not out.exists() and _litter(tmp_path) == []


def test_killed_export_leaves_no_out_and_the_next_export_sweeps_its_litter(model_files, tmp_path):
    out = tmp_path / "model.onnx"
    hook = {export.FAIL_HOOK_ENV: "kill"}
    r = _export_cli("--model", str(model_files["threshold"]), "--format", "onnx", "--out", str(out), **hook)
    assert r.returncode == -9
    assert not out.exists()
    left = _litter(tmp_path)
    assert len(left) == 1 and (tmp_path / left[0] / "model.onnx").is_file()  # a SIGKILL cannot clean up
    run(model_files["threshold"], "onnx", out)
    assert out.is_file() and _litter(tmp_path) == []


def test_overwrite_replaces_a_savedmodel_folder(model_files, tmp_path):
    out = tmp_path / "saved"
    run(model_files["baseline"], "savedmodel", out)
    (out / "stale.txt").write_text("from the previous export")
    with pytest.raises(export.CliError, match="already exists"):
        run(model_files["threshold"], "savedmodel", out)
    report = run(model_files["threshold"], "savedmodel", out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "saved_model.pb").is_file()
    assert len(report["states"]) > 0 and _litter(tmp_path) == []
