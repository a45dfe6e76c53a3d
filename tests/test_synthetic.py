"""training.synthetic: the embedded dataset is UCF101-shaped, deterministic, noisy, cached."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from training import synthetic, synthetic_render
from training.synthetic import ALL_CLASSES, generate, make_embedded_dataset, read_manifest, render_action, split_groups
from training.ucf101 import load_dataset_index, load_ucf101
from training.video import probe, read_video

TINY = dict(num_classes=3, videos_per_class=4, frames=12, size=64)
NAME = re.compile(r"^v_([A-Za-z]+)_g(\d\d)_c(\d\d)\.avi$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("emb") / "a", seed=0, progress=False, **TINY)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_exactly_ucf101(tiny):
    classes = list(ALL_CLASSES[:3])
    assert (tiny / "ucfTrainTestlist" / "classInd.txt").read_text().splitlines() == [
        f"{i + 1} {c}" for i, c in enumerate(classes)
    ]
    assert sorted(p.name for p in (tiny / "UCF-101").iterdir()) == sorted(classes)
    for cls in classes:
        names = sorted(p.name for p in (tiny / "UCF-101" / cls).iterdir())
        assert len(names) == 4
        for name in names:
            m = NAME.match(name)
            assert m and m.group(1) == cls, name
    for split in (1, 2, 3):
        train = (tiny / "ucfTrainTestlist" / f"trainlist0{split}.txt").read_text().splitlines()
        test = (tiny / "ucfTrainTestlist" / f"testlist0{split}.txt").read_text().splitlines()
        assert all(re.fullmatch(r"\w+/v_\w+_g\d\d_c\d\d\.avi [1-3]", line) for line in train)
        assert all(re.fullmatch(r"\w+/v_\w+_g\d\d_c\d\d\.avi", line) for line in test)
        train_groups = {int(line.split("_g")[1][:2]) for line in train}
        test_groups = {int(line.split("_g")[1][:2]) for line in test}
        assert train_groups and test_groups and not train_groups & test_groups
        assert test_groups == set(split_groups(4, split))


def test_the_ucf101_loader_reads_it(tiny):
    index = load_dataset_index(str(tiny), split=1)
    assert index.kind == "ucf101" and index.class_names == list(ALL_CLASSES[:3])
    # 4 groups: 1 tested, 1 of the other 3 carved out for validation
    assert (len(index.train), len(index.val), len(index.test), index.missing) == (6, 3, 3, [])
    for path, label in index.train + index.val + index.test:
        assert Path(path).parent.name == index.class_names[label]
    info = probe(index.train[0][0])
    assert (info.frames, info.height, info.width, info.fps) == (12, 64, 64, 25.0)


def test_ucf101_style_splits_for_25_groups():
    # the default: 25 groups, tested like UCF101 on g01-g07 / g08-g14 / g15-g21
    assert [split_groups(25, s) for s in (1, 2, 3)] == [list(range(1, 8)), list(range(8, 15)), list(range(15, 22))]


def test_same_seed_same_bytes_other_seed_other_bytes(tiny, tmp_path):
    again = generate(tmp_path / "b", seed=0, progress=False, workers=2, **TINY)  # threads do not change the output
    a, b = _files(tiny), _files(again)
    a.pop("manifest.json"), b.pop("manifest.json")  # records the generation time
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    other = generate(tmp_path / "c", seed=1, progress=False, **TINY)
    c = _files(other)
    assert sum(a[k] != c[k] for k in a if k.endswith(".avi")) == 12
    assert read_manifest(tiny)["files"] == read_manifest(again)["files"]


def test_pixel_deltas_are_not_sparse(tiny):
    # sensor noise, flicker and jitter: nearly every pixel changes between frames
    for cls in ALL_CLASSES[:3]:
        video = read_video(tiny / "UCF-101" / cls / f"v_{cls}_g01_c01.avi").astype(np.int16)
        changed = np.abs(np.diff(video, axis=0)).max(axis=-1) > 0
        assert changed.mean() > 0.5, (cls, changed.mean())


def test_looks_are_shared_across_classes_not_within_a_class(tiny):
    # clip gXX_cYY has the same background in every class: looks carry no class information
    def frame(cls, name):
        return read_video(tiny / "UCF-101" / cls / name).astype(np.float32).mean(0)

    same = np.median(np.abs(frame("MoveLeft", "v_MoveLeft_g01_c01.avi") - frame("MoveRight", "v_MoveRight_g01_c01.avi")))
    other = np.median(np.abs(frame("MoveLeft", "v_MoveLeft_g01_c01.avi") - frame("MoveLeft", "v_MoveLeft_g02_c01.avi")))
    assert same < 4 < other


def _circle_fit_error(states) -> float:
    """Largest distance (px) of the positions from their least-squares circle (Kasa fit)."""
    x, y = np.array([s.x for s in states]), np.array([s.y for s in states])
    (d, e, f), *_ = np.linalg.lstsq(np.stack([x, y, np.ones_like(x)], 1), -(x**2 + y**2), rcond=None)
    cx, cy = -d / 2, -e / 2
    dist = np.hypot(x - cx, y - cy)
    return float(np.abs(dist - np.sqrt(cx**2 + cy**2 - f)).max())


@pytest.mark.parametrize(
    "name, check",
    [
        ("MoveRight", lambda s: np.all(np.diff([x.x for x in s]) > 0)),
        ("MoveLeft", lambda s: np.all(np.diff([x.x for x in s]) < 0)),
        ("MoveUp", lambda s: np.all(np.diff([x.y for x in s]) < 0)),
        ("MoveDown", lambda s: np.all(np.diff([x.y for x in s]) > 0)),
        ("ZigZag", lambda s: len(set(np.sign(np.diff([x.y for x in s])))) == 2),
        ("Circle", lambda s: _circle_fit_error(s) < 0.5),
        ("ZoomIn", lambda s: all(b.r > a.r for a, b in zip(s, s[1:]) if a.segment == b.segment)),
        ("ZoomOut", lambda s: all(b.r < a.r for a, b in zip(s, s[1:]) if a.segment == b.segment)),
        ("SwingPendulum", lambda s: len({(round(x.x, 6), round(x.y, 6)) for x in s}) == 1 and np.ptp([x.angle for x in s]) > 0.5),
        ("SpinBar", lambda s: len(set(np.sign(np.diff([x.angle for x in s])))) == 1 and abs(s[-1].angle - s[0].angle) > 2),
        ("BlinkPulse", lambda s: np.ptp([x.x for x in s]) == 0 and np.ptp([x.opacity for x in s]) > 0.5),
    ],
)
def test_each_class_is_its_motion(name, check):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        video, states = render_action(name, rng, rng, frames=32, size=128, clean=True)
        assert video.shape == (32, 128, 128, 3) and len(states) == 32
        assert check(states), (name, seed)


@pytest.mark.parametrize("direction", ["MoveLeft", "MoveRight", "MoveUp", "MoveDown"])
def test_direction_is_visible_in_a_single_frame(direction):
    # the trail lies behind the object: a per-frame CNN can see which way it goes
    rng = np.random.default_rng(4)
    look = synthetic_render.random_look(rng, 128)
    factory, style = synthetic_render._CLASSES[direction]
    at = factory(rng, 128, look, 32)
    trail_frames = synthetic_render._trail_frames(at, style, look, 32)
    axis, sign = {"MoveLeft": (1, -1), "MoveRight": (1, 1), "MoveUp": (0, -1), "MoveDown": (0, 1)}[direction]
    for t in (0.0, 10.0, 20.0):
        obj, trail, _ = synthetic_render._frame_masks(at, style, look, t, 128, trail_frames)
        behind = np.argwhere(trail > 0)[:, axis].mean() - np.argwhere(obj > 0)[:, axis].mean()
        assert sign * behind < -look.radius, (direction, t, behind)


def test_cached_dataset_is_not_regenerated(tmp_path, capsys):
    root = make_embedded_dataset(tmp_path / "emb", progress=True, **TINY)
    assert "embedded dataset" in capsys.readouterr().err  # progress goes to stderr
    video = root / "UCF-101" / "MoveLeft" / "v_MoveLeft_g01_c01.avi"
    stamps = (video.stat().st_mtime_ns, (root / "manifest.json").stat().st_mtime_ns)
    assert make_embedded_dataset(tmp_path / "emb", progress=True, **TINY) == root
    assert capsys.readouterr().err == ""  # nothing generated, nothing printed
    assert (video.stat().st_mtime_ns, (root / "manifest.json").stat().st_mtime_ns) == stamps


def test_interrupted_generation_is_regenerated(tmp_path):
    root = make_embedded_dataset(tmp_path / "emb", progress=False, **TINY)
    victim = root / "UCF-101" / "MoveUp" / "v_MoveUp_g03_c01.avi"
    good = victim.read_bytes()
    # what an interrupted run leaves: some files, a half-written one, no manifest
    (root / "manifest.json").unlink()
    victim.write_bytes(good[:100])
    (root / "UCF-101" / "MoveUp" / "v_MoveUp_g04_c01.avi").unlink()
    assert read_manifest(root) is None
    make_embedded_dataset(tmp_path / "emb", progress=False, **TINY)
    assert victim.read_bytes() == good
    assert read_manifest(root)["params"]["videos_per_class"] == 4
    assert len(load_ucf101(root, split=1).train) == 6  # 4 groups: 1 test, 1 val, 2 train


def test_other_parameters_regenerate(tmp_path):
    root = make_embedded_dataset(tmp_path / "emb", progress=False, **TINY)
    make_embedded_dataset(tmp_path / "emb", progress=False, **{**TINY, "frames": 8})
    assert probe(root / "UCF-101" / "MoveLeft" / "v_MoveLeft_g01_c01.avi").frames == 8
    assert json.loads((root / "manifest.json").read_text())["params"]["frames"] == 8


def test_default_root_honours_deltanet_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTANET_CACHE", str(tmp_path / "cache"))
    root = make_embedded_dataset(progress=False, **TINY)
    assert root.parent == tmp_path / "cache"
    assert root.name.startswith(f"embedded-v{synthetic.FORMAT_VERSION}-")  # non-default parameters: own folder
    assert read_manifest(root) is not None
    assert os.path.isfile(tmp_path / "cache" / f".{root.name}.lock")


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        generate(tmp_path, num_classes=99, progress=False)
    with pytest.raises(ValueError, match="unknown synthetic class 'Dance'"):
        render_action("Dance", np.random.default_rng(0), np.random.default_rng(0))
