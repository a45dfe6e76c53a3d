"""``training.fit --lr-warmup``: a linear rise to the learning rate, then the same cosine decay."""

import dataclasses

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from training.fit import FitConfig, build_parser, compile_model  # noqa: E402


def _rates(cfg, steps_per_epoch, steps):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    compile_model(model, cfg, steps_per_epoch)
    schedule = keras.optimizers.schedules.deserialize(model.optimizer.get_config()["learning_rate"])
    return np.array([float(schedule(s)) for s in steps])


def test_default_is_the_plain_cosine_decay():
    cfg = dataclasses.replace(FitConfig(), epochs=2, learning_rate=1e-3)
    r = _rates(cfg, 10, [0, 10, 19, 20])
    assert r[0] == pytest.approx(1e-3)
    assert r[0] > r[1] > r[2] >= r[3] == pytest.approx(5e-5)  # alpha 0.05 at the end


def test_warmup_rises_linearly_then_decays_to_the_same_floor():
    cfg = dataclasses.replace(FitConfig(), epochs=2, learning_rate=1e-3, lr_warmup=0.25)  # 5 of 20 steps
    r = _rates(cfg, 10, [0, 1, 5, 6, 20])
    assert r[0] == pytest.approx(1e-4)  # a tenth of the rate
    assert r[1] == pytest.approx(1e-4 + (1e-3 - 1e-4) / 5)
    assert r[2] == pytest.approx(1e-3)  # the peak at the end of the warm-up
    assert r[3] < r[2]
    assert r[4] == pytest.approx(5e-5)


def test_cli_accepts_lr_warmup_and_shows_its_default():
    p = build_parser()
    assert p.parse_args(["--lr-warmup", "0.1"]).lr_warmup == 0.1
    assert "--lr-warmup" in p.format_help()
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--lr-warmup", "-1"])
    assert e.value.code == 2


def test_cli_rejects_a_warmup_of_the_whole_run_in_one_line(capsys):
    from training.fit import main

    assert main(["--lr-warmup", "1", "--out", "unused-never-written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr-warmup must be < 1" in err[0]
