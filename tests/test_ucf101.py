"""training.ucf101: the official UCF101 layout, class-folder trees, source classification."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fakes import QUIRK_DISK_NAME, QUIRK_LIST_NAME, make_class_folders, make_fake_ucf101
from training.ucf101 import (
    DataError,
    DatasetIndex,
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
    for path, label in index.train + index.val:
        assert Path(path).parent.name.lower() == CLASSES[label].lower()


@pytest.mark.parametrize("split", [1, 2, 3])
def test_splits_follow_the_list_files(fake, split):
    with pytest.warns(UserWarning, match="1 listed videos do not exist"):
        index = load_ucf101(fake.root, split=split)
    expect_train = {r.replace(QUIRK_LIST_NAME, QUIRK_DISK_NAME) for r in fake.train[split]} - {"YoYo/v_YoYo_g02_c02.avi"}
    expect_val = {r.replace(QUIRK_LIST_NAME, QUIRK_DISK_NAME) for r in fake.test[split]} - {"YoYo/v_YoYo_g02_c02.avi"}
    assert {_rel(p) for p, _ in index.train} == expect_train
    assert {_rel(p) for p, _ in index.val} == expect_val
    assert not {p for p, _ in index.train} & {p for p, _ in index.val}
    assert index.split == split


def test_missing_listed_file_is_skipped_counted_and_warned(fake):
    with pytest.warns(UserWarning, match="v_YoYo_g02_c02.avi"):
        index = load_ucf101(fake.root, split=1)  # g02 is a training group of split 1
    assert len(index.missing) == 1 and index.missing[0].endswith("YoYo/v_YoYo_g02_c02.avi")
    assert "1 listed videos missing" in index.describe()
    assert all(Path(p).is_file() for p, _ in index.train + index.val)


def test_handstandpushups_quirk_is_resolved(fake):
    # lists say HandstandPushups, the archive stores HandStandPushups: the files must be found
    assert (fake.videos_dir / QUIRK_DISK_NAME).is_dir() and not (fake.videos_dir / QUIRK_LIST_NAME).exists()
    with pytest.warns(UserWarning):
        index = load_ucf101(fake.root, split=1)
    quirky = [p for p, label in index.train + index.val if label == 1]
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
    paths = [p for p, _ in index.train + index.val]
    assert len(paths) == len(set(paths)) == 20  # the .txt is not a video; .mp4 counts
    for path, label in index.train + index.val:
        assert Path(path).parent.name == index.class_names[label]


def test_class_folder_split_is_deterministic_and_seeded(folders):
    a, b = load_class_folders(folders, seed=0), load_class_folders(folders, seed=0)
    assert a.train == b.train and a.val == b.val
    others = [load_class_folders(folders, seed=s).val for s in (1, 2, 3)]
    assert any(v != a.val for v in others)


def test_class_folder_split_keeps_val_and_train_per_class(folders):
    for seed in range(5):
        index = load_class_folders(folders, seed=seed, val_fraction=0.2)
        for label, name in enumerate(index.class_names):
            n_val = sum(1 for _, lab in index.val if lab == label)
            n_train = sum(1 for _, lab in index.train if lab == label)
            if name == "solo":  # one video: training only
                assert (n_train, n_val) == (1, 0)
            else:
                assert n_val >= 1 and n_train >= 1
    with pytest.raises(ValueError, match="val_fraction"):
        load_class_folders(folders, val_fraction=1.0)


def test_class_folder_split_does_not_depend_on_the_root_location(folders, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(folders, moved)
    a, b = load_class_folders(folders, seed=3), load_class_folders(moved, seed=3)
    assert [_rel(p) for p, _ in a.val] == [_rel(p) for p, _ in b.val]


# --------------------------------------------------------------------------- TFDS


def test_tfds_index_takes_class_names_from_the_builder(no_network):
    index = load_dataset_index("tfds:ucf101/ucf101_1_256")
    assert isinstance(index, DatasetIndex) and index.kind == "tfds"
    assert index.tfds_name == "ucf101/ucf101_1_256"
    assert index.num_classes == 101 and index.class_names[:2] == ["ApplyEyeMakeup", "ApplyLipstick"]
    assert index.tfds_splits == ("train", "test") and index.train == [] == index.val
    assert load_tfds_index("ucf101", split=3).tfds_name == "ucf101/ucf101_3"


def test_tfds_errors(no_network):
    with pytest.raises(DataError, match="empty TFDS name"):
        load_dataset_index("tfds:")
    with pytest.raises(DataError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        load_dataset_index("tfds:no_such_dataset_xyz")
