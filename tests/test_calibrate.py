"""deltanet.calibrate (CHESS, WINA, TEAL, uniform) and the ``python -m training.calibrate`` CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import deltanet
import naive
from deltanet import calibrate as cal
from deltanet import density
from deltanet.measure import measure_model

ROOT = Path(__file__).resolve().parents[1]


# --- hand-worked thresholds ---------------------------------------------------------------------


def _built(layer, input_shape):
    layer.build(input_shape)
    return layer


def test_chess_and_wina_thresholds_hand_worked_dense():
    dense = _built(keras.layers.Dense(2, use_bias=False), (None, 3))
    dense.kernel.assign(np.array([[1.0, 2.0], [0.0, 3.0], [2.0, 2.0]], np.float32))
    s = cal.input_channel_sq_norms(dense)
    np.testing.assert_allclose(s, [5.0, 9.0, 8.0])  # 1+4, 0+9, 4+4
    np.testing.assert_allclose(cal.chess_thresholds(s, budget=4.0), [math.sqrt(4 / 5), 2 / 3, math.sqrt(0.5)])
    np.testing.assert_allclose(cal.wina_thresholds(s, theta=0.6), [0.6 / math.sqrt(5), 0.2, 0.6 / math.sqrt(8)])
    # CHESS: a delta fires where its importance d^2 * s_c exceeds the budget T
    theta = cal.chess_thresholds(s, 4.0)
    d = np.array([0.9, 0.66, 0.71])
    assert list(np.abs(d) > theta) == list(d**2 * s > 4.0) == [True, False, True]
    # WINA: |d_c| * ||W[c]|| > theta
    theta = cal.wina_thresholds(s, 0.6)
    assert list(np.abs(d) > theta) == list(np.abs(d) * np.sqrt(s) > 0.6)
    # a channel whose weights are all zero never needs to fire
    z = cal.wina_thresholds(np.array([4.0, 0.0]), 1.0)
    assert z[0] == 0.5 and z[1] >= 1000 * 0.5 and np.isfinite(z[1])


def test_chess_norms_hand_worked_conv_depthwise_with_bn_scale():
    conv = _built(keras.layers.Conv2D(2, (2, 1), use_bias=False), (None, 4, 4, 2))
    w = np.zeros((2, 1, 2, 2), np.float32)
    w[:, 0, 0, :] = [[1, 0], [2, 1]]  # input channel 0: taps (ky=0, ky=1) x outputs
    w[:, 0, 1, :] = [[0, 3], [1, 1]]  # input channel 1
    conv.kernel.assign(w)
    np.testing.assert_allclose(cal.input_channel_sq_norms(conv), [1 + 4 + 1, 9 + 1 + 1])
    g = np.array([2.0, 1.0])  # a following BN scales output 0 by 2
    np.testing.assert_allclose(cal.input_channel_sq_norms(conv, g), [4 + 16 + 1, 9 + 4 + 1])
    np.testing.assert_allclose(cal.chess_thresholds([21.0, 14.0], 7.0), [math.sqrt(1 / 3), math.sqrt(0.5)])
    dw = _built(keras.layers.DepthwiseConv2D(1, depth_multiplier=2, use_bias=False), (None, 4, 4, 2))
    dw.kernel.assign(np.array([[[[1, 2], [3, 0]]]], np.float32))  # (1, 1, C=2, M=2)
    np.testing.assert_allclose(cal.input_channel_sq_norms(dw), [5, 9])
    np.testing.assert_allclose(cal.input_channel_sq_norms(dw, np.array([1.0, 2.0, 1.0, 1.0])), [17, 9])
    grouped = _built(keras.layers.Conv2D(2, 1, groups=2, use_bias=False), (None, 4, 4, 2))
    grouped.kernel.assign(np.array([[[[3, 4]]]], np.float32))  # channel 0 -> output 0, channel 1 -> output 1
    np.testing.assert_allclose(cal.input_channel_sq_norms(grouped), [9, 16])


def test_delta_sites_fold_the_following_batchnorm():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(2, (2, 1), use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(epsilon=0.0, center=False, name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, use_bias=False, name="fc")(x)
    frame = keras.Model(inputs, outputs)
    w = np.zeros((2, 1, 2, 2), np.float32)
    w[:, 0, 0, :] = [[1, 0], [2, 1]]
    w[:, 0, 1, :] = [[0, 3], [1, 1]]
    frame.get_layer("conv").kernel.assign(w)
    bn = frame.get_layer("bn")
    bn.gamma.assign([4.0, 3.0])
    bn.moving_variance.assign([4.0, 9.0])  # scale = gamma / sqrt(var) = (2, 1)
    frame.get_layer("fc").kernel.assign(np.array([[1.0, 2.0], [0.0, 3.0]], np.float32))
    clip = cal.prepare_model(deltanet.clip_classifier(frame, baseline=True, info={"frames": 3}))
    sites = cal.delta_sites(clip)
    assert [s.name for s in sites] == ["input_delta", "pool_delta"]
    assert [la.name for la in sites[0].consumers] == ["conv"] and sites[0].macs == (3 * 4) * (2 * 1 * 2) * 2  # outputs x taps x Cin x Cout
    np.testing.assert_allclose(cal.site_sq_norms(sites[0]), [21, 14])
    np.testing.assert_allclose(cal.site_sq_norms(sites[0], fold_bn=False), [6, 11])
    np.testing.assert_allclose(cal.site_sq_norms(sites[1]), [5, 9])
    assert deltanet.model_info(clip)["frames"] == 3
    with pytest.raises(ValueError, match="threshold-mode"):
        cal.delta_sites(deltanet.clip_classifier(frame, mode="quantize"))


# --- the hysteresis and TEAL's quantile --------------------------------------------------------


def test_hysteresis_density_matches_naive_reference():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(0, 0.3, (3, 6, 4, 5, 3)), axis=1).astype(np.float32)  # (batch, time, H, W, C)
    theta = np.array([0.1, 0.3, 0.6], np.float32)
    ys = [naive.threshold_stream(clip, theta)[0] for clip in x]
    want = density.temporal_density(np.stack(ys))
    assert cal.hysteresis_density(x, theta) == pytest.approx(want, abs=1e-12)
    assert cal.hysteresis_density(x, 0.0) == pytest.approx(density.temporal_density(x))


X_HAND = np.array([0.0, 1.0, 1.5, 1.75, 2.0, 3.5], np.float32).reshape(1, 6, 1)  # one clip, one channel


@pytest.mark.parametrize("target, theta", [(0.4, 1.0), (0.2, 1.75), (0.6, 0.5), (0.0, 3.5)])
def test_teal_threshold_hand_worked(target, theta):
    """Worked by hand: with threshold th the fires at t = 1..5 are
    th in [0.5, 1): t1, t3|t4, t5 (0.6); [1, 1.75): t2, t5|t3, t5 (0.4); [1.75, 3.5): one (0.2)."""
    got = cal.teal_threshold(X_HAND, target)
    assert got == pytest.approx(theta, abs=1e-6)
    assert cal.hysteresis_density(X_HAND, got) <= target
    assert cal.hysteresis_density(X_HAND, got * 0.999) > target
    # the fixed point: a fraction `target` of the accumulated deltas |x_t - r_{t-1}| exceed it
    th = np.float32(got)
    r, acc = np.float32(0), []
    for t, v in enumerate(X_HAND[0, :, 0]):
        if t >= 1:
            acc.append(abs(v - r))
        if abs(v - r) > th:
            r = v
    assert np.mean(np.array(acc) > th) == pytest.approx(target)


def test_water_fill_and_greedy_allocation():
    np.testing.assert_allclose(cal.water_fill([1, 1, 2], [0.2, 1, 1], 0.5), [0.2, 0.6, 0.6])  # 0.2 + 3p = 2
    np.testing.assert_allclose(cal.water_fill([1, 1, 2], [0.2, 1, 1], 0.5, dense=[1]), [0.2, 1.0, 0.4])
    np.testing.assert_allclose(cal.water_fill([1, 1], [0.3, 0.4], 0.9), [0.3, 0.4])
    dens = np.array([[1, 0.5, 0.25], [1, 0.5, 0.25]])
    err = np.array([[0, 1, 10], [0, 2, 3]])
    # costs per MAC saved: layer 0 -> 2 then 36; layer 1 -> 4 then 4
    assert list(cal.greedy_allocation([1, 1], dens, err, 0.5)) == [1, 1]
    assert list(cal.greedy_allocation([1, 1], dens, err, 0.4)) == [1, 2]
    assert list(cal.greedy_allocation([1, 1], dens, err, 0.0)) == [2, 2]  # as far as it goes


# --- calibration on generated clips -------------------------------------------------------------


def _moving_clips(n, seed, frames=6, size=32):
    """Textured background, a bright moving square, sensor noise: uint8 (n, frames, size, size, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, frames, size, size, 3), np.uint8)
    for i in range(n):
        bg = 60 + 40 * np.sin(xx / rng.uniform(2, 6) + rng.uniform(0, 6))[..., None] * np.cos(yy / rng.uniform(2, 6))[..., None]
        bg = bg + rng.uniform(-20, 20, 3)
        x0, y0 = rng.uniform(2, size - 12, 2)
        vx, vy = rng.uniform(-2.5, 2.5, 2)
        for t in range(frames):
            f = bg.copy()
            xa, ya = int(x0 + vx * t), int(y0 + vy * t)
            f[max(ya, 0) : ya + 8, max(xa, 0) : xa + 8] = (230, 200, 90)
            f = f * rng.uniform(0.97, 1.03) + rng.normal(0, 4, f.shape)  # flicker and noise
            out[i, t] = np.clip(f, 0, 255)
    return out


