"""streaming.live: JSON lines, the real window under a virtual X display, the no-display fallback, CLI errors.

Real parts only: tiny Keras models saved to .keras files, tiny MJPG videos, the real CLI in a
subprocess, a real Xvfb server and a real ``xwd`` screenshot of the window.
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import deltanet
from fakes import write_video

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
CLASSES = ["wave", "jump", "run"]


def scene_frames(n: int, w: int = 64, h: int = 48, seed: int = 0) -> np.ndarray:
    """Mid-tone texture with a little sensor noise and a moving blue square: no near-white pixels,
    so white overlay text is easy to tell from the video."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(50, 170, (h // 4, w // 4, 3)), (w, h), interpolation=cv2.INTER_LINEAR)
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        f = base + rng.normal(0, 2, base.shape)
        x, y = 4 + (2 * t) % (w - 16), 6 + t % (h - 16)
        f[y:y + 10, x:x + 10] = (30, 60, 190)
        frames[t] = np.clip(f, 0, 160)
    return frames


def make_model(path: Path, *, baseline: bool = False, seed: int = 1) -> Path:
    """A tiny delta (or baseline) clip model with peaked logits, saved to ``path``."""
    import keras

    keras.utils.set_random_seed(seed)
    model = deltanet.build_model(3, arch="tiny", size=32, threshold=0.05, baseline=baseline,
                                 info={"class_names": CLASSES, "frames": 4})
    rng = np.random.default_rng(seed)
    for w in model.weights:   # untrained logits are nearly equal; make the prediction mean something
        if w.path == "logits/kernel":
            w.assign(rng.normal(0, 3.0, w.shape))
        elif w.path == "logits/bias":
            w.assign(rng.normal(0, 1.0, w.shape))
    model.save(path)
    return path


def make_unconvertible_model(path: Path) -> Path:
    """A clip model that loads fine but uses a layer the runtime cannot run (UpSampling2D)."""
    import keras

    inputs = keras.Input((None, 16, 16, 3))
    x = deltanet.FrameWise(keras.layers.Conv2D(4, 3))(inputs)
    x = deltanet.FrameWise(keras.layers.UpSampling2D())(x)
    x = deltanet.FrameWise(keras.layers.GlobalAveragePooling2D())(x)
    keras.Model(inputs, x).save(path)
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    frames = scene_frames(24)
    write_video(d / "clip.avi", frames, fps=25)
    return SimpleNamespace(dir=d, model=make_model(d / "m.keras"), video=d / "clip.avi", frames=frames,
                           bad_model=make_unconvertible_model(d / "upsampling.keras"))


