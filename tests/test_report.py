"""streaming.report: every file written, report.json agreeing with the CSVs, --compare, a self-contained
HTML page, the model loader's errors, and the CLI's one-line errors. Real parts only."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fakes import write_video
from test_live import CLASSES, make_model, make_unconvertible_model, scene_frames
from deltanet.cli import CliError

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
FILES = ("report.json", "frames.csv", "layers.csv", "report.html", "density_heatmap.png", "timeline.png", "layer_macs.png")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    write_video(d / "clip.avi", scene_frames(20, seed=3), fps=25)
    return SimpleNamespace(dir=d, video=d / "clip.avi", model=make_model(d / "delta.keras"),
                           baseline=make_model(d / "baseline.keras", baseline=True, seed=2),
                           bad_model=make_unconvertible_model(d / "upsampling.keras"))


def report_cli(*args, timeout=400):
    return subprocess.run([sys.executable, "-m", "streaming.report", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=ENV, timeout=timeout)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_agrees_with_csvs(summary: dict, frames: list[dict], layers: list[dict]) -> None:
    """report.json's numbers are the means/medians of the CSV rows (frames after the first)."""
    label = summary["label"]
    fr = [r for r in frames if r["model"] == label]
    lr = [r for r in layers if r["model"] == label]
    n, names = summary["frames"], [lay["name"] for lay in summary["layers"]]
    assert len(fr) == n and [int(r["frame"]) for r in fr] == list(range(n))
    assert len(lr) == n * len(names)
    assert [int(r["keyframe"]) for r in fr] == [1] + [0] * (n - 1)
    later = [r for r in fr if int(r["frame"]) >= 1]
    assert summary["mac_density"] == pytest.approx(np.mean([float(r["mac_density"]) for r in later]), rel=1e-9)
    assert summary["executed_macs_per_frame"] == pytest.approx(np.mean([int(r["executed_macs"]) for r in later]), rel=1e-9)
    assert summary["theoretical_speedup"] == pytest.approx(1 / summary["mac_density"])
    assert summary["timing"]["delta_ms_median"] == pytest.approx(np.median([float(r["latency_ms"]) for r in later]))
    assert summary["timing"]["dense_ms_median"] == pytest.approx(np.median([float(r["dense_ms"]) for r in fr]))
    assert summary["speedup_vs_dense_engine"] == pytest.approx(
        summary["timing"]["dense_ms_median"] / summary["timing"]["delta_ms_median"])
    from deltanet.density import mac_density

    for r in fr:   # a frame's MAC density: its layers' transmitted-delta densities, MAC-weighted
        rows = [x for x in lr if x["frame"] == r["frame"]]
        assert [x["layer"] for x in rows] == names
        assert int(r["executed_macs"]) == sum(int(x["executed_macs"]) for x in rows)
        expected = 1.0 if int(r["keyframe"]) else mac_density([int(x["dense_macs"]) for x in rows],
                                                              [float(x["temporal_density"]) for x in rows])
        assert float(r["mac_density"]) == pytest.approx(expected, rel=1e-9)  # a keyframe is a dense pass
        # ... and what the kernels multiplied is the executed MACs over the dense MACs
        assert float(r["executed_mac_density"]) == pytest.approx(int(r["executed_macs"]) / int(r["dense_macs"]), rel=1e-9)
        assert r["top1"] in CLASSES and 0 < float(r["score"]) <= 1
    for i, lay in enumerate(summary["layers"]):
        rows = [x for x in lr if x["layer"] == lay["name"] and int(x["frame"]) >= 1]
        assert {x["type"] for x in rows} == {lay["type"]} and lay["type"] in ("conv2d", "depthwise")
        assert int(rows[0]["dense_macs"]) == lay["macs_dense"] and int(rows[0]["layer_index"]) == i
        assert lay["temporal_density"] == pytest.approx(np.mean([float(x["temporal_density"]) for x in rows]), rel=1e-9)
        assert lay["mac_density"] == pytest.approx(np.mean([float(x["mac_density"]) for x in rows]), rel=1e-9)
        assert lay["ms"] == pytest.approx(np.median([float(x["ms"]) for x in rows]), rel=1e-9)
        for x in rows[:3]:
            assert float(x["temporal_density"]) == pytest.approx(int(x["nonzero_deltas"]) / int(x["input_elements"]))
    # ... and the one definition of MAC density gives the summary from the per-layer means
    assert summary["mac_density"] == pytest.approx(
        mac_density([lay["macs_dense"] for lay in summary["layers"]], [lay["mac_density"] for lay in summary["layers"]]), rel=1e-9)


