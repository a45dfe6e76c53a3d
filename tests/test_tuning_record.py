"""Saved tunings (``streaming.tuning``: ``tune``, ``save_tuning``/``load_tuning``, ``apply_tuning``,
``use_tuning``) and ``python -m streaming.tune``: a deployed engine runs the kernels and
break-evens measured for its model and thread count, or refuses a tuning measured for others."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deltanet.cli import CliError
from fakes import write_video
from test_live import make_model, scene_frames

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("tuning")
    write_video(d / "clip.avi", scene_frames(16, seed=4), fps=25)
    return SimpleNamespace(dir=d, video=d / "clip.avi", model=make_model(d / "delta.keras"),
                           other=make_model(d / "other.keras", baseline=True, seed=2))


def tune_cli(*args):
    return subprocess.run([sys.executable, "-m", "streaming.tune", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env=ENV, timeout=400)


def test_tune_cli_writes_beside_the_model_and_report_loads_it(assets, tmp_path):
    from streaming import report
    from streaming.model_io import load_engine
    from streaming.tuning import apply_tuning, load_tuning, tuning_path

    r = tune_cli("--model", assets.model, "--source", assets.video, "--frames", "8", "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    path = tuning_path(assets.model)
    assert path == assets.dir / "delta.tuning.json" and path.is_file() and not list(assets.dir.glob("*.tmp"))
    assert "wrote" in r.stderr and str(path) in r.stderr
    record = load_tuning(path)
    engine = load_engine(assets.model, threads=1)
    assert set(record["granularity"]) == set(engine.layer_names) == set(record["breakeven"])
    assert record["threads"] == 1 and record["tuning_frames"] == 8 and record["source"] == str(assets.video)
    for v in record["breakeven"].values():  # measured crossovers (None: the delta kernel never lost)
        assert v is None or 0 < v <= 1.0 + 1e-9, v
    # the whole-frame check: three settings timed, the fastest kept, and the record is that one
    check = record["check"]
    assert set(check["ms_per_frame"]) == {"tuned", "tuned, no fallback", "element-wise, no fallback", "every layer dense"}
    assert all(ms > 0 for ms in check["ms_per_frame"].values())
    assert check["ms_per_frame"][check["kept"]] == min(check["ms_per_frame"].values())
    if check["kept"] in ("tuned, no fallback", "element-wise, no fallback"):
        assert all(v is None for v in record["breakeven"].values())
    if check["kept"] == "every layer dense":
        assert all(v == 1e-9 for v in record["breakeven"].values())
    if check["kept"] == "element-wise, no fallback":
        assert set(record["granularity"].values()) == {"element"}
    apply_tuning(engine, record)
    assert engine.granularity == record["granularity"]
    assert {k: (None if math.isinf(v) else v) for k, v in engine.breakeven.items()} == record["breakeven"]

    # --tuning auto (the default) finds it; none ignores it; both give the same predictions
    reps = {}
    for spec in ("auto", "none"):
        reps[spec] = report.run(str(assets.model), str(assets.video), str(tmp_path / spec), frames=8, threads=1, warmup=1,
                                progress=False, out=io.StringIO(), tuning=spec)
    assert reps["auto"]["tuning"] == str(path) and reps["none"]["tuning"] is None
    saved = json.loads((tmp_path / "auto" / "report.json").read_text())
    assert saved["tuning"] == str(path)
    assert reps["auto"]["mac_density"] == pytest.approx(reps["none"]["mac_density"], rel=1e-5)


def test_a_tuning_for_another_model_or_thread_count_is_refused(assets, tmp_path):
    from streaming.model_io import load_engine
    from streaming.tuning import apply_tuning, save_tuning, tune, tuning_record, use_tuning

    engine = load_engine(assets.model, threads=1)
    record = tune(engine, np.stack([engine.prepare(f) for f in scene_frames(6, seed=1)]))
    assert record == tuning_record(engine, 6)
    with pytest.raises(ValueError, match="threads=1.*threads=2"):
        apply_tuning(load_engine(assets.model, threads=2), record)
    with pytest.raises(ValueError, match="another model"):
        apply_tuning(load_engine(assets.other, threads=1), dict(record, granularity={"nope": "element"}))
    with pytest.raises(ValueError, match="version"):
        apply_tuning(engine, dict(record, version=0))
    path = save_tuning(record, tmp_path / "t.json")
    assert use_tuning(engine, str(path), assets.model) == path
    assert use_tuning(engine, "auto", tmp_path / "no_such_model.keras") is None  # nothing saved: untuned
    assert use_tuning(engine, "none", assets.model) is None
    # a saved tuning for another thread count: an explicit --tuning PATH is refused, while the
    # default auto (the user did not ask for that file) runs untuned and says why
    save_tuning(record, tmp_path / "m.tuning.json")
    engine2 = load_engine(assets.model, threads=2)
    with pytest.raises(CliError, match="threads=1.*threads=2"):
        use_tuning(engine2, str(tmp_path / "m.tuning.json"), tmp_path / "m.keras")
    said = []
    assert use_tuning(engine2, "auto", tmp_path / "m.keras", log=said.append) is None
    assert len(said) == 1 and "not used" in said[0] and "threads=1" in said[0], said
    assert engine2.granularity == load_engine(assets.model, threads=2).granularity  # untouched
    with pytest.raises(CliError, match="no such file"):
        use_tuning(engine, str(tmp_path / "missing.json"), assets.model)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CliError, match="cannot read tuning"):
        use_tuning(engine, str(tmp_path / "bad.json"), assets.model)
    (tmp_path / "other.json").write_text(json.dumps({"granularity": []}))
    with pytest.raises(CliError, match="not a deltanet tuning"):
        use_tuning(engine, str(tmp_path / "other.json"), assets.model)


@pytest.mark.parametrize("args, needle", [
    (["--source", "x.avi"], "--model"),
    (["--model", "/nope.keras", "--source", "x.avi"], "no such file"),
    (["--model", "MODEL", "--source", "x.avi", "--frames", "0"], "--frames"),
    (["--model", "MODEL", "--source", "VIDEO", "--out", "/no/such/dir/t.json"], "does not exist"),
])
def test_tune_cli_errors_are_one_line_exit_2(assets, args, needle):
    args = [str(assets.model) if a == "MODEL" else str(assets.video) if a == "VIDEO" else a for a in args]
    r = tune_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_tune_refresh_is_saved_and_applied(assets, tmp_path):
    """``streaming.tune --refresh`` measures the refresh frames' break-even and the record turns them on
    where it is applied; a record without the key (written before refresh frames) leaves them off."""
    from streaming import tune
    from streaming.model_io import load_engine
    from streaming.tuning import apply_tuning, load_tuning

    plain = tune.run(str(assets.model), str(assets.video), frames=8, threads=1, out=str(tmp_path / "plain.json"), log=lambda m: None)
    assert plain["refresh_at"] is None
    lines = []
    record = tune.run(str(assets.model), str(assets.video), frames=8, threads=1, out=str(tmp_path / "r.json"), log=lines.append,
                      refresh=True)
    at = record["refresh_at"]
    assert at is None or 0.0 <= at <= 1.0
    assert "refresh frames" in lines[-1]
    engine = load_engine(assets.model, threads=1)
    apply_tuning(engine, load_tuning(tmp_path / "r.json"))
    assert engine.refresh_at == at
    old = dict(record, refresh_at=0.5)
    del old["refresh_at"]
    engine.refresh_at = 0.3
    apply_tuning(engine, old)
    assert engine.refresh_at is None
