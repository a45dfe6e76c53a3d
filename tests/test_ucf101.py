"""training.ucf101: the official UCF101 layout, class-folder trees, source classification."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fakes import QUIRK_DISK_NAME, QUIRK_LIST_NAME, make_class_folders, make_fake_ucf101
from training.ucf101 import (
    DataError,
    DatasetIndex,
    carve_val_groups,
    group_of,
    load_class_folders,
    load_dataset_index,
    load_tfds_index,
    load_ucf101,
    read_class_index,
)

CLASSES = ("ApplyEyeMakeup", QUIRK_LIST_NAME, "YoYo")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    # one listed file is missing on disk; broken files are the pipeline's business, not the index's
    return make_fake_ucf101(
        tmp_path_factory.mktemp("ucf") / "UCF101",
        classes=CLASSES,
        groups=(1, 2, 3, 4),
        clips=2,
        frames=4,
        size=(16, 16),
        corrupt={"YoYo/v_YoYo_g02_c02.avi": "missing"},
    )


def _rel(path: str) -> str:
    return "/".join(Path(path).parts[-2:])


def test_class_index_is_1_based_on_disk_0_based_in_the_api(fake):
    with pytest.warns(UserWarning, match="do not exist"):
        index = load_dataset_index(str(fake.root), split=1)
    assert index.kind == "ucf101" and index.class_names == list(CLASSES)
    assert index.num_classes == 3
    for path, label in index.train + index.val + index.test:
        assert Path(path).parent.name.lower() == CLASSES[label].lower()


@pytest.mark.parametrize("split", [1, 2, 3])
def test_splits_follow_the_list_files(fake, split):
    with pytest.warns(UserWarning, match="1 listed videos do not exist"):
        index = load_ucf101(fake.root, split=split)
    expect_train = {r.replace(QUIRK_LIST_NAME, QUIRK_DISK_NAME) for r in fake.train[split]} - {"YoYo/v_YoYo_g02_c02.avi"}
    expect_test = {r.replace(QUIRK_LIST_NAME, QUIRK_DISK_NAME) for r in fake.test[split]} - {"YoYo/v_YoYo_g02_c02.avi"}
    # test is the official test list; train and val together are the official train list
    assert {_rel(p) for p, _ in index.test} == expect_test
    assert {_rel(p) for p, _ in index.train} | {_rel(p) for p, _ in index.val} == expect_train
    assert index.val and index.train
    groups = {name: {group_of(p) for p, _ in index.subset(name)} for name in ("train", "val", "test")}
    assert not groups["train"] & groups["val"] and not groups["val"] & groups["test"] and not groups["train"] & groups["test"]
    assert index.split == split


def test_val_is_carved_by_whole_groups_the_same_in_every_class(tmp_path):
    # 10 training groups with 4 clips each: a per-video split would put clips of one group on both sides
    fake = make_fake_ucf101(tmp_path / "ucf", classes=("A", "B"), groups=tuple(range(1, 16)), clips=4, frames=2,
                            size=(8, 8), quirk=False)
    index = load_ucf101(fake.root, split=1)
    assert len({group_of(p) for p, _ in index.test}) == 5
    val_groups = {group_of(p) for p, _ in index.val}
    assert len(val_groups) == 2  # round(0.2 * 10 training groups)
    for name in ("train", "val", "test"):
        for g in {group_of(p) for p, _ in index.subset(name)}:
            # every clip of the group, in both classes, is in this subset
            members = [(p, lab) for p, lab in index.train + index.val + index.test if group_of(p) == g]
            assert len(members) == 8 and all(m in index.subset(name) for m in members)
    again = load_ucf101(fake.root, split=1)
    assert again.val == index.val and again.train == index.train  # fixed, no seed involved
    assert load_ucf101(fake.root, split=1, val_fraction=0.0).val == []


def test_carve_val_groups_edge_cases():
    videos = [(f"/x/A/v_A_g{g:02d}_c01.avi", 0) for g in (3, 4)] + [("/x/A/loose.avi", 0)]
    train, val = carve_val_groups(videos, "k", 0.2)
    # two groups: one goes to val even though round(0.4) = 0; the group-less file goes by its hash
    assert len({group_of(p) for p, _ in val if group_of(p)}) == 1 and len(train) + len(val) == 3
    assert group_of("v_X_g17_c03.avi") == 17 and group_of("clip.mp4") is None
    with pytest.raises(ValueError, match="val_fraction"):
        carve_val_groups(videos, "k", 1.0)


def test_missing_listed_file_is_skipped_counted_and_warned(fake):
    with pytest.warns(UserWarning, match="v_YoYo_g02_c02.avi"):
        index = load_ucf101(fake.root, split=1)  # g02 is a training group of split 1
    assert len(index.missing) == 1 and index.missing[0].endswith("YoYo/v_YoYo_g02_c02.avi")
    assert "1 listed videos missing" in index.describe()
    assert all(Path(p).is_file() for p, _ in index.train + index.val + index.test)


def test_handstandpushups_quirk_is_resolved(fake):
    # lists say HandstandPushups, the archive stores HandStandPushups: the files must be found
    assert (fake.videos_dir / QUIRK_DISK_NAME).is_dir() and not (fake.videos_dir / QUIRK_LIST_NAME).exists()
    with pytest.warns(UserWarning):
        index = load_ucf101(fake.root, split=1)
    quirky = [p for p, label in index.train + index.val + index.test if label == 1]
    assert len(quirky) == 8  # 4 groups x 2 clips, none missing
    assert all(f"/{QUIRK_DISK_NAME}/v_{QUIRK_DISK_NAME}_" in p for p in quirky)
    assert index.class_names[1] == QUIRK_LIST_NAME  # the class keeps its official name


def test_root_may_be_the_class_folder_dir_with_lists_beside_or_inside(fake, tmp_path):
    with pytest.warns(UserWarning):
        beside = load_dataset_index(str(fake.videos_dir), split=1)  # lists are in its parent
        direct = load_ucf101(fake.root)
    assert beside.kind == "ucf101" and [p for p, _ in beside.train] == [p for p, _ in direct.train]
    inside = tmp_path / "videos"
    shutil.copytree(fake.videos_dir, inside)
    shutil.copytree(fake.lists_dir, inside / "ucfTrainTestlist")
    with pytest.warns(UserWarning):
        index = load_dataset_index(str(inside), split=2)
    assert index.class_names == list(CLASSES) and index.root == inside


def test_invalid_roots_raise_data_error_naming_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="does not exist.*tfds:NAME"):
        load_dataset_index(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        load_dataset_index(str(tmp_path / "file.txt"))
    (tmp_path / "empty" / "some_class").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no videos under .*<class>/<video>"):
        load_dataset_index(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="not a UCF101 root.*UCF-101"):
        load_ucf101(tmp_path / "empty")


def test_bad_split_and_bad_list_files(fake, tmp_path):
    with pytest.raises(DataError, match="split must be one of"):
        load_ucf101(fake.root, split=4)
    root = tmp_path / "ucf"
    shutil.copytree(fake.root, root)
    (root / "ucfTrainTestlist" / "testlist02.txt").unlink()
    with pytest.raises(DataError, match="testlist02.txt.*does not exist"):
        load_ucf101(root, split=2)
    (root / "ucfTrainTestlist" / "trainlist03.txt").write_text("Archery/v_Archery_g01_c01.avi 1\n")
    with pytest.raises(DataError, match="'Archery' is not in classInd"):
        load_ucf101(root, split=3)
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("YoYo/v_YoYo_g02_c01.avi 1\n")
    with pytest.raises(DataError, match="label '1' disagrees"):
        load_ucf101(root, split=1)


def test_read_class_index_rejects_gaps(tmp_path):
    path = tmp_path / "classInd.txt"
    path.write_text("1 A\r\n3 B\r\n")
    with pytest.raises(DataError, match="without gaps"):
        read_class_index(path)
    path.write_text("1 A\n2 B\n")
    assert read_class_index(path) == ["A", "B"]


# --------------------------------------------------------------------------- class folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    make_class_folders(root, {"walk": 10, "jump": 6, "solo": 1}, frames=3, size=(8, 8))
    make_class_folders(root, {"zeta": 3}, frames=3, size=(8, 8), ext=".mp4")
    (root / "walk" / "notes.txt").write_text("not a video")
    return root


def test_class_folders_sorted_with_every_video_once(folders):
    index = load_dataset_index(str(folders), seed=0)
    assert index.kind == "folders"
    assert index.class_names == ["jump", "solo", "walk", "zeta"]
    paths = [p for p, _ in index.train + index.val + index.test]
    assert len(paths) == len(set(paths)) == 20  # the .txt is not a video; .mp4 counts
    for path, label in index.train + index.val + index.test:
        assert Path(path).parent.name == index.class_names[label]


def test_class_folder_split_is_deterministic_and_seeded(folders):
    a, b = load_class_folders(folders, seed=0), load_class_folders(folders, seed=0)
    assert a.train == b.train and a.val == b.val and a.test == b.test
    others = [load_class_folders(folders, seed=s) for s in (1, 2, 3)]
    assert any(o.val != a.val for o in others) and any(o.test != a.test for o in others)


def test_class_folder_split_keeps_train_val_test_per_class(folders):
    for seed in range(5):
        index = load_class_folders(folders, seed=seed)
        for label, name in enumerate(index.class_names):
            n = [sum(1 for _, lab in index.subset(s) if lab == label) for s in ("train", "val", "test")]
            # quotas: round(0.2 * n) each, at least one of each where there are 3 videos, one kept for training
            assert n == {"solo": [1, 0, 0], "zeta": [1, 1, 1], "jump": [4, 1, 1], "walk": [6, 2, 2]}[name], (name, n)
    with pytest.raises(ValueError, match="val_fraction"):
        load_class_folders(folders, val_fraction=1.0)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        load_class_folders(folders, val_fraction=0.5, test_fraction=0.5)


def test_class_folders_named_like_ucf101_split_by_group_across_classes(tmp_path):
    for cls in ("run", "sit"):
        (tmp_path / cls).mkdir()
    fake = make_fake_ucf101(tmp_path / "src", classes=("run", "sit"), groups=tuple(range(1, 11)), clips=3, frames=2,
                            size=(8, 8), quirk=False)
    for cls in ("run", "sit"):
        for f in (fake.videos_dir / cls).iterdir():
            shutil.copy(f, tmp_path / cls / f.name)
    shutil.rmtree(tmp_path / "src")
    index = load_class_folders(tmp_path, seed=0)
    groups = {s: {group_of(p) for p, _ in index.subset(s)} for s in ("train", "val", "test")}
    assert (len(groups["train"]), len(groups["val"]), len(groups["test"])) == (6, 2, 2)
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    assert len(index.test) == 2 * 2 * 3  # both classes, every clip of the two test groups


def test_class_folder_split_does_not_depend_on_the_root_location(folders, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(folders, moved)
    a, b = load_class_folders(folders, seed=3), load_class_folders(moved, seed=3)
    assert [_rel(p) for p, _ in a.val] == [_rel(p) for p, _ in b.val]
    assert [_rel(p) for p, _ in a.test] == [_rel(p) for p, _ in b.test]


# --------------------------------------------------------------------------- TFDS


def test_tfds_index_takes_class_names_from_the_builder(no_network):
    index = load_dataset_index("tfds:ucf101/ucf101_1_256")
    assert isinstance(index, DatasetIndex) and index.kind == "tfds"
    assert index.tfds_name == "ucf101/ucf101_1_256"
    assert index.num_classes == 101 and index.class_names[:2] == ["ApplyEyeMakeup", "ApplyLipstick"]
    assert index.tfds_splits == ("train[:80%]", "train[80%:]", "test") and index.train == [] == index.val == index.test
    assert load_tfds_index("ucf101", split=3).tfds_name == "ucf101/ucf101_3"


def test_tfds_errors(no_network):
    with pytest.raises(DataError, match="empty TFDS name"):
        load_dataset_index("tfds:")
    with pytest.raises(DataError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        load_dataset_index("tfds:no_such_dataset_xyz")
