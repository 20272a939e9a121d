"""Retrieval metrics (tftriplet/metrics.py) against hand-computed cases and a numpy brute force."""

import math

import numpy as np
import pytest

from tftriplet import metrics
from tftriplet.metrics import retrieval_metrics


RANKED = ("precision_at_1", "r_precision", "map_at_r")
RECALLS = {"recall_at_1": 1, "recall_at_2": 2, "recall_at_4": 4, "recall_at_8": 8}
ALL_NAMES = set(RANKED) | set(RECALLS)


def brute_force(embeddings, labels):
    """Leave-one-out P@1, R-precision, MAP@R and Recall@K by explicit loops (ties: lower
    index first)."""
    embeddings = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels)
    p1, rp, ap = [], [], []
    recall = {name: [] for name in RECALLS}
    for q in range(len(labels)):
        others = np.array([j for j in range(len(labels)) if j != q], dtype=int)
        dist = np.sqrt(((embeddings[others] - embeddings[q]) ** 2).sum(axis=1))
        ranked = others[np.lexsort((others, dist))]  # by distance, then by index
        relevant = labels[ranked] == labels[q]
        r = int(relevant.sum())
        if r == 0:
            continue
        p1.append(float(relevant[0]))
        rp.append(relevant[:r].sum() / r)
        ap.append(sum(relevant[:i + 1].sum() / (i + 1) for i in range(r) if relevant[i]) / r)
        for name, k in RECALLS.items():
            recall[name].append(float(any(relevant[:k])))
    if not p1:
        return {name: math.nan for name in ALL_NAMES}
    return {"precision_at_1": np.mean(p1), "r_precision": np.mean(rp), "map_at_r": np.mean(ap),
            **{name: np.mean(values) for name, values in recall.items()}}


def on_a_line(positions):
    return np.array(positions, np.float32)[:, None]


def assert_metrics(result, expected, tol=1e-12):
    assert set(result) == ALL_NAMES
    for name, value in expected.items():
        assert isinstance(result[name], float)
        assert result[name] == pytest.approx(value, abs=tol), name


# Six points on a line, classes A = {0, 2, 3} and B = {1, 4, 5}, so R = 2 for every query.
# Per query (ranked labels of the 2 nearest -> P@1, R-precision, AP@R):
#   q0 at 0:  1(B), 2(A)            -> 0, 1/2, 1/4
#   q1 at 1:  0(A), 2(A) (tie)      -> 0, 0,   0
#   q2 at 2:  1(B), 3(A) (tie at 1, index 1 first) -> 0, 1/2, 1/4
#   q3 at 3:  2(A), 1(B)            -> 1, 1/2, 1/2
#   q4 at 10: 5(B), 3(A)            -> 1, 1/2, 1/2
#   q5 at 11: 4(B), 3(A)            -> 1, 1/2, 1/2
LINE = on_a_line([0, 1, 2, 3, 10, 11])
LINE_LABELS = np.array([0, 1, 0, 0, 1, 1])
# Recall@2: every query but q1 has an A-or-B match among its 2 nearest: 5/6; with 4 or 8
# (all 5 references), every query: 1.
LINE_EXPECTED = {"precision_at_1": 3 / 6, "r_precision": 2.5 / 6, "map_at_r": 2 / 6,
                 "recall_at_1": 3 / 6, "recall_at_2": 5 / 6, "recall_at_4": 1.0,
                 "recall_at_8": 1.0}


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 6, 1024])
def test_hand_computed_line(chunk_size):
    assert_metrics(retrieval_metrics(LINE, LINE_LABELS, chunk_size=chunk_size), LINE_EXPECTED)
    assert_metrics(brute_force(LINE, LINE_LABELS), LINE_EXPECTED)


def test_perfect_clusters_score_one():
    points = on_a_line([0, 1, 2, 100, 101, 200, 201, 202, 203])
    labels = [5, 5, 5, 9, 9, 2, 2, 2, 2]
    assert_metrics(retrieval_metrics(points, labels), {name: 1.0 for name in ALL_NAMES})


