"""``python -m training.fit`` end to end on a tiny generated dataset, in real subprocesses."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes import make_fake_ucf101

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "tiny", "--size", "32", "--frames", "4", "--stride", "1", "--batch-size", "4", "--quiet"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _fit(*args, timeout=300, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "training.fit", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_ucf(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    make_fake_ucf101(root, classes=("ApplyEyeMakeup", "HandstandPushups", "YoYo"), groups=(1, 2, 3, 8, 9), clips=2, frames=8, size=(40, 40))
    return root


@pytest.mark.slow
def test_fit_end_to_end_writes_model_history_metrics(tiny_ucf, tmp_path):
    out = tmp_path / "run"
    r = _fit("--data", str(tiny_ucf), "--epochs", "2", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "UserWarning" not in r.stderr, r.stderr  # Keras' spurious tf.data warnings are not shown to users
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "test_mac_density", "mac_density", "layers", "seconds", "config"):
        assert key in metrics
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    # the fake tree's split 1 tests on g01; of the training groups 2, 3, 8, 9 one is carved out for val
    assert (metrics["train_videos"], metrics["val_videos"], metrics["test_videos"]) == (18, 6, 6)
    assert 0.0 <= metrics["mac_density"] <= 1.0
    assert metrics["config"]["arch"] == "tiny" and metrics["classes"][1] == "HandstandPushups"
    assert {"name", "macs", "temporal_density", "spatial_density"} <= set(metrics["layers"][0])
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert "val_mac_density" in rows[0] and 0 <= float(rows[0]["val_mac_density"]) <= 1
    import deltanet

    model = deltanet.load_model(out / "model.keras")
    info = deltanet.model_info(model)
    assert info["class_names"] == metrics["classes"] and info["frames"] == 4 and info["size"] == 32
    # metrics.json's validation figures come from the last epoch and its test accuracy from the
    # density pass (one pass each, training.fit.finish): the saved model evaluated afresh agrees
    from training.fit import FitConfig, load_data
    from training.pipeline import make_subset_dataset

    cfg = FitConfig(data=str(tiny_ucf), size=32, frames=4, stride=1, batch_size=4)
    index, _, val_ds, _ = load_data(cfg, 3)
    val = model.evaluate(val_ds, verbose=0, return_dict=True)
    assert val["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert val["loss"] == pytest.approx(metrics["val_loss"], rel=1e-4)
    test_ds = make_subset_dataset(index, "test", frames=4, stride=1, size=(32, 32), batch_size=4, seed=cfg.seed)
    assert model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_resume_after_a_killed_run(tiny_ucf, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "training.fit", "--data", str(tiny_ucf), "--epochs", "4", "--out", str(out), *TINY]
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)  # a hard kill: no chance to clean up
    finally:
        proc.wait(30)
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 4
    assert not (out / "metrics.json").exists()
    r = _fit("--resume", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from epoch {done} of 4" in r.stderr
    epochs = [int(row["epoch"]) for row in csv.DictReader((out / "history.csv").open())]
    assert epochs[-(4 - done):] == list(range(done, 4))
    assert json.loads((out / "metrics.json").read_text())["config"]["epochs"] == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs"),
        (["--delta-mode", "sparse"], "--delta-mode"),
        (["--data", "/nonexistent/data/root"], "/nonexistent/data/root"),
        (["--resume", "--out", "/nonexistent/run"], "no checkpoint"),
        (["--init", "/nonexistent/model.keras"], "no such model file"),
        (["--arch", "keras.applications.NoSuchNet"], "not a keras.applications model"),
        (["--arch", "keras.applications.ResNet50", "--weights", "imagenet"], "caffe"),
        (["--weights", "imagenet"], "--weights applies to"),
        # a bad --data is reported as such even where --out already holds a run (the README's
        # order: the quick start writes runs/fit, then the tests run in the same checkout)
        (["--data", "/nonexistent/data/root", "--out", "HOLDS_A_RUN"], "/nonexistent/data/root"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, message, tmp_path):
    if "HOLDS_A_RUN" in args:
        (tmp_path / "run" / "checkpoint").mkdir(parents=True)
        (tmp_path / "run" / "checkpoint" / "state.json").write_text('{"epoch": 1, "config": {}}')
        args = [str(tmp_path / "run") if a == "HOLDS_A_RUN" else a for a in args]
    r = _fit(*args, timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert message in lines[0] and "Traceback" not in r.stderr
