"""Retrieval quality of a set of embeddings (SPEC section 3; Musgrave et al. 2020).

Protocol: every embedding is a query, the references are all the *other*
embeddings (leave-one-out), ranked by Euclidean distance. With R the number of
references that share the query's label:

* precision@1: 1 if the nearest reference has the query's label, else 0;
* R-precision: the share of the R nearest references that have the query's label;
* MAP@R: (1/R) * sum_{i<=R} P@i * rel_i, with rel_i = 1 if the i-th nearest
  reference has the query's label and P@i the share of relevant ones among the
  first i.

Each figure is the mean over queries.

Conventions:

* Ties: references at equal distance (equal in float64 arithmetic) are ranked
  by their index in the set, lowest first, so the result never depends on the
  sort algorithm or on ``chunk_size``.
* A query whose label has no other member (R = 0) has nothing to retrieve, so it
  is left out of all three means (the same queries for every figure). If every
  query is left out, the figures are NaN rather than 0, so an undefined score
  is not mistaken for a bad one.

The work is done in chunks of queries with TensorFlow ops: a chunk x N block of
scores, then a top-k with k = the largest R in the chunk. Memory is a few
chunk x N float64 blocks (about 80 MB each for 1024 x 10,000), not N x N: for
N = 10,000 and the default chunk_size the peak is about 250 MB above the
process's baseline (benchmarks/bench_metrics.py).
"""

import math

import numpy as np
import tensorflow as tf

METRIC_NAMES = ("precision_at_1", "r_precision", "map_at_r")


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


def _chunk_sums(refs, ref_sq_norms, class_ids, start, stop, num_relevant):
    """Per-query precision@1, R-precision and average precision@R for one chunk.

    Args:
        refs: float64 tensor [N, D], all embeddings.
        ref_sq_norms: float64 tensor [N], their squared L2 norms.
        class_ids: int64 tensor [N], label of each embedding as a class index.
        start, stop: the chunk is the queries refs[start:stop] (C = stop - start).
        num_relevant: int64 numpy array [C], R of each query of the chunk, max >= 1.

    Returns:
        Three float64 numpy arrays [C]; entries of queries with R = 0 are 0.
    """
    n = refs.shape[0]
    queries = refs[start:stop]
    # -|q - r|^2 + |q|^2: the |q|^2 term is the same for every reference of a
    # query, so it does not change the ranking and is left out.
    scores = 2.0 * tf.matmul(queries, refs, transpose_b=True) - ref_sq_norms[None, :]
    is_self = tf.one_hot(tf.range(start, stop), n, on_value=True, off_value=False,
                         dtype=tf.bool)
    scores = tf.where(is_self, tf.constant(-np.inf, tf.float64), scores)
    k = int(num_relevant.max())
    # top_k puts the lower index first among equal scores: the documented tie rule.
    _, nearest = tf.math.top_k(scores, k=k, sorted=True)
    relevant = tf.equal(tf.gather(class_ids, nearest), class_ids[start:stop, None])
    ranks = tf.range(1, k + 1, dtype=tf.int64)
    r = tf.constant(num_relevant, tf.int64)
    # Only the first R retrieved count for R-precision and MAP@R.
    relevant = tf.cast(relevant & (ranks[None, :] <= r[:, None]), tf.float64)
    hits_so_far = tf.cumsum(relevant, axis=1)
    precision_at_i = hits_so_far / tf.cast(ranks, tf.float64)[None, :]
    r_safe = tf.cast(tf.maximum(r, 1), tf.float64)
    r_precision = hits_so_far[:, -1] / r_safe
    average_precision = tf.reduce_sum(precision_at_i * relevant, axis=1) / r_safe
    return relevant[:, 0].numpy(), r_precision.numpy(), average_precision.numpy()


def retrieval_metrics(embeddings, labels, chunk_size=1024):
    """Leave-one-out precision@1, R-precision and MAP@R with Euclidean distance.

    Args:
        embeddings: float array [N, D] (any real dtype; computed in float64).
        labels: array [N] of labels (integers, or anything numpy can compare).
        chunk_size: number of queries handled at once; memory grows as
            chunk_size x N. The result does not depend on it.

    Returns:
        dict with float values for "precision_at_1", "r_precision" and
        "map_at_r", each a mean over the queries whose label has at least one
        other member (all NaN if there is no such query).

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

    refs = tf.constant(embeddings, tf.float64)
    ref_sq_norms = tf.reduce_sum(tf.square(refs), axis=1)
    class_ids = tf.constant(class_index, tf.int64)
    totals = np.zeros(len(METRIC_NAMES))
    for start in range(0, len(labels), chunk_size):
        stop = min(start + chunk_size, len(labels))
        chunk_r = num_relevant[start:stop]
        if chunk_r.max() == 0:
            continue
        per_query = _chunk_sums(refs, ref_sq_norms, class_ids, start, stop, chunk_r)
        mask = has_relevant[start:stop]
        totals += [values[mask].sum() for values in per_query]
    means = totals / has_relevant.sum()
    return {name: float(value) for name, value in zip(METRIC_NAMES, means)}
