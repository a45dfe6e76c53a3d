"""``python -m streaming.bench`` end to end on a tiny generated clip and model: every contender, the JSON's shape and
the values that can be checked (agreements, frame ranges, speedups against the medians, memory). No speed claims."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deltanet
from streaming.bench_stats import paired_ratios, speedups
from streaming.contenders import CONTENDERS
from streaming.convert import to_plan

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.slow
def test_bench_runs_every_contender_and_writes_consistent_json(tmp_path):
    from fakes import write_video
    from test_engine import static_camera_frames

    model = deltanet.build_model(3, arch="tiny", size=32, threshold=0.05)
    model.save(tmp_path / "m.keras")
    write_video(tmp_path / "clip.avi", static_camera_frames(40, size=48, seed=8), fps=25)
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "streaming.bench", "--model", str(tmp_path / "m.keras"), "--source", str(tmp_path / "clip.avi"),
         "--frames", "20", "--tune-frames", "8", "--block", "5", "--threads", "1", "--warmup", "2", "--json", str(out),
         "--save-tuning", str(tmp_path / "m.tuning.json"), "--refresh"],
        cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["skipped"] == {}, res["skipped"]
    assert res["frames"]["tuning"] == [0, 8] and res["frames"]["timed"] == [8, 28] and res["frames"]["timed_count"] == 20
    assert res["frames"]["tuning"][1] <= res["frames"]["timed"][0]  # disjoint
    assert res["int8_calibration_frames"] == res["frames"]["tuning"]
    assert set(res["ms_per_frame"]) == set(CONTENDERS) | {"delta_refresh"}  # --refresh adds the engine with refresh frames
    for name, s in res["ms_per_frame"].items():
        assert 0 < s["median"] <= s["p90"] and s["mean"] > 0, name
    assert set(res["speedup"]) == {"vs_dense_engine", "vs_keras", "vs_tflite", "vs_tflite_int8", "vs_onnxruntime"}
    ms = res["ms_per_frame"]
    keras_faster = min(("keras", "keras_nojit"), key=lambda k: ms[k]["median"])
    assert res["speedup"]["vs_keras"]["against"] == keras_faster
    for key, s in res["speedup"].items():
        other = s.get("against", key.removeprefix("vs_"))
        assert s["of_medians"] == pytest.approx(ms[other]["median"] / ms["delta_engine"]["median"]), key
        assert s["blocks"] == 4 and s["paired_iqr"][0] <= s["paired"] <= s["paired_iqr"][1] and s["paired"] > 0
    for key in ("top1_agreement", "top1_agreement_vs_dense", "int8_top1_agreement"):
        assert 0 <= res[key] <= 1, key
    assert res["max_rel_logit_error"] <= 1e-4 and res["top1_agreement"] == 1.0
    assert set(res["agreement_vs_per_frame"]) == set(CONTENDERS) | {"delta_refresh"}
    f = res["refresh"]
    assert f["at"] is None or 0 <= f["at"] <= 1
    assert 0 <= f["frames_refreshed"] <= 19 and 0 < f["mac_density"] <= 1 and 0 <= f["top1_agreement_vs_dense"] <= 1
    assert f["top1_agreement_vs_dense"] == res["agreement_vs_per_frame"]["delta_refresh"]["top1"]
    sr = res["speedup_refresh"]
    assert set(sr) == set(res["speedup"]) | {"vs_delta_engine"}
    assert sr["vs_delta_engine"]["of_medians"] == pytest.approx(ms["delta_engine"]["median"] / ms["delta_refresh"]["median"])
    assert sr["vs_tflite"]["of_medians"] == pytest.approx(ms["tflite"]["median"] / ms["delta_refresh"]["median"])
    # The dense float contenders compute the very function of the reference; int8 is allowed its quantization error.
    for name in ("dense_engine", "keras", "keras_nojit", "tflite", "onnxruntime"):
        assert res["agreement_vs_per_frame"][name]["max_rel_logit_error"] < 1e-3, name
    assert res["agreement_vs_per_frame"]["tflite_int8"]["top1"] == res["int8_top1_agreement"]
    floor = res["float32_floor"]
    assert "XLA" in floor["how"] and 0 <= floor["max_rel_logit_error"] <= 1e-4 and floor["top1_agreement"] == 1.0
    assert len(res["layers"]) == len(to_plan(model).mac_steps())
    # the tuning it measured (and timed with) is saved for live/report: the same kernel per layer
    saved = json.loads((tmp_path / "m.tuning.json").read_text())
    assert saved["threads"] == 1 and saved["tuning_frames"] == 8
    assert saved["granularity"] == {layer["name"]: layer["granularity"] for layer in res["layers"]}
    assert saved["breakeven"] == res["fallback"]["breakeven"]
    assert 0 < res["mac_density"] <= 1 and res["theoretical_speedup"] == pytest.approx(1 / res["mac_density"])
    mem = res["memory"]
    arenas = mem["engine_arena_bytes"]["delta_engine"]
    n_weights = sum(int(np.prod(w.shape)) for w in deltanet.per_frame_model(model).weights)
    assert arenas["weights"] >= 4 * n_weights * 0.5 and arenas["state"] > 0 and arenas["scratch"] > 0
    assert mem["artifact_bytes"]["tflite_int8"] < mem["artifact_bytes"]["tflite"]
    assert set(mem["rss"]) == set(CONTENDERS)
    for name, m in mem["rss"].items():
        assert "error" not in m, (name, m)
        assert m["baseline_mb"] > 0 and m["after_run_mb"] >= m["baseline_mb"] * 0.9 and m["peak_mb"] >= m["after_run_mb"] * 0.99, name


def test_bench_skips_on_request_and_checks_arguments(tmp_path):
    r = subprocess.run([sys.executable, "-m", "streaming.bench", "--model", "/nope.keras", "--source", "x.avi"], cwd=ROOT,
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no such file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "streaming.bench", "--model", "m.keras", "--source", "x.avi", "--skip", "delta_engine"],
                       cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--skip" in r.stderr


def test_paired_speedup_is_the_median_of_per_block_ratios():
    base = [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [1.0, 1.0, 1.0]]
    other = [[3.0, 3.0, 3.0], [4.0, 4.0, 40.0], [2.0, 2.0, 2.0]]  # a load spike in the second block of "other"
    assert paired_ratios(base, other).tolist() == [3.0, 2.0, 2.0]
    s = speedups({"delta_engine": base, "tflite": other, "keras": other, "keras_nojit": base})["vs_tflite"]
    assert s["paired"] == 2.0 and s["of_medians"] == pytest.approx(3.0 / 1.0) and s["blocks"] == 3
    vs_keras = speedups({"delta_engine": base, "keras": other, "keras_nojit": base})["vs_keras"]
    assert vs_keras["against"] == "keras_nojit" and vs_keras["paired"] == 1.0
    with pytest.raises(ValueError):
        paired_ratios(base, other[:2])


def test_a_missing_runtime_is_unavailable_not_a_crash(monkeypatch):
    from streaming import contenders

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(contenders.Unavailable, match="onnxruntime is not installed"):
        contenders.onnx_contender(b"", 1)
