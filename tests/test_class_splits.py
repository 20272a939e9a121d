"""Class-disjoint splits, the open-set protocol (model/class_splits.py), through
model.datasets as a run loads its data."""

import numpy as np
import pytest

from conftest import tiny_params, write_image_folders
from model import datasets
from model.errors import UserError


def load(data_dir, **changes):
    return datasets.for_training(tiny_params(**changes), str(data_dir), None)


def test_train_and_test_classes_keep_only_their_classes(tiny_data_dir):
    data = load(tiny_data_dir, train_classes=[0, 1, 2, 3, 4], test_classes=[5, 6, 7, 8, 9])
    assert set(np.unique(data.train[1])) == {0, 1, 2, 3, 4}
    assert set(np.unique(data.test[1])) == {5, 6, 7, 8, 9}
    everything = load(tiny_data_dir)
    # Every image of the kept classes, in the stored order.
    kept = np.isin(everything.train[1], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(data.train[0], everything.train[0][kept])
    np.testing.assert_array_equal(data.train[1], everything.train[1][kept])


def test_classes_are_named_by_label_or_by_name(tiny_data_dir):
    by_name = load(tiny_data_dir, train_classes=["0", "1", "2"], test_classes=["7", 8, "9"])
    assert set(np.unique(by_name.train[1])) == {0, 1, 2}
    assert set(np.unique(by_name.test[1])) == {7, 8, 9}


def test_validation_classes_are_held_out_whole_and_drawn_with_the_seed(tiny_data_dir):
    data = load(tiny_data_dir, train_classes=[0, 1, 2, 3, 4], test_classes=[5, 6, 7, 8, 9],
                validation_classes=2)
    held = set(np.unique(data.validation[1]))
    assert len(held) == 2 and held < {0, 1, 2, 3, 4}
    assert held.isdisjoint(np.unique(data.train[1]))
    assert len(data.train[1]) + len(data.validation[1]) == 120  # 5 classes of 24
    again = load(tiny_data_dir, train_classes=[0, 1, 2, 3, 4], test_classes=[5, 6, 7, 8, 9],
                 validation_classes=2)
    np.testing.assert_array_equal(again.validation[1], data.validation[1])
    other_seeds = {tuple(np.unique(load(tiny_data_dir, train_classes=[0, 1, 2, 3, 4],
                                        validation_classes=2, seed=seed).validation[1]))
                   for seed in range(6)}
    assert len(other_seeds) > 1
    # The evaluated images mix the held-out classes (a seeded order, not class by class).
    first = data.validation[1][:10]
    assert len(set(first.tolist())) == 2
    listed = load(tiny_data_dir, validation_classes=[3, "4"])
    assert set(np.unique(listed.validation[1])) == {3, 4}
    assert set(np.unique(listed.train[1])) == {0, 1, 2, 5, 6, 7, 8, 9}


@pytest.mark.parametrize("changes, message", [
    (dict(train_classes=[0, 1, 12]), r"train_classes names label 12 but the data has 10 "
                                      r"classes \(labels 0 to 9\)"),
    (dict(test_classes=["seven"]), r"test_classes names class 'seven', which the data does "
                                   r"not have \(its classes: 0, 1, 2, \.\.\.\)"),
    (dict(train_classes=[0, 1, 2], test_classes=[2, 3]), r"class\(es\) 2 are in both "
                                                          r"train_classes and test_classes"),
    (dict(train_classes=[0, 1, 2], validation_classes=2), r"validation_classes is 2 but there "
                                                           r"are 3 training classes; hold out "
                                                           r"at most 1"),
    (dict(train_classes=[0, 1, 2, 3], validation_classes=[3, 5]),
     r"validation_classes names 5, which the train split does not hold"),
    (dict(validation_classes=[4]), r"validation_classes names 1 class; hold out at least 2"),
    (dict(test_classes=[4, 5, 6], validation_classes=[3, 4]),
     r"class\(es\) 4 are validation_classes and test_classes"),
    (dict(validation_classes=2, validation_size=10), r"keep one of them"),
])
def test_bad_class_lists_are_one_line_errors(tiny_data_dir, changes, message):
    with pytest.raises(UserError, match=message) as info:
        load(tiny_data_dir, **changes)
    assert "\n" not in str(info.value)


def test_class_folders_are_named_by_folder(tmp_path):
    folders = write_image_folders(tmp_path / "data", num_train=40, num_test=20, num_classes=4,
                                  size=16)
    params = tiny_params(image_size=16, train_classes=["class_0", "class_1", "class_2"],
                         test_classes=["class_3"], eval_size=100)
    data = datasets.load(params, folders)
    assert set(np.unique(data.train[1])) == {0, 1, 2}
    assert set(np.unique(data.test[1])) == {3}
    assert len(data.train[0]) == len(data.train[1]) == 30