def decoded(video: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(out)


def live(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "streaming.live", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=env or ENV, timeout=timeout)


FIELDS = {"frame", "source_index", "label", "score", "top", "mac_density", "executed_mac_density", "executed_macs", "dense_macs",
          "saved_macs", "keyframe", "latency_ms", "engine_ms", "fps", "dropped"}


def check_json_lines(stdout: str, n: int) -> list[dict]:
    lines = stdout.splitlines()
    assert len(lines) == n, stdout[-2000:]
    recs = [json.loads(line) for line in lines]
    for i, r in enumerate(recs):
        assert FIELDS <= set(r), set(r) ^ FIELDS
        assert r["frame"] == i and r["dropped"] == 0
        assert r["label"] in CLASSES and r["label"] == r["top"][0][0] and r["score"] == r["top"][0][1]
        probs = [p for _, p in r["top"]]
        assert len(r["top"]) == 3 and probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
        assert 0 <= r["mac_density"] <= 1 and r["latency_ms"] > 0
        assert r["saved_macs"] == r["dense_macs"] - r["executed_macs"]
        # mac_density: transmitted non-zero deltas (MAC-weighted); executed: what the kernels multiplied
        assert r["executed_mac_density"] == pytest.approx(r["executed_macs"] / r["dense_macs"], rel=1e-5)
    assert recs[0]["keyframe"] and recs[0]["mac_density"] == 1.0
    assert all(not r["keyframe"] for r in recs[1:]) and np.mean([r["mac_density"] for r in recs[1:]]) < 0.5
    return recs


def test_headless_json_lines_smoothing_and_record(assets, tmp_path):
    out = tmp_path / "annotated.mp4"
    r = live("--model", assets.model, "--source", assets.video, "--headless", "--max-frames", 20, "--window", 4,
             "--record", out, "--threads", 1)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = check_json_lines(r.stdout, 20)
    # the prediction is the softmax of the mean per-frame logits over the last 4 frames
    from streaming.engine import DeltaEngine

    engine = DeltaEngine.from_keras(str(assets.model))
    logits, _ = engine.run(decoded(assets.video)[:20])
    for i, rec in enumerate(recs):
        z = logits[max(0, i - 3):i + 1].mean(axis=0)
        p = np.exp(z - z.max())
        p /= p.sum()
        assert rec["label"] == CLASSES[int(p.argmax())]
        assert rec["score"] == pytest.approx(p.max(), abs=1e-5)
    summary = r.stderr.strip().splitlines()[-1]
    assert "20 frames" in summary and "mean MAC density" in summary and "dropped 0" in summary
    # the annotated video: complete, renamed from its temporary name, at the display size
    assert out.is_file() and not list(tmp_path.glob(".*partial*"))
    video = decoded(out)
    assert video.shape == (20, 480, 640, 3)


def test_region_weighted_thresholds_fire_more(assets):
    """--region lowers the thresholds where it applies: more deltas than the plain engine."""
    from streaming import live as live_mod

    densities = {}
    for region in (None, "motion", (0.0, 0.0, 1.0, 1.0)):
        out, err = io.StringIO(), io.StringIO()
        live_mod.run(str(assets.model), str(assets.video), headless=True, max_frames=12, out=out, err=err, threads=1,
                     region=region, region_lambda=9.0)
        recs = check_json_lines(out.getvalue(), 12)
        densities[str(region)] = np.mean([r["mac_density"] for r in recs[1:]])
    assert densities["(0.0, 0.0, 1.0, 1.0)"] > densities["None"], densities
    assert densities["motion"] >= densities["None"], densities


def test_live_falls_back_to_headless_without_a_display(assets, monkeypatch):
    from streaming import live as live_mod

    for display, why in ((None, "DISPLAY is not set"), (":4321", "no X server")):
        if display is None:
            monkeypatch.delenv("DISPLAY", raising=False)
        else:   # a display name nobody serves: Qt would abort the process; the CLI must not get there
            monkeypatch.setenv("DISPLAY", display)
        out, err = io.StringIO(), io.StringIO()
        summary = live_mod.run(str(assets.model), str(assets.video), max_frames=6, out=out, err=err, threads=1)
        assert f"no display ({why}" in err.getvalue() and "running headless" in err.getvalue()
        check_json_lines(out.getvalue(), 6)
        assert summary["headless"] and summary["frames"] == 6


def test_a_single_connection_stream_is_opened_once_and_its_faults_counted(assets):
    """A camera that serves one client (max_connections=1) stays open while the model loads; drops
    count from the engine's first frame; a burst of corrupt frames is counted in the summary."""
    from mjpeg_server import MJPEGServer
    from streaming import live as live_mod

    with MJPEGServer(size=(64, 48), fps=60, max_connections=1, corrupt_frames=(5, 4)) as srv:
        out, err = io.StringIO(), io.StringIO()
        summary = live_mod.run(str(assets.model), srv.url, headless=True, max_frames=12, out=out, err=err, threads=1)
        assert srv.connections == 1
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary["frames"] == len(recs) == 12, err.getvalue()
    assert recs[0]["source_index"] > 5   # the reader ran while the model loaded (and kept the newest frame)
    first = recs[0]["source_index"]
    # every frame the engine did not get after its first one is a drop, and only those
    assert [r["dropped"] for r in recs] == [r["source_index"] - first - i for i, r in enumerate(recs)]
    assert summary["dropped"] >= recs[-1]["dropped"]
    assert summary["corrupt"] == 4 and summary["reconnects"] == 0 and summary["stalls"] == 0
    assert "corrupt 4" in err.getvalue().strip().splitlines()[-1]


# --- the window, for real, under Xvfb -------------------------------------------------------------


def read_xwd(path: Path) -> np.ndarray:
    """An ``xwd`` dump (ZPixmap, 24/32 bits per pixel, TrueColor) as RGB uint8 (H, W, 3)."""
    data = path.read_bytes()
    hdr = struct.unpack(">25I", data[:100])  # XWDFileHeader: 25 big-endian CARD32
    header_size, version, fmt, _depth, width, height, _xoff, byte_order = hdr[:8]
    bpp, bpl, _vclass, rmask, gmask, bmask, _bits, _entries, ncolors = hdr[11:20]
    assert version == 7 and fmt == 2 and bpp in (24, 32), hdr
    raw = np.frombuffer(data, np.uint8, count=height * bpl, offset=header_size + 12 * ncolors).reshape(height, bpl)
    px = raw[:, : width * bpp // 8].reshape(height, width, bpp // 8).astype(np.uint32)
    order = range(bpp // 8) if byte_order == 0 else reversed(range(bpp // 8))   # 0: LSBFirst
    v = sum(px[..., b] << (8 * i) for i, b in enumerate(order))
    return np.dstack([((v & m) >> ((m & -m).bit_length() - 1)).astype(np.uint8) for m in (rmask, gmask, bmask)])


def _start_xvfb():
    """Xvfb on a display number it picks itself (``-displayfd``: free and ready when it reports)."""
    r, w = os.pipe()
    proc = subprocess.Popen([shutil.which("Xvfb"), "-displayfd", str(w), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    buf = b""
    deadline = time.monotonic() + 30
    while not buf.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 1.0)
        if ready:
            chunk = os.read(r, 64)
            if not chunk:
                break
            buf += chunk
    os.close(r)
    if not buf.strip().isdigit():
        proc.kill()
        proc.wait()
        pytest.fail(f"Xvfb did not start (reported {buf!r})")
    return proc, f":{int(buf)}"


def _wait_for_line(proc, needle: str, timeout: float) -> list[str]:
    """stderr lines of ``proc`` until one contains ``needle`` (or it exits / times out)."""
    lines, fd = [], proc.stderr.fileno()
    os.set_blocking(fd, False)
    pending = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *done, pending = pending.split(b"\n")
            lines += [d.decode(errors="replace") for d in done]
            if any(needle in ln for ln in lines):
                return lines
        elif proc.poll() is not None:
            break
    return lines


def _default_sigint():
    """Start a child with SIGINT's default action, so that Python turns it into KeyboardInterrupt.
    A process started in the background of a non-interactive shell (``pytest ... &``) ignores
    SIGINT, its children inherit that, and Python then installs no handler: the test's Ctrl-C
    was ignored and live held its frame to the end ("end of input", not "interrupted")."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_live_window_under_xvfb(assets, tmp_path):
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb x11-apps; .ci/run installs both)")
    assert shutil.which("xwd"), "xwd (apt package x11-apps) is needed to take the screenshot"
    from streaming.overlay import panel_rects

    xvfb, display = _start_xvfb()
    snap, shot = tmp_path / "snap.png", tmp_path / "screen.xwd"
    env = dict(ENV, DISPLAY=display)
    proc = subprocess.Popen([sys.executable, "-m", "streaming.live", "--model", str(assets.model), "--source", str(assets.video),
                             "--hold-ms", "60000", "--snapshot", str(snap), "--threads", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)  # fmt: skip
    try:
        lines = _wait_for_line(proc, "holding the last frame", timeout=240)
        assert any("holding the last frame" in ln for ln in lines), "\n".join(lines[-20:])
        # The X server paints the window some time after the last imshow; on a loaded machine that
        # took over 0.5 s (a full-suite run got an all-black screen). Poll for up to 30 s: the window
        # holds the frame for 60 s, and a window that never shows it still fails below.
        deadline = time.monotonic() + 30
        while True:
            time.sleep(0.5)
            subprocess.run(["xwd", "-root", "-silent", "-display", display, "-out", str(shot)], check=True, timeout=30)
            if (read_xwd(shot).std() > 10 and snap.exists()) or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)   # Ctrl-C ends it with a summary
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        xvfb.terminate()
        xvfb.wait(timeout=10)
    lines += err.decode(errors="replace").splitlines()
    assert proc.returncode == 0, "\n".join(lines[-20:])
    assert out == b""   # window mode prints no JSON unless --json
    assert not any("no display" in ln for ln in lines)
    assert "24 frames" in lines[-1] and "interrupted" in lines[-1], lines[-1]

    screen = read_xwd(shot)
    assert screen.shape == (768, 1024, 3) and screen.std() > 10, "the screenshot is blank"
    canvas = cv2.cvtColor(cv2.imread(str(snap)), cv2.COLOR_BGR2RGB)   # exactly what was drawn last
    h, w = canvas.shape[:2]
    assert (w, h) == (640, 480)   # 64x48 frames enlarged 10x for display
    # the window shows exactly that image somewhere on the screen
    res = cv2.matchTemplate(screen, canvas, cv2.TM_SQDIFF_NORMED)
    _, _, (x0, y0), _ = cv2.minMaxLoc(res)
    window = screen[y0:y0 + h, x0:x0 + w].astype(np.int16)
    assert np.abs(window - canvas).mean() < 1.0, "the window does not show the rendered frame"
    # ... and that is the video with the overlay: the last frame, enlarged, outside the panels ...
    video = cv2.resize(decoded(assets.video)[-1], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    rects = panel_rects(w, h)
    mid = slice(rects["top"][3] + 5, rects["bottom"][1] - 5)
    assert np.abs(window[mid] - video[mid]).mean() < 3.0
    # ... and darkened panels with white text over it (the video itself has no pixel above 160)
    for name, (px0, py0, px1, py1) in rects.items():
        panel, under = window[py0:py1, px0:px1], video[py0:py1, px0:px1]
        white = np.all(panel > 200, axis=2).sum()
        assert white > 100, f"no overlay text in the {name} panel ({white} white pixels)"
        assert panel.mean() < 0.75 * under.mean(), f"the {name} panel is not drawn over the video"
    # nothing outside the window: the rest of the screen is the empty root window
    rest = screen.copy()
    rest[y0:y0 + h, x0:x0 + w] = 0
    assert rest.max() == 0


# --- errors: exit 2, one line ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["bad_args", "bad_region", "missing_model", "missing_source", "unconvertible"])
def test_live_cli_errors_are_one_line(assets, case):
    model, source, extra = assets.model, assets.video, ["--headless"]
    expect = {"bad_args": "--max-frames", "bad_region": "--region", "missing_model": "no such file",
              "missing_source": "no such file", "unconvertible": "UpSampling2D"}[case]
    if case == "bad_args":
        extra += ["--max-frames", "0"]
    elif case == "bad_region":
        extra += ["--region", "0.5,0.5,0.2,0.9"]
    elif case == "missing_model":
        model = assets.dir / "nope.keras"
    elif case == "missing_source":
        source = assets.dir / "nope.avi"
    else:
        model = assets.bad_model
    r = live("--model", model, "--source", source, *extra)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m streaming.live: error:") and expect in lines[0], r.stderr
    assert r.stdout == ""