def test_ties_go_to_the_lower_index():
    # The same geometry twice, only the indices differ: query 0 at 0 has two
    # references at distance 1, one of each class, and R = 1 for every query.
    # [0 A, -1 B, 1 A, 5 B]: q0 -> index 1 (B) first: 0; q1 -> 0 (A): 0; q2 -> 0 (A): 1;
    # q3 -> 2 (A): 0.  Mean 1/4.
    first = retrieval_metrics(on_a_line([0, -1, 1, 5]), [0, 1, 0, 1], chunk_size=1)
    # [0 A, 1 A, -1 B, 5 B]: q0 -> index 1 (A) first: 1; q1 -> 0: 1; q2 -> 0 (A): 0;
    # q3 -> 1 (A): 0.  Mean 1/2.
    second = retrieval_metrics(on_a_line([0, 1, -1, 5]), [0, 0, 1, 1], chunk_size=3)
    # Recall@K: the first hit is at rank 2, 3, 1, 3 (first) and 1, 1, 3, 3 (second).
    assert_metrics(first, {**{name: 1 / 4 for name in RANKED}, "recall_at_1": 1 / 4,
                           "recall_at_2": 2 / 4, "recall_at_4": 1.0, "recall_at_8": 1.0})
    assert_metrics(second, {**{name: 1 / 2 for name in RANKED}, "recall_at_1": 1 / 2,
                            "recall_at_2": 1 / 2, "recall_at_4": 1.0, "recall_at_8": 1.0})


def test_collapsed_embeddings_rank_by_index():
    # All points equal (a collapsed network): every query retrieves the lowest
    # other indices first. Labels [0, 1, 0, 1], R = 1: only query 2 (nearest: 0) hits.
    result = retrieval_metrics(np.ones((4, 3)), [0, 1, 0, 1])
    # First hits at ranks 2, 3, 1, 2.
    assert_metrics(result, {**{name: 1 / 4 for name in RANKED}, "recall_at_1": 1 / 4,
                            "recall_at_2": 3 / 4, "recall_at_4": 1.0, "recall_at_8": 1.0})


def test_queries_without_relevant_references_are_left_out():
    # Label 7 has one member: it is not a query. The others find each other: 1.0.
    # Counting it as a miss would give 2/3.
    result = retrieval_metrics(on_a_line([0, 1, 5]), [3, 3, 7])
    assert_metrics(result, {"precision_at_1": 1.0, "r_precision": 1.0, "map_at_r": 1.0})


@pytest.mark.parametrize("points, labels", [
    (on_a_line([0, 1, 2]), [0, 1, 2]),
    (on_a_line([4]), [0]),
])
def test_no_query_with_a_relevant_reference_gives_nan(points, labels):
    result = retrieval_metrics(points, labels)
    assert set(result) == ALL_NAMES
    assert all(math.isnan(value) for value in result.values())


