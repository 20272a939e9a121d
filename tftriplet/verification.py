"""Same / different verification: the distance threshold that tells two embeddings apart.

A threshold t calls two embeddings "same class" when their Euclidean distance is <= t; it
is chosen on random pairs from one half of the set and its accuracy measured on pairs
from the other half (:func:`calibrate_verification`). Computed in NumPy.
"""

import numpy as np


class CalibrationError(ValueError):
    """The labels cannot give verification pairs: a half lacks two classes or a class
    with two members."""


# float64 elements of one block of pair differences (32 MB).
_BLOCK_ELEMENTS = 4_000_000


def pair_distances(embeddings, labels, num_pairs, rng):
    """Distances of ``num_pairs`` random same-label pairs and as many different-label pairs.

    Returns:
        (distances float64 [2 * num_pairs], same bool [2 * num_pairs]).
    """
    labels = np.asarray(labels)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    _check_pairs_possible(labels)
    by_class = [members for members in by_class if len(members) >= 2]
    classes = rng.integers(len(by_class), size=num_pairs)
    same = np.array([rng.choice(by_class[c], 2, replace=False) for c in classes])
    first = rng.integers(len(labels), size=4 * num_pairs)
    second = rng.integers(len(labels), size=4 * num_pairs)
    keep = labels[first] != labels[second]
    different = np.stack([first[keep], second[keep]], axis=1)[:num_pairs]
    pairs = np.concatenate([same, different])
    is_same = np.concatenate([np.ones(len(same), bool), np.zeros(len(different), bool)])
    distances = np.empty(len(pairs))
    # Pairs a block at a time: the float64 differences of all 40,000 pairs at once take
    # 2.5 GB per 1,000 embedding dimensions. Each row's sum is the same either way.
    block = max(1, _BLOCK_ELEMENTS // max(embeddings.shape[1], 1))
    for start in range(0, len(pairs), block):
        chunk = pairs[start:start + block]
        diffs = embeddings[chunk[:, 0]].astype(np.float64) - embeddings[chunk[:, 1]]
        distances[start:start + block] = np.sqrt((diffs ** 2).sum(axis=1))
    return distances, is_same


def best_threshold(distances, same):
    """The threshold t maximising the accuracy of "same iff distance <= t", and that accuracy."""
    order = np.argsort(distances, kind="stable")
    sorted_d, sorted_same = distances[order], same[order]
    # Calling the first i pairs "same": correct = same among them + different after them.
    correct = np.concatenate([[0], np.cumsum(sorted_same)]) + \
        (np.count_nonzero(~sorted_same) - np.concatenate([[0], np.cumsum(~sorted_same)]))
    i = int(np.argmax(correct))
    if i == 0:
        threshold = sorted_d[0] / 2
    elif i == len(sorted_d):
        threshold = sorted_d[-1]
    else:  # midway between the last "same" and the first "different"
        threshold = (sorted_d[i - 1] + sorted_d[i]) / 2
    return float(threshold), float(correct[i] / len(sorted_d))


def _halves(count, rng):
    order = rng.permutation(count)
    return order[: count // 2], order[count // 2:]


def _check_pairs_possible(labels):
    if len(np.unique(labels)) < 2 or np.max(np.unique(labels, return_counts=True)[1],
                                            initial=0) < 2:
        raise CalibrationError("verification needs at least two classes and a class with two "
                               "images")


def check_calibration(labels, seed=0):
    """Raise :class:`CalibrationError` unless :func:`calibrate_verification` can run on
    ``labels`` (both halves it splits them into hold two classes and a class with two
    members); cheap, so that a run can check it before training rather than fail after."""
    labels = np.asarray(labels)
    for half in _halves(len(labels), np.random.default_rng(seed)):
        _check_pairs_possible(labels[half])


def calibrate_verification(embeddings, labels, num_pairs=20000, seed=0):
    """Pick the threshold on one half of the embeddings and measure its accuracy on the other.

    Args:
        embeddings: float [N, D].
        labels: int [N].
        num_pairs: same-label pairs (and as many different-label pairs) drawn per half.
        seed: seeds the halves and the pairs.

    Returns:
        dict: ``threshold`` (same iff distance <= threshold), ``calibration_accuracy``
        (on the first half), ``held_out_accuracy`` (on the second), ``pairs_per_half``.

    Raises:
        CalibrationError: when a half lacks two classes or a class with two members.
    """
    rng = np.random.default_rng(seed)
    halves = _halves(len(labels), rng)
    fit = pair_distances(embeddings[halves[0]], labels[halves[0]], num_pairs, rng)
    threshold, fit_accuracy = best_threshold(*fit)
    held_d, held_same = pair_distances(embeddings[halves[1]], labels[halves[1]], num_pairs, rng)
    accuracy = float(np.mean((held_d <= threshold) == held_same))
    record = {"threshold": threshold, "calibration_accuracy": fit_accuracy,
              "held_out_accuracy": accuracy, "pairs_per_half": 2 * num_pairs}
    return record
