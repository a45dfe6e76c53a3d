"""``python -m training.distill`` end to end: a tiny nested, gray, softmax-ending "pretrained"
model saved as legacy .h5, distilled on a few generated videos, checked against its own report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CROP = "8,4,40,40"


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _distill(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "training.distill", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def tiny_pretrained(path: Path, size: int = 20) -> Path:
    """A mini-Xception-like gray classifier called inside a wrapper (nested), ending in softmax,
    expecting inputs in [-1, 1]; saved as a legacy .h5 file."""
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(8, 3, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="r1")(x)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", name="s1")(x)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    base = keras.Model(inp, keras.layers.Activation("softmax", name="probs")(x), name="base")
    # non-trivial BatchNorm statistics, as a trained model has
    for bn in (base.get_layer("bn1"), base.get_layer("bn2")):
        bn.moving_mean.assign(np.linspace(-0.2, 0.2, 8).astype("float32"))
        bn.moving_variance.assign(np.linspace(0.5, 1.5, 8).astype("float32"))
    c2 = base.get_layer("c2")
    c2.kernel.assign(c2.kernel * 40.0)  # confident, frame-dependent predictions: agreement is not trivially 1
    outer_in = keras.Input((size, size, 1))
    wrapper = keras.Model(outer_in, base(outer_in), name="wrapper")
    wrapper.save(path)
    return path


def tiny_videos(folder: Path, n: int = 4, frames: int = 40) -> list[Path]:
    """Noisy webcam-like clips: a bright blob moving over a static textured background."""
    from training.video import write_video

    rng = np.random.default_rng(0)
    background = (rng.random((48, 64, 3)) * 120 + 40).astype(np.float32)
    yy, xx = np.mgrid[:48, :64]
    paths = []
    for v in range(n):
        out = []
        for t in range(frames):
            cx, cy = 20 + 10 * np.sin(0.2 * t + v), 22 + 8 * np.cos(0.15 * t * (v + 1))
            blob = 110 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 40.0)
            img = background + blob[..., None] + rng.normal(0, 2, (48, 64, 3))
            out.append(np.clip(img, 0, 255).astype(np.uint8))
        paths.append(write_video(folder / f"v{v}.avi", out, fps=15))
    return paths


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill")
    return tiny_pretrained(folder / "pretrained.h5"), tiny_videos(folder), folder


def _args(setup, out, *extra):
    model, videos, _ = setup
    return ["--model", str(model), "--videos", *map(str, videos), "--crop", CROP, "--rescale", "2/255,-1",
            "--target-density", "0.3", "--epochs", "2", "--frames", "6", "--clips-per-epoch", "16", "--batch-size", "4",
            "--calibration-clips", "8", "--val-fraction", "0.25", "--class-names", "a,b,c,d", "--quiet", "--out", str(out), *extra]


@pytest.mark.slow
def test_distill_end_to_end(setup):
    _, videos, folder = setup
    out = folder / "student.keras"
    r = _distill(*_args(setup, out))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert json.loads(out.with_suffix(".json").read_text())["val_top1_agreement"] == report["val_top1_agreement"]
    assert 0.0 <= report["val_top1_agreement"] <= 1.0
    assert abs(report["val_mac_density"] - 0.3) < 0.1
    assert report["initialisation"]["chosen"] in ("teal", "chess")
    assert [h["epoch"] for h in json.loads(out.with_suffix(".json").read_text())["history"]] == [0, 1, 2]
    assert not out.with_name("student.distill").exists()  # the checkpoint folder is gone once done

    # The reported agreement is what the saved model does: recompute it on the validation videos.
    import keras

    import deltanet
    from deltanet.pretrained import load_frame_model, prepare_frame_model
    from streaming.preprocess import Crop
    from training.distill_steps import EVAL_FRAMES
    from training.footage import load_footage, windows

    model = deltanet.load_model(out)
    assert deltanet.model_info(model)["class_names"] == ["a", "b", "c", "d"]
    teacher = prepare_frame_model(load_frame_model(setup[0])[0], rescale=(2 / 255, -1))
    val = load_footage(report["val_videos"], (20, 20, 1), crop=Crop.parse(CROP))
    clips = windows(val, EVAL_FRAMES).astype(np.float32)
    student = deltanet.frame_logits_model(model).predict(clips, verbose=0)
    dense = teacher.predict(clips.reshape((-1, 20, 20, 1)), verbose=0).reshape(student.shape)
    assert np.mean(student.argmax(-1) == dense.argmax(-1)) == pytest.approx(report["val_top1_agreement"])
    assert keras.ops.convert_to_numpy(model.get_layer("input_rescale_delta").threshold).max() > 0

    # and the streaming engine runs it from RGB frames (cropped here, gray inside) like Keras
    from streaming.engine import DeltaEngine
    from training.video import read_video

    engine = DeltaEngine.from_keras(model)
    frames = [Crop.parse(CROP)(f) for f in read_video(videos[0])]
    logits, _ = engine.run(frames)
    prepared = np.stack([engine.prepare(f) for f in frames]).astype(np.float32)
    ref = deltanet.frame_logits_model(model).predict(prepared[None], verbose=0)[0]
    assert np.mean(logits.argmax(1) == ref.argmax(1)) >= 0.95
    np.testing.assert_allclose(logits[:5], ref[:5], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_distill_resume(setup):
    from training import distill

    out = setup[2] / "resumed.keras"
    args = distill.build_parser().parse_args(_args(setup, out))
    cfg = distill.DistillConfig(model=args.model, videos=args.videos, out=args.out, crop=CROP, rescale=list(args.rescale),
                                target_density=0.3, epochs=2, frames=6, clips_per_epoch=16, batch_size=4,
                                calibration_clips=8, val_fraction=0.25, methods=["chess"])

    def stop_after_first_epoch(msg):
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill.run(cfg, log=stop_after_first_epoch)
    state = json.loads((setup[2] / "resumed.distill" / "state.json").read_text())
    assert state["epoch"] == 1 and not out.exists()
    report = distill.run(cfg, resume=True, log=lambda m: None)
    assert [h["epoch"] for h in report["history"]] == [0, 1, 2]
    assert out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--crop", "1,2,3"], "--crop"),
        (["--crop", "0.5,0.5,0.75,0.2"], "--crop"),
        (["--rescale", "0,1"], "--rescale"),
        (["--rescale", "a,b"], "--rescale"),
        (["--target-density", "1.5"], "--target-density"),
    ],
)
def test_bad_arguments_one_line_exit_2(setup, extra, message):
    r = _distill(*_args(setup, setup[2] / "bad.keras"), *extra, timeout=60)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr


def test_bad_inputs_one_line_exit_2(setup, tmp_path):
    model, videos, _ = setup
    base = ["--model", str(model), "--out", str(tmp_path / "x.keras"), "--quiet"]
    r = _distill(*base, "--videos", str(videos[0]), timeout=60)
    assert r.returncode == 2 and "at least 2" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _distill(*base, "--videos", str(videos[0]), str(tmp_path / "missing.avi"), timeout=60)
    assert r.returncode == 2 and "missing.avi" in r.stderr
    r = _distill(*base, "--videos", *map(str, videos), "--crop", "30,30,40,40", timeout=120)
    assert r.returncode == 2 and "does not fit" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.keras").exists()