@pytest.mark.parametrize("chunk_size", [1, 17, 64, 300, 5000])
def test_matches_brute_force_on_random_clusters(chunk_size):
    rng = np.random.default_rng(7)
    n, d = 300, 8
    # Unbalanced classes with arbitrary label values, one of them a singleton.
    labels = rng.choice([-3, 0, 4, 11, 12, 100], size=n, p=[.4, .25, .15, .1, .07, .03])
    labels[17] = 55
    centres = {label: rng.normal(size=d) for label in np.unique(labels)}
    embeddings = np.stack([centres[label] for label in labels]) + rng.normal(size=(n, d))
    embeddings = embeddings.astype(np.float32)
    expected = brute_force(embeddings, labels)
    assert 0.3 < expected["map_at_r"] < 0.95  # a case where ranking errors matter
    assert_metrics(retrieval_metrics(embeddings, labels, chunk_size=chunk_size), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_many_ties(seed):
    # Small integer coordinates: many references are exactly equidistant, and the
    # distances are exact in floating point, so the tie rule decides the ranking.
    rng = np.random.default_rng(seed)
    embeddings = rng.integers(0, 3, size=(60, 2)).astype(np.float64)
    labels = rng.integers(0, 4, size=60)
    expected = brute_force(embeddings, labels)
    for chunk_size in (1, 7, 60):
        assert_metrics(retrieval_metrics(embeddings, labels, chunk_size=chunk_size), expected)


@pytest.mark.parametrize("embeddings, labels, chunk_size, message", [
    (np.zeros(5), np.zeros(5), 8, "2-D"),
    (np.zeros((0, 3)), np.zeros(0), 8, "2-D"),
    (np.zeros((3, 2)), np.zeros(4), 8, "labels must have shape"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), [0, 0], 8, "NaN"),
    (np.array([["a", "b"], ["c", "d"]]), [0, 0], 8, "real numbers"),
    (np.zeros((3, 2)), np.zeros(3), 0, "chunk_size"),
    (np.zeros((3, 2)), np.zeros(3), 2.5, "chunk_size"),
])
def test_bad_input_is_rejected(embeddings, labels, chunk_size, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(embeddings, labels, chunk_size=chunk_size)


def gaussian_clusters(seed, n, d=4, num_classes=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    centres = rng.normal(size=(num_classes, d))
    return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def integer_points(seed, n):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, size=(n, 2)).astype(np.float64), rng.integers(0, 4, size=n)


@pytest.mark.parametrize("sample_size, sample_margin, max_candidates, max_threads", [
    # Thresholds from 16 sampled references at the expected rank: about half the
    # queries fall short of k candidates (then exact); rows sorted one by one.
    (16, 0.0, 1, 1),
    (4, 2.0, 37, 3),  # a few rows per sort
    (metrics.SAMPLE_SIZE, metrics.SAMPLE_MARGIN, metrics.MAX_CANDIDATES, metrics.MAX_THREADS),
])
def test_every_path_matches_brute_force(monkeypatch, sample_size, sample_margin, max_candidates,
                                        max_threads):
    monkeypatch.setattr(metrics, "SAMPLE_SIZE", sample_size)
    monkeypatch.setattr(metrics, "SAMPLE_MARGIN", sample_margin)
    monkeypatch.setattr(metrics, "MAX_CANDIDATES", max_candidates)
    monkeypatch.setattr(metrics, "MAX_THREADS", max_threads)
    cases = [gaussian_clusters(3, 150), integer_points(4, 80),
             (np.ones((30, 3)), np.arange(30) % 3)]  # collapsed: every reference ties
    for embeddings, labels in cases:
        expected = brute_force(embeddings, labels)
        for chunk_size in (1, 16, 1000):
            assert_metrics(retrieval_metrics(embeddings, labels, chunk_size=chunk_size), expected)


def test_scores_that_differ_only_in_their_last_bits_are_ranked_exactly():
    # Points (2**26, b) with small integers b: every score is about -2**52 and
    # differs from the others only in its last ~13 bits (all exact in float64),
    # below the precision of the int64 sort keys, so the float64 check must order them.
    rng = np.random.default_rng(5)
    b = rng.integers(-40, 41, size=70)
    embeddings = np.stack([np.full(70, 2.0 ** 26), b], axis=1)
    labels = rng.integers(0, 3, size=70)
    expected = brute_force(embeddings, labels)
    for chunk_size in (1, 9, 70):
        assert_metrics(retrieval_metrics(embeddings, labels, chunk_size=chunk_size), expected)


def test_more_references_than_the_sample_matches_brute_force():
    embeddings, labels = gaussian_clusters(6, metrics.SAMPLE_SIZE + 150)
    expected = brute_force(embeddings, labels)
    assert 0.1 < expected["map_at_r"] < 0.9  # neither random nor perfect: ranking matters
    assert_metrics(retrieval_metrics(embeddings, labels, chunk_size=500), expected)


# ---------------------------------------------------------------- k-NN accuracy


@pytest.mark.parametrize("k", [1, 2, 5, 8])
@pytest.mark.parametrize("seed", [41, 42])
def test_knn_accuracy_equals_scikit_learns_classifier(seed, k):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 5))
    reference_labels = rng.integers(0, 6, 300)
    references = centres[reference_labels] + rng.normal(scale=0.9, size=(300, 5))
    labels = rng.integers(0, 6, 200)
    queries = centres[labels] + rng.normal(scale=0.9, size=(200, 5))
    classifier = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(references,
                                                                            reference_labels)
    want = float(np.mean(classifier.predict(queries) == labels))
    assert 0.3 < want < 1.0  # neither trivial nor hopeless
    got = metrics.knn_accuracy(queries.astype(np.float32), labels,
                               references.astype(np.float32), reference_labels, k,
                               chunk_size=64)
    assert got == want


def test_knn_vote_ties_go_to_the_smallest_label_and_distance_ties_to_the_first_reference():
    references = np.array([[0.0], [2.0], [-2.0], [10.0]])
    # From 1.0: references 0 (label 7) and 1 (label 3) at distance 1, then 2.
    assert metrics.knn_accuracy([[1.0]], [3], references, [7, 3, 3, 9], k=2) == 1.0
    assert metrics.knn_accuracy([[1.0]], [7], references, [7, 3, 3, 9], k=1) == 1.0
    assert metrics.knn_accuracy([[1.0]], [3], references, [7, 3, 3, 9], k=3) == 1.0


@pytest.mark.parametrize("arguments,match", [
    ({"k": 0}, "k must be"), ({"k": 4}, "k must be"), ({"k": 1.5}, "k must be"),
    ({"reference_embeddings": np.zeros((3, 2))}, "dimensions"),
    ({"reference_labels": [0, 1]}, "labels must have shape"),
])
def test_knn_accuracy_refuses_bad_input(arguments, match):
    given = dict(embeddings=np.zeros((2, 1)), labels=[0, 1],
                 reference_embeddings=np.zeros((3, 1)), reference_labels=[0, 1, 1], k=1)
    with pytest.raises(ValueError, match=match):
        metrics.knn_accuracy(**{**given, **arguments})