@pytest.fixture(scope="module")
def tiny_baseline():
    keras.utils.set_random_seed(3)
    return deltanet.build_model(4, arch="tiny", size=32, baseline=True, info={"frames": 6, "stride": 1})


@pytest.mark.parametrize("method", ["uniform", "wina", "chess", "teal", "teal-w"])
def test_calibration_reaches_target_on_held_out_clips(tiny_baseline, method):
    calib = _moving_clips(12, seed=1)
    held_out = _moving_clips(12, seed=2)
    model = cal.prepare_model(tiny_baseline)
    exact = measure_model(model, [held_out])["mac_density"]
    target = 0.3
    assert exact > target + 0.1
    kw = dict(levels=cal.TEAL_LEVELS[::2]) if method.startswith("teal") else {}
    if method == "teal-w":  # TEAL's allocation, thresholds shaped per channel by the weights
        method, kw["teal_channels"] = "teal", "weights"
    # sweep_clips=3 < the first batch: the sweeps run on exactly 3 clips, the rest on all 12
    res = cal.calibrate(model, [calib[:6], calib[6:]], target, method, max_dense=2, sweep_clips=3, **kw)
    assert abs(res.mac_density - target) <= 0.002  # on the calibration clips
    assert res.sweep_clips == 3
    measured = measure_model(model, [held_out])
    assert abs(measured["mac_density"] - target) <= 0.02, measured["mac_density"]
    # the thresholds are the layers' weights, per channel, and they shape the density
    thr = cal.get_thresholds(model)
    assert set(thr) == {s.name for s in cal.delta_sites(model)} and all(v.shape == (v.size,) for v in thr.values())
    per_channel = any(np.ptp(v) > 0 for v in thr.values())
    assert per_channel == (method in ("chess", "wina") or "teal_channels" in kw)  # shaped by the weights
    assert res.mse > 0 and 0.0 <= res.top1_agreement <= 1.0
    if method == "chess":
        assert res.candidates and all(np.all(thr[n] == 0) for n in res.dense_layers)
    if method == "teal":  # allocated per layer
        assert len({float(v.max()) for v in thr.values()}) > 2
    # the source model is untouched: the delta layers live in the new model only
    assert not cal.delta_sites(tiny_baseline)
    assert {id(w) for w in tiny_baseline.trainable_weights} == {id(w) for w in model.trainable_weights}  # shared


