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


def draw_pairs(labels, num_pairs, rng):
    """``num_pairs`` random same-label pairs of indices into ``labels`` and as many
    different-label pairs.

    Returns:
        (pairs int [2 * num_pairs, 2], same bool [2 * num_pairs]).
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
    is_same = np.concatenate([np.ones(len(same), bool), np.zeros(len(different), bool)])
    return np.concatenate([same, different]), is_same


def distances_of(embeddings, pairs):
    """Euclidean distances (float64) between the embeddings of each pair of indices."""
    distances = np.empty(len(pairs))
    # Pairs a block at a time: the float64 differences of all 40,000 pairs at once take
    # 2.5 GB per 1,000 embedding dimensions. Each row's sum is the same either way.
    block = max(1, _BLOCK_ELEMENTS // max(embeddings.shape[1], 1))
    for start in range(0, len(pairs), block):
        chunk = pairs[start:start + block]
        diffs = embeddings[chunk[:, 0]].astype(np.float64) - embeddings[chunk[:, 1]]
        distances[start:start + block] = np.sqrt((diffs ** 2).sum(axis=1))
    return distances


def pair_distances(embeddings, labels, num_pairs, rng):
    """Distances of ``num_pairs`` random same-label pairs and as many different-label pairs
    (:func:`draw_pairs`).

    Returns:
        (distances float64 [2 * num_pairs], same bool [2 * num_pairs]).
    """
    pairs, same = draw_pairs(labels, num_pairs, rng)
    return distances_of(embeddings, pairs), same


def accuracy_interval(pairs, correct, num_images, rng, resamples=1000, level=0.95):
    """A ``level`` interval of the accuracy of pairs drawn among ``num_images`` images.

    Pairs share images, so they are not independent: with 40 images, 40,000 pairs hold
    far less evidence than their count suggests. The images are resampled with
    replacement (a bootstrap over images: Davison & Hinkley 1997, section 3.8, for
    clustered data), each pair weighted by how often both of its images were drawn.

    Args:
        pairs: int [M, 2] indices into the images.
        correct: bool [M], whether each pair was classified right.
        num_images: the images the pairs were drawn from.
    """
    correct = np.asarray(correct, np.float64)
    estimates = []
    for start in range(0, resamples, 100):  # 100 resamples at a time: ~32 MB
        counts = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images),
                                 size=min(100, resamples - start)).astype(np.float64)
        weights = counts[:, pairs[:, 0]] * counts[:, pairs[:, 1]]
        total = weights.sum(axis=1)
        estimates.extend((weights @ correct)[total > 0] / total[total > 0])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


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
        (on the first half), ``held_out_accuracy`` (on the second), ``pairs_per_half``,
        ``held_out_images`` (the distinct images of the second half) and
        ``held_out_accuracy_interval`` (its 95 % interval, :func:`accuracy_interval`).

    Raises:
        CalibrationError: when a half lacks two classes or a class with two members.
    """
    rng = np.random.default_rng(seed)
    halves = _halves(len(labels), rng)
    fit = pair_distances(embeddings[halves[0]], labels[halves[0]], num_pairs, rng)
    threshold, fit_accuracy = best_threshold(*fit)
    held_pairs, held_same = draw_pairs(labels[halves[1]], num_pairs, rng)
    correct = (distances_of(embeddings[halves[1]], held_pairs) <= threshold) == held_same
    # Its own stream: the figures above stay those of earlier versions.
    low, high = accuracy_interval(held_pairs, correct, len(halves[1]),
                                  np.random.default_rng([seed, 1]))
    return {"threshold": threshold, "calibration_accuracy": fit_accuracy,
            "held_out_accuracy": float(np.mean(correct)), "pairs_per_half": 2 * num_pairs,
            "held_out_images": len(halves[1]), "held_out_accuracy_interval": [low, high]}