@pytest.mark.slow
def test_report_cli_with_compare_writes_consistent_files(assets, tmp_path):
    out = tmp_path / "rep"
    r = report_cli("--model", assets.model, "--source", assets.video, "--out", out, "--frames", 16,
                   "--compare", assets.baseline, "--threads", 1, "--warmup", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p.name for p in out.iterdir() if p.name not in FILES]   # no temporary files left
    rep = json.loads((out / "report.json").read_text())
    frames, layers = read_csv(out / "frames.csv"), read_csv(out / "layers.csv")
    assert rep["frames"] == 16 and rep["compare"]["frames"] == 16
    assert {r["model"] for r in frames} == {"delta", "baseline"} == {r["model"] for r in layers}
    check_agrees_with_csvs(rep, frames, layers)
    check_agrees_with_csvs(rep["compare"], frames, layers)
    # exact against the Keras model, and the delta model skips work that the baseline does not
    for s in (rep, rep["compare"]):
        assert s["max_rel_logit_error"] <= 1e-4 and s["top1_agreement"] == 1.0
        assert "this machine" in s["timing"]["note"] and s["timing"]["threads"] == 1
    assert rep["mac_density"] < 0.5 < rep["compare"]["mac_density"]
    # plots are real PNGs; the page embeds them and links to nothing outside itself
    for name in ("density_heatmap.png", "timeline.png", "layer_macs.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 400
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert not re.search(r"<(script|link)\b|@import|url\(", page, re.I)
    assert "measured speedup vs dense engine (this machine)" in page and "baseline" in page
    # the terminal gets the summary table on stdout, the progress bar on stderr
    assert "MAC density (frames after the first)" in r.stdout and "layers of delta" in r.stdout
    assert "report" in r.stderr and "%" in r.stderr


def test_report_run_single_model_in_process(assets, tmp_path):
    from streaming import report

    out = io.StringIO()
    rep = report.run(str(assets.model), str(assets.video), str(tmp_path / "r"), frames=6, threads=1, warmup=1,
                     progress=False, out=out)
    assert "compare" not in rep and rep["frames"] == 6 and rep["kind"] == "keras"
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["mac_density"] == rep["mac_density"]
    fell = [lay["fallback_frames"] for lay in saved["layers"]]
    assert all(0 <= n <= 5 for n in fell) and saved["frames_with_fallback"] <= 5
    assert "dense fallback" in out.getvalue()
    check_agrees_with_csvs(saved, read_csv(tmp_path / "r" / "frames.csv"), read_csv(tmp_path / "r" / "layers.csv"))
    assert "delta" in out.getvalue()


def test_load_engine_errors(assets, tmp_path):
    from streaming.model_io import load_engine

    with pytest.raises(CliError, match="no such file or directory"):
        load_engine(tmp_path / "missing.keras")
    with pytest.raises(CliError, match=r"cannot run model .*UpSampling2D"):
        load_engine(assets.bad_model)
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(CliError, match="cannot load model"):
        load_engine(garbage)
    try:
        import streaming.bundle  # noqa: F401
    except ImportError:
        with pytest.raises(CliError, match="bundle"):
            load_engine(tmp_path)   # a folder is read as a bundle
    else:
        with pytest.raises(CliError):
            load_engine(tmp_path)   # an empty folder is not a valid bundle
    engine = load_engine(assets.model, threads=1)
    assert engine.layer_names and engine.class_names == CLASSES


@pytest.mark.parametrize("case", ["bad_args", "missing_model", "missing_source", "unconvertible", "missing_compare"])
def test_report_cli_errors_are_one_line(assets, tmp_path, case):
    args = {"--model": assets.model, "--source": assets.video, "--out": tmp_path / "out"}
    expect = {"bad_args": "--frames", "missing_model": "no such file", "missing_source": "no such file",
              "unconvertible": "UpSampling2D", "missing_compare": "no such file"}[case]
    extra = []
    if case == "bad_args":
        extra = ["--frames", "-3"]
    elif case == "missing_model":
        args["--model"] = tmp_path / "nope.keras"
    elif case == "missing_source":
        args["--source"] = tmp_path / "nope.avi"
    elif case == "unconvertible":
        args["--model"] = assets.bad_model
    else:
        extra = ["--compare", tmp_path / "other.keras"]
    r = report_cli(*[x for kv in args.items() for x in kv], *extra)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m streaming.report: error:") and expect in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
