"""The data of a run: IDX or class folders, dataset.json, caches (model/datasets.py)."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import write_image_folders
from model import datasets, pipelines, run_folder
from model.errors import UserError
from model.image_folder import ImageFiles
from model.params import Params

FOLDER_PARAMS = Params().replace(image_size=16, image_channels=3, batch_size=16, eval_size=40)


@pytest.fixture
def folders(tmp_path):
    return write_image_folders(tmp_path / "data", num_train=40, num_test=20, num_classes=4,
                               size=16, sizes=[(16, 16), (20, 12)])


def test_idx_num_labels_comes_from_the_data_unless_set(tiny_data_dir):
    data = datasets.load(Params(), tiny_data_dir)
    assert data.params.num_labels == 10 and data.class_names == [str(i) for i in range(10)]
    assert data.record["layout"] == "idx" and data.train[0].shape == (240, 28, 28)
    assert datasets.load(Params().replace(num_labels=12), tiny_data_dir).params.num_labels == 12
    with pytest.raises(UserError, match=r"label 9 is outside \[0, num_labels = 5\)"):
        datasets.load(Params().replace(num_labels=5), tiny_data_dir)


def test_folders_num_labels_must_agree_with_the_class_folders(folders):
    data = datasets.load(FOLDER_PARAMS, folders)
    assert data.params.num_labels == 4 and data.class_names == [f"class_{c}" for c in range(4)]
    assert isinstance(data.train[0], ImageFiles) and len(data.train[0]) == 40
    with pytest.raises(UserError, match=r"sets num_labels 10 but .*train holds 4 class "
                                        r'folders with images; set "num_labels": 4'):
        datasets.load(FOLDER_PARAMS.replace(num_labels=10), folders)


def test_a_single_train_class_is_refused(tmp_path):
    one = write_image_folders(tmp_path / "one", num_train=8, num_test=4, num_classes=1, size=16)
    with pytest.raises(UserError, match="holds a single class"):
        datasets.load(FOLDER_PARAMS, one)


def test_a_recorded_dataset_is_read_from_the_record(folders, tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    data = datasets.load(FOLDER_PARAMS, folders, model_dir)
    datasets.save_record(data, model_dir)
    mtime = os.path.getmtime(os.path.join(model_dir, run_folder.DATASET_FILE))
    datasets.save_record(datasets.load(FOLDER_PARAMS, folders, model_dir), model_dir)
    assert os.path.getmtime(os.path.join(model_dir, run_folder.DATASET_FILE)) == mtime
    # Files added to the folders later do not change what the run reads.
    shutil.copy(os.path.join(folders, data.record["train"]["files"][0]),
                os.path.join(folders, "train", "class_0", "new.png"))
    again = datasets.load(FOLDER_PARAMS, folders, model_dir)
    assert again.record == data.record
    assert len(datasets.load(FOLDER_PARAMS, folders).train[0]) == 41  # a new run sees it


def test_other_classes_than_the_recorded_ones_are_refused(folders, tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    datasets.save_record(datasets.load(FOLDER_PARAMS, folders, model_dir), model_dir)
    other = write_image_folders(tmp_path / "other", num_train=30, num_test=10, num_classes=3,
                                size=16)
    other_data = datasets.load(FOLDER_PARAMS, other, model_dir)
    run_folder.check_same_classes(model_dir, other_data.class_names)  # no run
    os.makedirs(os.path.join(model_dir, "checkpoints"))
    open(os.path.join(model_dir, "checkpoints", "ckpt-1.index"), "w").close()
    with pytest.raises(UserError, match=r"trained on 4 classes \(class_0, class_1, class_2, "
                                        r"\.\.\.\) but the data now has 3"):
        run_folder.check_same_classes(model_dir, other_data.class_names)


def test_the_test_split_alone(folders, tmp_path):
    data = datasets.load(FOLDER_PARAMS, folders, splits=("test",))
    assert data.train is None and len(data.test[0]) == 20
    assert data.class_names == [f"class_{c}" for c in range(4)]


@pytest.mark.parametrize("mode", ["memory", "file"])
def test_a_cache_holds_the_decoded_pixels(folders, tmp_path, mode):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    params = FOLDER_PARAMS.replace(cache=mode)
    data = datasets.load(params, folders, model_dir)
    cached = datasets.cached(data, os.path.join(model_dir, "cache"))
    for split in ("train", "test"):
        streamed = pipelines.decode_all(getattr(data, split)[0], params)
        np.testing.assert_array_equal(np.asarray(getattr(cached, split)[0]), streamed)
        np.testing.assert_array_equal(getattr(cached, split)[1], getattr(data, split)[1])
    if mode == "file":
        assert isinstance(cached.train[0], np.memmap)
        (path,) = [os.path.join(model_dir, "cache", name)
                   for name in os.listdir(os.path.join(model_dir, "cache"))
                   if name.startswith("train-") and name.endswith(".npy")]
        mtime = os.path.getmtime(path)
        datasets.cached(data, os.path.join(model_dir, "cache"))  # reused, not rebuilt
        assert os.path.getmtime(path) == mtime
        with open(path, "rb") as f:  # a damaged cache is rebuilt
            head = f.read(100)
        with open(path + ".tmp", "wb") as f:
            f.write(head)
        os.replace(path + ".tmp", path)  # (in place would break the mapping still open)
        rebuilt = datasets.cached(data, os.path.join(model_dir, "cache"))
        np.testing.assert_array_equal(np.asarray(rebuilt.train[0]), np.asarray(cached.train[0]))


def replace_bytes(path, data):
    """Give ``path`` new content by renaming a new file over it (writing in place would
    change the pages of a mapping still open)."""
    with open(path + ".new", "wb") as f:
        f.write(data)
    os.replace(path + ".new", path)


def test_a_file_cache_whose_pixels_or_checksum_do_not_match_is_rebuilt(folders, tmp_path,
                                                                        caplog):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    cache = os.path.join(model_dir, "cache")
    params = FOLDER_PARAMS.replace(cache="file")
    data = datasets.load(params, folders, model_dir)
    fresh = pipelines.decode_all(data.train[0], params)
    datasets.cached(data, cache)
    (path,) = [os.path.join(cache, name) for name in os.listdir(cache)
               if name.startswith("train-") and name.endswith(".npy")]
    with open(path, "rb") as f:
        content = bytearray(f.read())
    # The header stays intact: only the pixels tell. A flipped bit, as a bad disk sector
    # or a stray write leaves.
    content[-7] ^= 0x10
    replace_bytes(path, bytes(content))
    with caplog.at_level("WARNING"):
        rebuilt = datasets.cached(data, cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"Rebuilding the cache {path}: it is damaged (its pixels do not match "
                        "the checksum written with them)"]
    np.testing.assert_array_equal(np.asarray(rebuilt.train[0]), fresh)
    # A cache without its checksum (written before checksums, or by a writer stopped
    # before it) is rebuilt too.
    for name in os.listdir(cache):
        if name.startswith("train-") and not name.endswith(".npy"):
            os.remove(os.path.join(cache, name))
    caplog.clear()
    with caplog.at_level("WARNING"):
        rebuilt = datasets.cached(data, cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"Rebuilding the cache {path}: it has "
                                                         "no checksum")
    np.testing.assert_array_equal(np.asarray(rebuilt.train[0]), fresh)
    caplog.clear()
    mtime = os.path.getmtime(path)
    with caplog.at_level("WARNING"):
        datasets.cached(data, cache)  # intact: used as it is
    assert not caplog.records and os.path.getmtime(path) == mtime


def test_idx_data_is_not_cached(tiny_data_dir, tmp_path):
    data = datasets.load(Params().replace(cache="file"), tiny_data_dir)
    assert datasets.cached(data, str(tmp_path / "cache")) is data
    assert not os.path.exists(tmp_path / "cache")


def test_a_data_dir_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        datasets.load(Params(), str(path))


def test_dataset_record_is_json_with_relative_paths(folders, tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    datasets.save_record(datasets.load(FOLDER_PARAMS, folders, model_dir), model_dir)
    record = json.load(open(os.path.join(model_dir, run_folder.DATASET_FILE)))
    assert record["data_dir"] == os.path.abspath(folders)
    assert all(not os.path.isabs(path) for path in record["train"]["files"])


def test_a_record_made_with_another_seed_or_test_fraction_is_not_reused(tmp_path):
    data_dir = write_image_folders(tmp_path / "data", num_train=40, num_classes=4, size=16,
                                   with_test=False)
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    data = datasets.load(FOLDER_PARAMS, data_dir, model_dir)
    datasets.save_record(data, model_dir)
    for changes in (dict(seed=1), dict(test_fraction=0.5)):
        other = datasets.load(FOLDER_PARAMS.replace(**changes), data_dir, model_dir)
        assert other.record["test"] != data.record["test"]
    assert datasets.load(FOLDER_PARAMS, data_dir, model_dir).record == data.record


@pytest.mark.parametrize("layout", ["idx", "folders"])
def test_a_validation_split_is_a_seeded_sample_of_train(tiny_data_dir, folders, layout):
    data_dir, params = ((tiny_data_dir, Params()) if layout == "idx"
                        else (folders, FOLDER_PARAMS))
    whole = datasets.load(params.replace(validation_size=10), data_dir)
    data = datasets.hold_out_validation(whole)
    assert len(data.validation[1]) == 10 and len(data.train[1]) == len(whole.train[1]) - 10
    full = pipelines.decode_all(whole.train[0], params)
    parts = [pipelines.decode_all(split[0], params) for split in (data.train, data.validation)]
    rows = {row.tobytes() for row in full}
    assert {row.tobytes() for part in parts for row in part} == rows
    again = datasets.hold_out_validation(whole)
    np.testing.assert_array_equal(again.validation[1], data.validation[1])
    other = datasets.hold_out_validation(datasets.load(
        params.replace(validation_size=10, seed=1), data_dir))
    assert not np.array_equal(pipelines.decode_all(other.validation[0], params), parts[1])
    assert datasets.hold_out_validation(datasets.load(params, data_dir)).validation is None
    with pytest.raises(UserError, match="validation_size is 39 but the train split holds 40"):
        datasets.hold_out_validation(datasets.load(params.replace(validation_size=39),
                                                   folders))