def test_calibrate_rejects_bad_requests(tiny_baseline):
    model = cal.prepare_model(tiny_baseline)
    clips = _moving_clips(4, seed=5)
    with pytest.raises(ValueError, match="method"):
        cal.calibrate(model, [clips], 0.3, "magic")
    with pytest.raises(ValueError, match="teal_channels"):
        cal.calibrate(model, [clips], 0.3, "teal", teal_channels="magic")
    with pytest.raises(ValueError, match="target_density"):
        cal.calibrate(model, [clips], 1.2, "uniform")
    static = np.repeat(clips[:, :1], 6, axis=1)  # no motion: exact deltas are already all zero
    with pytest.raises(ValueError, match="not below the density with exact deltas"):
        cal.calibrate(model, [static], 0.3, "uniform")


def test_match_density_scales_existing_thresholds(tiny_baseline):
    model = cal.prepare_model(tiny_baseline)
    cal.set_thresholds(model, {n: np.full(v.shape, 0.05, np.float32) for n, v in cal.get_thresholds(model).items()})
    clips = _moving_clips(8, seed=6)
    a = cal.match_density(model, [clips], 0.35)
    assert a > 0 and abs(measure_model(model, [clips])["mac_density"] - 0.35) <= 0.002
    assert np.allclose(next(iter(cal.get_thresholds(model).values())), 0.05 * a)


