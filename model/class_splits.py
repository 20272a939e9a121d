"""Class-disjoint splits, the open-set protocol: train on some classes, test on others.

``train_classes`` and ``test_classes`` keep only the named classes of the train and test
splits (labels of IDX data or names of class folders; null keeps all), and
``validation_classes`` holds whole training classes out of training (a number drawn
with the seed, or a list): every epoch is evaluated on them and ``best/`` is chosen on
them, so the test classes play no part in choosing the checkpoint. What metric learning
is for, recognising classes never seen in training, is measured this way.
"""

import logging

import numpy as np

from .errors import UserError, first_names


def labels_of(wanted, class_names, key):
    """The sorted labels that ``wanted`` (a params class list) names.

    Integers are labels (indices into ``class_names``), strings class names.

    Raises:
        UserError: a class the data does not have.
    """
    labels = set()
    for entry in wanted:
        if isinstance(entry, str):
            if entry not in class_names:
                raise UserError(f"{key} names class {entry!r}, which the data does not have "
                                f"(its classes: {first_names(class_names)}); fix {key} in "
                                "params.json")
            labels.add(class_names.index(entry))
        elif entry >= len(class_names):
            raise UserError(f"{key} names label {entry} but the data has {len(class_names)} "
                            f"classes (labels 0 to {len(class_names) - 1}); fix {key} in "
                            "params.json")
        else:
            labels.add(entry)
    return sorted(labels)


def _keep(split, labels, key, where):
    images, split_labels = split
    kept = np.isin(split_labels, labels)
    if not kept.any():
        raise UserError(f"{key} keeps no image of {where}: none of its classes has images "
                        f"there; fix {key} in params.json")
    return images[kept], split_labels[kept]


def select(data):
    """``data`` (a :class:`model.datasets.Data`) with only the classes ``train_classes``
    and ``test_classes`` name in its train and test splits.

    Raises:
        UserError: an unknown class, a class in both lists, or a split left empty.
    """
    params, names = data.params, data.class_names
    train = labels_of(params.train_classes, names, "train_classes") \
        if params.train_classes is not None else None
    test = labels_of(params.test_classes, names, "test_classes") \
        if params.test_classes is not None else None
    if train is not None and test is not None and set(train) & set(test):
        both = [names[label] for label in sorted(set(train) & set(test))]
        raise UserError(f"class(es) {first_names(both)} are in both train_classes and "
                        "test_classes; the open-set protocol tests on classes never trained "
                        "on: remove them from one list")
    if train is not None and data.train is not None:
        data.train = _keep(data.train, train, "train_classes", "the train split")
    if test is not None and data.test is not None:
        data.test = _keep(data.test, test, "test_classes", "the test split")
    return data


def hold_out_classes(data):
    """``data`` with the training classes of ``validation_classes`` moved, all their
    images, to ``data.validation`` (in a seeded order, so that the first ``eval_size``
    evaluated mix every held-out class).

    Raises:
        UserError: classes that are not training classes, or in ``test_classes``, or
            that would leave fewer than 2 classes to train on.
    """
    params, names = data.params, data.class_names
    wanted = params.validation_classes
    if wanted is None:
        return data
    images, labels = data.train
    present = np.unique(labels).tolist()
    if isinstance(wanted, int):
        if wanted > len(present) - 2:
            raise UserError(f"validation_classes is {wanted} but there are {len(present)} "
                            f"training classes; hold out at most {len(present) - 2} (training "
                            "needs 2)")
        # Its own random stream: hold_out_validation draws [seed, 0, 3].
        chosen = sorted(np.random.default_rng([params.seed, 0, 4]).choice(
            present, wanted, replace=False).tolist())
    else:
        chosen = labels_of(wanted, names, "validation_classes")
        outside = sorted(set(chosen) - set(present))
        if outside:
            raise UserError(f"validation_classes names {first_names(names[i] for i in outside)}, "
                            "which the train split does not hold (see train_classes); hold out "
                            "training classes")
        if len(chosen) < 2:
            raise UserError("validation_classes names 1 class; hold out at least 2 (retrieval "
                            "within a single class cannot fail, so it cannot choose best/)")
        if len(present) - len(chosen) < 2:
            raise UserError(f"validation_classes holds out {len(chosen)} of the "
                            f"{len(present)} training classes; leave at least 2 to train on")
    if params.test_classes is not None:
        both = sorted(set(labels_of(params.test_classes, names, "test_classes")) & set(chosen))
        if both:
            raise UserError(f"class(es) {first_names(names[i] for i in both)} are "
                            "validation_classes and test_classes; choose the checkpoint on "
                            "classes the test never sees")
    held = np.isin(labels, chosen)
    order = np.random.default_rng([params.seed, 0, 5]).permutation(np.flatnonzero(held))
    logging.info("Validation classes, held out of training: %s (%d images)",
                 ", ".join(names[label] for label in chosen), len(order))
    data.validation = (images[order], labels[order])
    data.train = (images[~held], labels[~held])
    return data
