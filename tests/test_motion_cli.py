"""--motion global through the CLIs' run functions: a real (MJPG) panning video, a tiny real model."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest

from fakes import write_video
from test_live import make_model
from test_motion import pan, texture


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("motion_cli")
    frames = pan(texture(96, 320, seed=11), 24, size=32, vx=2, vy=0)  # the model's input size: no resizing
    write_video(d / "pan.avi", frames, fps=25)
    return SimpleNamespace(dir=d, video=d / "pan.avi", model=make_model(d / "delta.keras"))


def test_report_describes_the_compensated_run(assets):
    from streaming.report import run

    out = assets.dir / "report"
    report = run(str(assets.model), str(assets.video), str(out), frames=24, threads=1, motion="global", progress=False,
                 out=io.StringIO())  # fmt: skip
    saved = json.loads((out / "report.json").read_text())
    assert saved["motion"]["mode"] == "global" and saved["motion"]["frames_on_canvas"] > 0.5
    assert 0 < saved["mac_density"] < 2 and saved["top1_agreement"] is not None
    assert saved["mac_density"] == pytest.approx(report["mac_density"])
    with open(out / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    dx = np.array([float(r["camera_dx"]) for r in rows[2:]])
    assert np.median(dx) == pytest.approx(-2.0, abs=0.3)  # the camera pans right by 2 px/frame


def test_live_json_lines_carry_the_camera_motion(assets):
    from streaming.live import run

    out, err = io.StringIO(), io.StringIO()
    run(str(assets.model), str(assets.video), headless=True, motion="global", out=out, err=err)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == 24
    assert all("motion" in x for x in lines)
    assert np.median([x["motion"]["dx"] for x in lines[2:]]) == pytest.approx(-2.0, abs=0.3)
    assert any(x["motion"]["offset"] != [0, 0] for x in lines)


def test_overlay_shows_the_camera_motion():
    from streaming.overlay import OverlayInfo, compose, panel_rects

    frame = np.full((48, 64, 3), 90, np.uint8)
    info = dict(top=[("wave", 0.9)], mac_density=0.2, executed_macs=10, dense_macs=100, latency_ms=1.0, engine_ms=0.5, fps=30.0, frame=3)
    plain = compose(frame, OverlayInfo(**info), (640, 480))
    moving = compose(frame, OverlayInfo(**info, camera=(1.5, -0.5)), (640, 480))
    x0, y0, x1, y1 = panel_rects(640, 480, 1)["bottom"]
    assert not np.array_equal(plain[y0:y1, x0:x1], moving[y0:y1, x0:x1])
    assert np.array_equal(plain[:y0], moving[:y0])  # only the bottom strip says it