# --- the CLI ----------------------------------------------------------------------------------------


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "training.calibrate", *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-density", "0.3", "--out", "x.keras"], "--model"),
        (["--model", "/nonexistent/m.keras", "--target-density", "0.3", "--out", "/tmp/x.keras"], "no such model file"),
        (["--model", "m.keras", "--target-density", "1.5", "--out", "x.keras"], "--target-density"),
        (["--model", "m.keras", "--target-density", "0.3", "--method", "magic", "--out", "x.keras"], "--method"),
        (["--model", "m.keras", "--target-density", "0.3", "--out", "x.keras", "--clips", "0"], "--clips"),
        ("BAD_OUT", "--out must be a .keras file"),
        ("GARBAGE_MODEL", "cannot load"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, args, message):
    if args == "BAD_OUT":
        model = tmp_path / "m.keras"
        model.write_bytes(b"x")
        args = ["--model", str(model), "--target-density", "0.3", "--out", str(tmp_path / "out.h5")]
    elif args == "GARBAGE_MODEL":
        model = tmp_path / "m.keras"
        model.write_bytes(b"not a keras file")
        args = ["--model", str(model), "--target-density", "0.3", "--out", str(tmp_path / "out.keras")]
    r = _cli(*args, timeout=120)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert message in lines[0] and "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_writes_a_loadable_calibrated_model(tmp_path, tiny_baseline):
    from training.video import write_video

    data = tmp_path / "data"
    for label, name in enumerate(("left", "right")):
        for i, clip in enumerate(_moving_clips(6, seed=10 + label, frames=6)):  # 4 train + 1 val + 1 test each
            write_video(data / name / f"{name}_{i}.avi", clip)
    keras.utils.set_random_seed(0)
    base = deltanet.build_model(2, arch="tiny", size=32, baseline=True, info={"class_names": ["left", "right"], "frames": 6, "stride": 1})
    src = tmp_path / "base.keras"
    base.save(src)
    out = tmp_path / "cal.keras"
    r = _cli("--model", str(src), "--data", str(data), "--target-density", "0.3", "--method", "wina", "--out", str(out),
             "--clips", "6", "--batch-size", "3", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["method"] == "wina" and abs(report["calibration_mac_density"] - 0.3) <= 0.002
    assert 0 <= report["val_mac_density"] <= 1 and report["calibration_clips"] == 6
    model = deltanet.load_model(out)  # safe mode
    sites = cal.delta_sites(model)
    thr = cal.get_thresholds(model)
    assert sites and all(thr[s.name].shape == (s.channels,) for s in sites) and any(v.max() > 0 for v in thr.values())
    info = deltanet.model_info(model)
    assert info["class_names"] == ["left", "right"] and info["calibration"]["method"] == "wina"
    assert info["calibration"]["target_density"] == 0.3
    # a target the data cannot give (above the density of exact deltas): still one line, exit 2
    r = _cli("--model", str(src), "--data", str(data), "--target-density", "0.99", "--out", str(tmp_path / "x.keras"), "--clips", "3")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "not below the density with exact deltas" in lines[0], r.stderr
    assert not (tmp_path / "x.keras").exists()
