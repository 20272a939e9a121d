"""Retrieval metrics of a set of embeddings (Musgrave et al. 2020), in NumPy.

Protocol: every embedding is a query, the references are all the *other*
embeddings (leave-one-out), ranked by Euclidean distance. With R the number of
references that share the query's label:

* precision@1: 1 if the nearest reference has the query's label, else 0;
* R-precision: the share of the R nearest references that have the query's label;
* MAP@R: (1/R) * sum_{i<=R} P@i * rel_i, with rel_i = 1 if the i-th nearest
  reference has the query's label and P@i the share of relevant ones among the
  first i;
* Recall@K (K = 1, 2, 4, 8): 1 if any of the K nearest references has the query's
  label, else 0 (recall@1 is precision@1).

Each figure is the mean over queries.

Conventions:

* References are ranked by the float64 score |r|^2 - 2 q.r, the squared
  distance less the query's own |q|^2 (the same for all its references). Ties,
  references whose scores are equal in float64, are ranked by their index in
  the set, lowest first, so the ranking never depends on the sort algorithm,
  on ``chunk_size`` or on threads.
* A query whose label has no other member (R = 0) has nothing to retrieve, so it
  is left out of all three means (the same queries for every figure). If every
  query is left out, the figures are NaN rather than 0, so an undefined score
  is not mistaken for a bad one.

Method (numpy, exact; benchmarks/bench_metrics.py): queries go in chunks of
``chunk_size``, each chunk's scores against every reference one matrix product.
With k the largest R of the chunk, each query needs only its k nearest, in
order. A threshold taken from a fixed random sample of the references keeps a
little more than k candidates per query (a query left with fewer gets its exact
k-th score as threshold instead). The candidates are sorted as int64 keys
(query, score cut to the bits left, index); where two neighbours' cut scores
are equal, their float64 scores are compared, and the rare rows that the cut
put out of order are sorted again exactly. Chunks are shared between
MAX_THREADS threads (numpy releases the GIL), each with its own chunk x N
blocks: about 170 MB per thread for N = 10,000 and the default chunk_size.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Published in this module by 1.0.0; they live in tftriplet.verification now.
from tftriplet.verification import (  # noqa: F401
    CalibrationError, calibrate_verification, check_calibration)

# Recall@K (K = 1, 2, 4, 8): what deep-metric-learning papers report on CUB-200, Cars196
# and Stanford Online Products (Song et al. 2016).
RECALL_KS = (1, 2, 4, 8)
METRIC_NAMES = ("precision_at_1", "r_precision", "map_at_r",
                *(f"recall_at_{k}" for k in RECALL_KS))

# References in the sample that sets each query's candidate threshold: enough for
# a threshold close to the k-th nearest, few next to N so that it costs little.
SAMPLE_SIZE = 1024
# Standard deviations of the sample's count added to the threshold's rank: more
# candidates to sort for every query against more queries (about 2% at 2) whose
# threshold falls short and is computed exactly.
SAMPLE_MARGIN = 2.0
# Candidates sorted in one go: few enough to stay in the CPU caches, and a bound
# on memory when ties make most references candidates.
MAX_CANDIDATES = 1 << 17
# Threads, each with its own chunk x N blocks: memory grows with them.
MAX_THREADS = 2
_INT64_MAX = np.iinfo(np.int64).max


def _check_inputs(embeddings, labels, chunk_size):
    embeddings = np.asarray(embeddings)
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            f"embeddings must be a non-empty 2-D array [N, D], got shape "
            f"{embeddings.shape}; stack one embedding per row")
    if not np.issubdtype(embeddings.dtype, np.number) or np.iscomplexobj(embeddings):
        raise ValueError(
            f"embeddings must be real numbers, got dtype {embeddings.dtype}; "
            "pass a float array")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError(
            "embeddings contain NaN or infinite values (did training diverge?); "
            "check the loss and lower the learning rate")
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"labels must have shape ({embeddings.shape[0]},) to match the "
            f"embeddings, got {labels.shape}; pass one label per embedding")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return embeddings, labels


def _sample_rank(k, n, m):
    """Rank (0-based) in a query's sorted sample scores of its candidate threshold.

    About m * k / (n - 1) of the m sampled references are among the query's k
    nearest; SAMPLE_MARGIN standard deviations more keep most queries above it.
    """
    expected = m * k / (n - 1)
    return int(min(m - 1, math.ceil(expected + SAMPLE_MARGIN * math.sqrt(expected))))


def _sort_candidates(scores, flat, bounds, first_row):
    """Reference indices of some rows' candidates, each row's sorted by (score, index).

    Args:
        scores: float64 [C, N], a chunk's scores.
        flat: int64 [M], increasing positions in scores.ravel() of the
            candidates of rows first_row, first_row + 1, ...
        bounds: int64 [G + 1], row first_row + g's candidates are
            flat[bounds[g]:bounds[g + 1]]; bounds[0] = 0.
        first_row: the chunk row of the first candidates.

    Returns:
        int64 [M], reference indices in the order of the rows, sorted within each.
    """
    num_rows, n = scores.shape
    rows = np.repeat(np.arange(first_row, first_row + len(bounds) - 1), np.diff(bounds))
    index = flat - rows * n
    # One int64 key (row, score, index) per candidate. Flipping the non-sign bits
    # of negative floats makes the order of their bits as int64 the float order;
    # keeping only the high bits keeps that order, except that distinct scores
    # may come out equal: those are checked below.
    index_bits = (n - 1).bit_length()
    value_bits = 63 - (num_rows - 1).bit_length() - index_bits
    bits = scores.ravel()[flat].view(np.int64)
    bits ^= (bits >> 63) & _INT64_MAX
    keys = rows << (value_bits + index_bits)
    keys |= ((bits >> (64 - value_bits)) + (1 << (value_bits - 1))) << index_bits
    keys |= index
    keys.sort()
    index = keys & ((1 << index_bits) - 1)
    rounded = keys >> index_bits
    clash = np.flatnonzero(rounded[1:] == rounded[:-1])
    # Neighbours with the same row and cut score are in index order: right unless
    # their float64 scores decrease.
    wrong = clash[scores[rows[clash], index[clash]] > scores[rows[clash], index[clash + 1]]]
    for row in np.unique(rows[wrong]):
        part = slice(bounds[row - first_row], bounds[row - first_row + 1])
        index[part] = index[part][np.lexsort((index[part], scores[row, index[part]]))]
    return index


def _nearest(scores, sample_scores, k, mask):
    """The k nearest references of each query of a chunk, nearest first.

    Args:
        scores: float64 [C, N], the score of every reference for each query,
            +inf for the query itself.
        sample_scores: float64 [C, SAMPLE_SIZE], the same for a fixed random
            sample of the references, or None to use them all.
        k: number of nearest references, 1 <= k <= N - 1.
        mask: bool [C, N], work space.

    Returns:
        int64 [C, k] reference indices ordered by (score, index).
    """
    num_rows, n = scores.shape
    if sample_scores is None:
        thresholds = np.partition(scores, k - 1, axis=1)[:, k - 1]
    else:
        rank = _sample_rank(k, n, sample_scores.shape[1])
        thresholds = np.partition(sample_scores, rank, axis=1)[:, rank]
    np.less_equal(scores, thresholds[:, None], out=mask)
    short = np.count_nonzero(mask, axis=1) < k
    if short.any():
        # The sample put these queries' thresholds below their k-th nearest.
        exact = np.partition(scores[short], k - 1, axis=1)[:, k - 1]
        mask[short] = scores[short] <= exact[:, None]
    flat = np.flatnonzero(mask)
    bounds = np.searchsorted(flat, np.arange(num_rows + 1) * n)
    nearest = np.empty((num_rows, k), np.int64)
    start = 0
    while start < num_rows:
        stop = int(np.searchsorted(bounds, bounds[start] + MAX_CANDIDATES, side="right")) - 1
        stop = max(stop, start + 1)
        part = bounds[start:stop + 1] - bounds[start]
        index = _sort_candidates(scores, flat[bounds[start]:bounds[stop]], part, start)
        nearest[start:stop] = index[part[:-1, None] + np.arange(k)]
        start = stop
    return nearest


class _Chunks:
    """What every chunk of queries needs, read-only, so that threads can share it.

    Args:
        embeddings: float64 [N, D].
        class_index: int64 [N], label of each embedding as a class index.
        num_relevant: int64 [N], R of each query.
        chunk_size: queries per chunk.
    """

    def __init__(self, embeddings, class_index, num_relevant, chunk_size):
        n = len(embeddings)
        self.class_index, self.num_relevant, self.chunk_size = class_index, num_relevant, chunk_size
        # One product gives the scores: [q, 1] . [-2 r, |r|^2] = |r|^2 - 2 q.r.
        self.queries = np.concatenate([embeddings, np.ones((n, 1))], axis=1)
        self.references = np.ascontiguousarray(np.concatenate(
            [-2.0 * embeddings, np.sum(embeddings * embeddings, axis=1, keepdims=True)],
            axis=1).T)
        self.sample = None
        if n > SAMPLE_SIZE:
            # Fixed seed, though the sample only affects speed, never the result.
            # Sorted, so that gathering its columns reads memory in order.
            self.sample = np.sort(np.random.default_rng(0).choice(n, SAMPLE_SIZE, replace=False))

    def totals(self, starts):
        """Per-query figures summed over the chunks that begin at ``starts``.

        Args:
            starts: iterable of int, first query of each chunk.

        Returns:
            float64 [len(METRIC_NAMES)], sums of precision@1, R-precision, AP@R and
            recall@K; a query with R = 0 adds 0.
        """
        n = len(self.queries)
        size = min(self.chunk_size, n)
        # Reused by every chunk: a fresh chunk x N block would be paged in each time.
        score_buffer, mask = np.empty((size, n)), np.empty((size, n), bool)
        totals = np.zeros(len(METRIC_NAMES))
        for start in starts:
            stop = min(start + self.chunk_size, n)
            chunk_r = self.num_relevant[start:stop]
            if chunk_r.max() == 0:
                continue
            scores = np.matmul(self.queries[start:stop], self.references,
                               out=score_buffer[:stop - start])
            scores[np.arange(stop - start), np.arange(start, stop)] = np.inf
            sample_scores = None if self.sample is None else np.take(scores, self.sample, axis=1)
            k = int(chunk_r.max())
            nearest = _nearest(scores, sample_scores, max(k, min(RECALL_KS[-1], n - 1)),
                               mask[:stop - start])
            same = self.class_index[nearest] == self.class_index[start:stop, None]
            ranks = np.arange(1, k + 1)
            # Only the first R retrieved count for R-precision and MAP@R (the sums run
            # over exactly k columns, whatever recall@K needed).
            relevant = same[:, :k] & (ranks <= chunk_r[:, None])
            hits_so_far = np.cumsum(relevant, axis=1)
            r_safe = np.maximum(chunk_r, 1)
            # Recall@K: a same-class reference among the K nearest (none when R = 0).
            found_by = np.cumsum(same, axis=1) > 0
            recalls = [np.sum(found_by[:, min(recall_k, same.shape[1]) - 1] & (chunk_r > 0))
                       for recall_k in RECALL_KS]
            totals += [np.sum(relevant[:, 0]), np.sum(hits_so_far[:, -1] / r_safe),
                       np.sum(np.sum(relevant * (hits_so_far / ranks), axis=1) / r_safe),
                       *recalls]
        return totals


def retrieval_metrics(embeddings, labels, chunk_size=1024):
    """Leave-one-out precision@1, R-precision, MAP@R and Recall@K with Euclidean distance.

    Args:
        embeddings: float array [N, D] (any real dtype; computed in float64).
        labels: array [N] of labels (integers, or anything numpy can compare).
        chunk_size: number of queries handled at once; memory grows as
            chunk_size x N per thread. The result does not depend on it.

    Returns:
        dict with float values for "precision_at_1", "r_precision", "map_at_r"
        and "recall_at_K" for K in :data:`RECALL_KS` (1 if a reference of the
        query's label is among its K nearest, else 0; recall@1 is precision@1),
        each a mean over the queries whose label has at least one other member
        (all NaN if there is no such query).

    Raises:
        ValueError: on a wrong shape, non-finite embeddings or a bad chunk_size.
    """
    embeddings, labels = _check_inputs(embeddings, labels, chunk_size)
    _, class_index, class_counts = np.unique(labels, return_inverse=True,
                                             return_counts=True)
    class_index = class_index.reshape(-1)
    num_relevant = class_counts[class_index].astype(np.int64) - 1
    has_relevant = num_relevant > 0
    if not has_relevant.any():
        return {name: math.nan for name in METRIC_NAMES}

    chunks = _Chunks(embeddings.astype(np.float64), class_index, num_relevant, chunk_size)
    starts = range(0, len(labels), chunk_size)
    num_threads = max(1, min(MAX_THREADS, os.cpu_count() or 1, len(starts)))
    # Chunk i goes to thread i % num_threads and the threads' sums are added in
    # order, so the figures do not depend on scheduling.
    with ThreadPoolExecutor(num_threads) as pool:
        per_thread = list(pool.map(chunks.totals,
                                   [starts[i::num_threads] for i in range(num_threads)]))
    means = np.sum(per_thread, axis=0) / has_relevant.sum()
    return {name: float(value) for name, value in zip(METRIC_NAMES, means)}


def knn_accuracy(embeddings, labels, reference_embeddings, reference_labels, k=1,
                 chunk_size=1024):
    """Accuracy of a k-nearest-neighbour vote: each embedding is classified by the labels
    of its ``k`` nearest references (Euclidean distance), as scikit-learn's
    ``KNeighborsClassifier(n_neighbors=k)`` does with uniform weights.

    Conventions (scikit-learn's): references at equal distance are taken in index order,
    lowest first; a tied vote goes to the smallest label.

    Args:
        embeddings: float array [N, D], the queries (e.g. the test set).
        labels: array [N] of their labels.
        reference_embeddings: float array [M, D] (e.g. the training set).
        reference_labels: array [M].
        k: the number of neighbours that vote, 1 <= k <= M.
        chunk_size: queries handled at once (memory: chunk_size x M float64).

    Returns:
        float, the share of queries whose vote is their label.

    Raises:
        ValueError: on wrong shapes, non-finite embeddings or a bad ``k``.
    """
    embeddings, labels = _check_inputs(embeddings, labels, chunk_size)
    references, reference_labels = _check_inputs(reference_embeddings, reference_labels,
                                                 chunk_size)
    if references.shape[1] != embeddings.shape[1]:
        raise ValueError(f"the references have {references.shape[1]} dimensions but the "
                         f"embeddings {embeddings.shape[1]}; embed both with one network")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not \
            1 <= k <= len(reference_labels):
        raise ValueError(f"k must be an integer from 1 to the {len(reference_labels)} "
                         f"references, got {k!r}")
    classes, reference_index = np.unique(reference_labels, return_inverse=True)
    reference_index = reference_index.reshape(-1)
    references = references.astype(np.float64)
    squared_norms = np.einsum("ij,ij->i", references, references)
    correct = 0
    for start in range(0, len(labels), chunk_size):
        queries = embeddings[start:start + chunk_size].astype(np.float64)
        # |r|^2 - 2 q.r orders the references as the squared distance does.
        scores = squared_norms[None, :] - 2.0 * queries @ references.T
        # The candidates are the references at most as far as the k-th nearest (more than
        # k where distances tie), ordered by (score, index); the first k of a row vote.
        kth = np.partition(scores, k - 1, axis=1)[:, k - 1:k]
        rows, columns = np.nonzero(scores <= kth)
        order = np.lexsort((columns, scores[rows, columns], rows))
        rows, columns = rows[order], columns[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, np.arange(len(queries)))[rows]
        votes = np.zeros((len(queries), len(classes)), np.int64)
        np.add.at(votes, (rows[rank < k], reference_index[columns[rank < k]]), 1)
        predicted = classes[np.argmax(votes, axis=1)]  # the first maximum: smallest label
        correct += int(np.sum(predicted == labels[start:start + chunk_size]))
    return correct / len(labels)
