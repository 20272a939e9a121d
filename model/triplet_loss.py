"""Triplet losses with online mining (batch all, batch hard, batch semi-hard).

Semantics follow SPEC section 1 (Moindrot 2018, Hermans et al. 2017, FaceNet).
Shared conventions:

* ``labels``: [B] or [B, 1] integer class ids. Floats holding integer values
  (Keras casts ``y_true`` to float32) are accepted; one-hot [B, C], non-integer
  floats, booleans and rank > 2 raise ``ValueError``. When a shape or value is
  only known at run time inside a ``tf.function``, the same check runs as a
  ``tf.debugging`` assertion (``InvalidArgumentError``).
* ``embeddings``: [B, D] float16, bfloat16, float32 or float64. Everything is
  computed in float32 and every returned tensor is float32.
* A triplet (a, p, n) is valid when a != p, label[a] == label[p] and
  label[a] != label[n]. A batch without any valid triplet gives loss 0.
* ``soft_margin`` replaces the hinge max(d(a,p) - d(a,n) + margin, 0) by
  softplus(d(a,p) - d(a,n)) (Hermans et al.); ``margin`` is then unused.
"""

import os

import numpy as np
import tensorflow as tf

# A triplet counts as "positive" (and in the batch-all denominator) above this loss.
_POSITIVE_LOSS = 1e-16
# TF's searchsorted kernel runs on one thread: the losses split their searches
# into this many independent ops so that the inter-op thread pool spreads them.
_SEARCH_CHUNKS = max(1, min(os.cpu_count() or 1, 8))
# The largest batch whose B x B indices fit in int32 (batch-all indexes flat tensors).
_MAX_BATCH = 46340
# Elements of one [chunk, P, N] block in the soft-margin batch-all loop
# (4 MiB per float32 temporary: small enough to stay in cache, big enough
# that the per-iteration overhead is negligible).
_SOFT_MARGIN_BLOCK = 2**20


def pairwise_distances(embeddings, squared=False):
    """Euclidean distance between every pair of embeddings, from one matrix product.

    Args:
        embeddings: [B, D] floating tensor.
        squared: return squared distances instead of distances.

    Returns:
        [B, B] float32. The diagonal and the distance between identical
        embeddings are exactly 0, and the gradient is finite everywhere: 0 where
        the distance is 0 (sqrt'(0) is infinite; 0 is a subgradient of the
        unsquared distance there and the gradient of the squared one).
    """
    embeddings = _check_embeddings(embeddings)

    # A hand-written gradient: one [B, B] pass and two matrix products, where
    # differentiating the forward ops would take a dozen [B, B] passes.
    @tf.custom_gradient
    def distances_of(embeddings):
        dot = tf.matmul(embeddings, embeddings, transpose_b=True)
        # The norms come from the same product, so the diagonal and identical rows
        # cancel exactly: (n_i - 2 n_i) + n_i == 0.
        square_norm = tf.linalg.diag_part(dot)
        raw = square_norm[:, None] - 2.0 * dot + square_norm[None, :]
        # Round-off leaves small negatives.
        squared_distances = tf.maximum(raw, 0.0)
        distances = squared_distances if squared else tf.sqrt(squared_distances)

        def grad(upstream):
            if squared:
                upstream_squared = tf.where(raw > 0.0, upstream, 0.0)
            else:
                upstream_squared = 0.5 * tf.math.divide_no_nan(upstream, distances)
            # d/de_k of n_i + n_j - 2 e_i.e_j summed with weights G:
            # 2 (rowsum_k + colsum_k) e_k - 2 (G e)_k - 2 (G^T e)_k.
            norms_weight = (tf.reduce_sum(upstream_squared, axis=1)
                            + tf.reduce_sum(upstream_squared, axis=0))
            mixed = (tf.matmul(upstream_squared, embeddings)
                     + tf.matmul(upstream_squared, embeddings, transpose_a=True))
            return 2.0 * (norms_weight[:, None] * embeddings - mixed)

        return distances, grad

    return distances_of(embeddings)


def anchor_positive_mask(labels):
    """Pairs (a, p) with a != p and the same label.

    Args:
        labels: [B] or [B, 1] integer class ids.

    Returns:
        [B, B] bool.
    """
    return _anchor_positive_mask(_check_labels(labels))


def anchor_negative_mask(labels):
    """Pairs (a, n) with different labels.

    Args:
        labels: [B] or [B, 1] integer class ids.

    Returns:
        [B, B] bool.
    """
    return _anchor_negative_mask(_check_labels(labels))


def triplet_mask(labels):
    """Valid triplets (a, p, n); B x B x B, so for tests and the naive reference only.

    Args:
        labels: [B] or [B, 1] integer class ids.

    Returns:
        [B, B, B] bool, True at [a, p, n] when the triplet is valid.
    """
    return _triplet_mask(_check_labels(labels))


def batch_all_triplet_loss(labels, embeddings, margin, squared=False, soft_margin=False):
    """Average loss over the positive triplets among all valid triplets of the batch.

    Exact. The hinge version never builds a B x B x B tensor: each anchor's
    thresholds d(a, p) + margin are sorted, and one binary search per negative
    among them gives every triplet count and sum (see ``_hinge_triplet_sum``),
    so time is O(B^2 log B) and memory O(B^2). The soft-margin version has no such
    shortcut (every valid triplet contributes): its time is O(B^3) (exactly,
    B x the largest #positives x the largest #negatives of an anchor) and its
    memory stays O(B^2) by looping over chunks of anchors.

    Args:
        labels: [B] or [B, 1] integer class ids.
        embeddings: [B, D] floating tensor.
        margin: float, margin of the hinge (unused with ``soft_margin``).
        squared: use squared Euclidean distances.
        soft_margin: softplus(d(a,p) - d(a,n)) instead of the hinge.

    Returns:
        (loss, fraction_positive_triplets), float32 scalars: loss = sum of the
        triplet losses / number of triplets with loss > 1e-16, fraction = that
        number / number of valid triplets; both 0 when either number is 0.
        With ``soft_margin`` nearly every valid triplet counts (softplus is
        > 1e-16 unless d(a, n) - d(a, p) > 36.8), so the fraction stays near 1.
    """
    labels, distances = _prepare(labels, embeddings, squared)
    negative = _anchor_negative_mask(labels)
    if soft_margin:
        positive = _anchor_positive_mask(labels)
        total, num_positive = _soft_margin_triplet_sum(distances, positive, negative)
        num_valid = tf.reduce_sum(_row_count(positive) * _row_count(negative))
    else:
        columns, is_positive, class_sizes = _class_members(labels)
        total, num_positive = _hinge_triplet_sum(distances, columns, is_positive, negative,
                                                 margin)
        class_sizes = tf.cast(class_sizes, tf.int64)
        num_valid = tf.reduce_sum((class_sizes - 1) * (tf.size(labels, tf.int64) - class_sizes))
    return _positive_average(total, num_positive, num_valid)


def batch_all_triplet_loss_naive(labels, embeddings, margin, squared=False, soft_margin=False):
    """The textbook batch-all loss that builds every B x B x B triplet.

    Same arguments and results as :func:`batch_all_triplet_loss`; O(B^3)
    memory, kept as the reference for tests and benchmarks.
    """
    labels, distances = _prepare(labels, embeddings, squared)
    differences = distances[:, :, None] - distances[:, None, :]
    losses = _triplet_losses(differences, margin, soft_margin)
    valid = _triplet_mask(labels)
    losses = tf.where(valid, losses, 0.0)
    num_positive = tf.reduce_sum(tf.cast(losses > _POSITIVE_LOSS, tf.int64))
    num_valid = tf.reduce_sum(tf.cast(valid, tf.int64))
    return _positive_average(tf.reduce_sum(losses), num_positive, num_valid)


def batch_hard_triplet_loss(labels, embeddings, margin, squared=False, soft_margin=False):
    """For each anchor, the hardest positive against the hardest negative.

    Anchors without a positive or without a negative in the batch form no
    triplet and are left out of the mean (the TF1 original let an anchor
    without a positive contribute max(margin - hardest_negative, 0)).

    Args:
        labels: [B] or [B, 1] integer class ids.
        embeddings: [B, D] floating tensor.
        margin: float, margin of the hinge (unused with ``soft_margin``).
        squared: use squared Euclidean distances.
        soft_margin: softplus(hardest_pos - hardest_neg) instead of the hinge.

    Returns:
        loss: float32 scalar, mean over anchors having both a positive and a
            negative; 0 when there is none.
        hardest_positive_dist: [B] float32, largest d(a, p); 0 where the
            anchor has no positive.
        hardest_negative_dist: [B] float32, smallest d(a, n); where the anchor
            has no negative, the largest distance in its row (what the TF1
            original's masking gives: finite and never "hard").
    """
    labels, distances = _prepare(labels, embeddings, squared)
    positive, negative = _anchor_positive_mask(labels), _anchor_negative_mask(labels)
    has_positive = tf.reduce_any(positive, axis=1)
    has_negative = tf.reduce_any(negative, axis=1)
    # Infinite fill values keep masked entries out of the max/min; the
    # tf.where afterwards replaces the infinities of empty rows, and their
    # gradient there is exactly zero.
    hardest_positive = tf.reduce_max(tf.where(positive, distances, -np.inf), axis=1)
    hardest_positive = tf.where(has_positive, hardest_positive, 0.0)
    hardest_negative = tf.reduce_min(tf.where(negative, distances, np.inf), axis=1)
    hardest_negative = tf.where(has_negative, hardest_negative, tf.reduce_max(distances, axis=1))
    differences = hardest_positive - hardest_negative
    losses = _triplet_losses(differences, margin, soft_margin)
    loss = masked_mean(losses, has_positive & has_negative)
    return loss, hardest_positive, hardest_negative


def batch_semihard_triplet_loss(labels, embeddings, margin, squared=False):
    """FaceNet semi-hard mining (tf.contrib ``triplet_semihard_loss`` semantics).

    For every (a, p) pair the negative is the closest one farther than
    d(a, p); when there is none, the farthest negative. Computed from the
    sorted negative distances of each anchor: O(B^2 log B) time, O(B^2) memory.

    Args:
        labels: [B] or [B, 1] integer class ids.
        embeddings: [B, D] floating tensor.
        margin: float, margin of the hinge.
        squared: use squared Euclidean distances.

    Returns:
        float32 scalar: mean of max(d(a,p) - d(a,n) + margin, 0) over the (a, p)
        pairs whose anchor has at least one negative; 0 when there is none.
    """
    labels, distances = _prepare(labels, embeddings, squared)
    positive, negative = _anchor_positive_mask(labels), _anchor_negative_mask(labels)
    sorted_keys, sorted_distances = _sorted_negatives(distances, negative)
    num_negatives = _row_count(negative, tf.int32)[:, None]
    # Number of negatives with d(a, n) <= d(a, p): the semi-hard one comes next.
    not_farther = _searchsorted_rows(sorted_keys, distances)
    index = tf.where(not_farther < num_negatives, not_farther, num_negatives - 1)
    negative_distances = tf.gather(sorted_distances, tf.maximum(index, 0), batch_dims=1)
    losses = _triplet_losses(distances - negative_distances, margin, soft_margin=False)
    return masked_mean(losses, positive & (num_negatives > 0))


def _prepare(labels, embeddings, squared):
    """Checked [B] int64 labels and [B, B] float32 distances of matching batch size."""
    labels = _check_labels(labels)
    distances = pairwise_distances(embeddings, squared=squared)
    batch_labels, batch_embeddings = labels.shape[0], distances.shape[0]
    if batch_labels is not None and batch_embeddings is not None:
        if batch_labels != batch_embeddings:
            raise ValueError(
                f"labels hold {batch_labels} entries but embeddings {batch_embeddings} rows; "
                "pass one label per embedding")
    else:
        tf.debugging.assert_equal(
            tf.shape(labels)[0], tf.shape(distances)[0],
            message="labels and embeddings must have the same batch size")
    return labels, distances


def _check_embeddings(embeddings):
    embeddings = tf.convert_to_tensor(embeddings)
    if not embeddings.dtype.is_floating:
        raise ValueError(
            f"embeddings must be floating point, got {embeddings.dtype.name}; "
            "cast them to float32")
    if embeddings.shape.rank is not None and embeddings.shape.rank != 2:
        raise ValueError(
            f"embeddings must have shape [batch_size, embedding_size], got {embeddings.shape}")
    return tf.cast(embeddings, tf.float32)


def _check_labels(labels):
    """[B] int64 labels from [B] or [B, 1] integer (or integer-valued float) labels."""
    labels = tf.convert_to_tensor(labels)
    dtype = labels.dtype
    if dtype.is_bool or not (dtype.is_integer or dtype.is_floating):
        raise ValueError(
            f"labels must be integer class ids of shape [batch_size], got dtype {dtype.name}")
    shape = labels.shape
    expected = (f"labels must have shape [batch_size] or [batch_size, 1] (integer class ids), "
                f"got shape {shape}; for one-hot labels pass tf.argmax(labels, axis=-1)")
    column_or_unknown = shape.rank == 2 and shape[1] in (1, None)
    if shape.rank is not None and shape.rank != 1 and not column_or_unknown:
        raise ValueError(expected)
    if shape.rank != 1:
        if shape.rank is None or shape[1] is None:
            # Only known when the graph runs: every dimension after the first must be 1.
            # The reshape waits for the checks, or a one-hot batch could fail later with
            # an obscure shape error instead of this message.
            checks = [tf.debugging.assert_rank_in(labels, [1, 2], message=expected),
                      tf.debugging.assert_equal(tf.size(labels), tf.shape(labels)[0],
                                                message=expected)]
            with tf.control_dependencies([c for c in checks if c is not None]):
                labels = tf.identity(labels)
        labels = tf.reshape(labels, [-1])
    if dtype.is_floating:
        labels = _check_integer_values(labels)
    return tf.cast(labels, tf.int64)


def _check_integer_values(labels):
    message = "labels are floats with a fractional part; pass integer class ids"
    value = tf.get_static_value(labels)
    if value is None:
        # The labels wait for the check (see _check_labels).
        check = tf.debugging.assert_equal(labels, tf.round(labels), message=message)
        with tf.control_dependencies([check] if check is not None else []):
            return tf.identity(labels)
    if not np.all(np.isfinite(value) & (value == np.round(value))):
        raise ValueError(f"{message} (got {value.ravel()[:5].tolist()}...)")
    return labels


def _margin(margin):
    return tf.cast(margin, tf.float32)


def _triplet_losses(differences, margin, soft_margin):
    """Losses from d(a, p) - d(a, n): the hinge with ``margin``, or softplus."""
    if soft_margin:
        return tf.nn.softplus(differences)
    return tf.nn.relu(differences + _margin(margin))


def _anchor_positive_mask(labels):
    same = tf.equal(labels[:, None], labels[None, :])
    return tf.linalg.set_diag(same, tf.zeros_like(labels, dtype=tf.bool))


def _anchor_negative_mask(labels):
    return tf.not_equal(labels[:, None], labels[None, :])


def _triplet_mask(labels):
    # label[a] == label[p] != label[n] already implies n != a and n != p.
    return _anchor_positive_mask(labels)[:, :, None] & _anchor_negative_mask(labels)[:, None, :]


def _row_count(mask, dtype=tf.int64):
    return tf.reduce_sum(tf.cast(mask, dtype), axis=1)


def masked_mean(values, mask):
    """Mean of ``values`` where ``mask`` holds; 0 (with zero gradient) when it holds nowhere."""
    count = tf.reduce_sum(tf.cast(mask, tf.float32))
    return tf.reduce_sum(tf.where(mask, values, 0.0)) / tf.maximum(count, 1.0)


def _positive_average(total, num_positive, num_valid):
    """(total / num_positive, num_positive / num_valid) with 0 for empty counts; float32."""
    loss = tf.cast(total, tf.float64) / tf.cast(tf.maximum(num_positive, 1), tf.float64)
    loss = tf.where(num_positive > 0, loss, 0.0)
    fraction = tf.cast(num_positive, tf.float64) / tf.cast(tf.maximum(num_valid, 1), tf.float64)
    return tf.cast(loss, tf.float32), tf.cast(fraction, tf.float32)


def _sorted_negatives(distances, negative):
    """Each anchor's negative distances in increasing order, at the front of its row.

    Returns:
        keys: [B, B], the sorted negative distances followed by +inf (no gradient;
            for searching).
        values: [B, B], the same distances with gradient, then non-negatives'
            distances, which callers never read.
    """
    keys = tf.where(negative, distances, np.inf)
    order = tf.argsort(keys, axis=1)
    return tf.gather(keys, order, batch_dims=1), tf.gather(distances, order, batch_dims=1)


def _class_members(labels):
    """Every anchor's class, as columns of the distance matrix packed in a row.

    Args:
        labels: [B] int64 labels.

    Returns:
        columns: [B, W] int32, W the size of the largest class: row a lists the
            members of a's class; where ``is_positive`` is False (a itself, and the
            padding of smaller classes) it holds a.
        is_positive: [B, W] bool, columns[a, j] is a positive of a.
        class_sizes: [B] int32, the size of each anchor's class.
    """
    batch = tf.size(labels)
    order = tf.argsort(labels, stable=True)
    sorted_labels = tf.gather(labels, order)
    first = tf.searchsorted(sorted_labels, labels, side="left", out_type=tf.int32)
    end = tf.searchsorted(sorted_labels, labels, side="right", out_type=tf.int32)
    class_sizes = end - first
    width = tf.reduce_max(tf.concat([class_sizes, [1]], axis=0))  # 1 for an empty batch
    offsets = tf.range(width)[None, :]
    anchors = tf.range(batch)[:, None]
    columns = tf.gather(order, tf.minimum(first[:, None] + offsets, end[:, None] - 1))
    is_positive = (offsets < class_sizes[:, None]) & (columns != anchors)
    return tf.where(is_positive, columns, anchors), is_positive, class_sizes


def _hinge_triplet_sum(distances, columns, is_positive, negative, margin):
    """Sum of the hinge losses of all valid triplets and the number of positive ones.

    Triplet (a, p, n) has a positive loss exactly when d(a, n) < t(a, p), the
    threshold d(a, p) + margin. With each anchor's thresholds sorted, a binary
    search per negative counts c(a, n), the thresholds above d(a, n); a
    histogram of those positions counts k(a, p), the negatives below t(a, p).
    The sum is sum_p k t - sum_n c d(a, n) and its gradient is exactly k for
    d(a, p) and -c for d(a, n). A tie, d(a, n) == t(a, p), has loss 0 and is
    not counted.

    Args:
        distances: [B, B] float32.
        columns, is_positive: [B, W], see ``_class_members``.
        negative: [B, B] bool anchor-negative mask.
        margin: float.

    Returns:
        (total, num_positive): float64 and int64 scalars.
    """
    margin = _margin(margin)
    batch = tf.shape(distances)[0]
    width = tf.shape(columns)[1]
    # int32 flat indices into [B, B] (row * B + column) and [B, W + 1] tensors.
    check = tf.debugging.assert_less_equal(
        batch, _MAX_BATCH, message=f"batch-all supports batches of at most {_MAX_BATCH}")
    with tf.control_dependencies([check] if check is not None else []):
        rows = tf.range(batch)[:, None]

    @tf.custom_gradient
    def hinge_sum(distances):
        flat_distances = tf.reshape(distances, [-1])
        thresholds = tf.where(is_positive,
                              tf.gather(flat_distances, columns + batch * rows) + margin,
                              -np.inf)
        # Increasing, with the padding (-inf: below every distance) first.
        negated, order = tf.math.top_k(-thresholds, k=width)
        thresholds = -negated
        # Non-negatives are searched at +inf: no threshold is above them.
        below = _searchsorted_rows(thresholds, tf.where(negative, distances, np.inf))
        negative_counts = width - below
        # Negative n is below the thresholds of rank >= below[a, n]; the last bin
        # collects the non-negatives.
        histogram = tf.math.unsorted_segment_sum(
            tf.ones_like(flat_distances, dtype=tf.int32),
            tf.reshape(below + (width + 1) * rows, [-1]), batch * (width + 1))
        positive_counts = tf.cumsum(tf.reshape(histogram, [-1, width + 1])[:, :-1], axis=1)
        num_positive = tf.reduce_sum(tf.cast(tf.reduce_sum(negative_counts, axis=1), tf.int64))
        # float64: the two sums cancel heavily.
        total = (_dot64(positive_counts, tf.where(positive_counts > 0, thresholds, 0.0))
                 - _dot64(negative_counts, distances))

        def grad(upstream_total, upstream_count=None):
            # k back at the columns of the positives (the padding's k is 0).
            targets = tf.gather(columns, order, batch_dims=1) + batch * rows
            positive_weights = tf.math.unsorted_segment_sum(
                tf.reshape(positive_counts, [-1]), tf.reshape(targets, [-1]), batch * batch)
            weights = tf.reshape(positive_weights, tf.shape(distances)) - negative_counts
            return tf.cast(upstream_total, tf.float32) * tf.cast(weights, tf.float32)

        return (total, num_positive), grad

    return hinge_sum(distances)


def _searchsorted_rows(sorted_rows, values):
    """int32 [B, N]: per row, how many of ``sorted_rows`` [B, W] are <= ``values`` [B, N]."""
    batch = tf.shape(values)[0]
    bounds = [batch * i // _SEARCH_CHUNKS for i in range(_SEARCH_CHUNKS + 1)]
    sizes = tf.stack(bounds[1:]) - tf.stack(bounds[:-1])
    return tf.concat([tf.searchsorted(rows, row_values, side="right", out_type=tf.int32)
                      for rows, row_values in zip(tf.split(sorted_rows, sizes, num=_SEARCH_CHUNKS),
                                                  tf.split(values, sizes, num=_SEARCH_CHUNKS))],
                     axis=0)


def _dot64(counts, values):
    return tf.reduce_sum(tf.cast(counts, tf.float64) * tf.cast(values, tf.float64))


def _soft_margin_triplet_sum(distances, positive, negative):
    """Sum of softplus(d(a,p) - d(a,n)) over all valid triplets and the number > 1e-16."""
    # Packing each anchor's positives and negatives to the front shrinks the
    # work from B x B x B to B x max #positives x max #negatives. The fill
    # values make softplus and its slope exactly 0 for padding.
    anchor_positive = _pack_front(distances, positive, -np.inf)
    anchor_negative = _pack_front(distances, negative, np.inf)
    return _softplus_triplet_sum(anchor_positive, anchor_negative)


def _pack_front(values, mask, fill):
    """[B, K]: each row's masked values first, then ``fill``; K = the largest row count."""
    width = tf.reduce_max(_row_count(mask, tf.int32))
    order = tf.argsort(tf.cast(mask, tf.int32), axis=1, direction="DESCENDING", stable=True)
    return tf.gather(tf.where(mask, values, fill), order[:, :width], batch_dims=1)


@tf.custom_gradient
def _softplus_triplet_sum(anchor_positive, anchor_negative):
    """Sum over a, p, n of softplus(anchor_positive[a, p] - anchor_negative[a, n]).

    Loops over chunks of anchors so that memory stays O(chunk x P x N). The
    gradient is accumulated in the same pass (the slope is the sigmoid of the
    same differences), which avoids both a second pass and autodiff's storing
    every chunk's intermediates.

    Args:
        anchor_positive: [B, P] float32, -inf for padding.
        anchor_negative: [B, N] float32, +inf for padding.

    Returns:
        (total float64 scalar, number of terms > 1e-16 int64 scalar), and the
        gradient function.
    """
    batch = tf.shape(anchor_positive, out_type=tf.int64)[0]
    block = (tf.shape(anchor_positive, out_type=tf.int64)[1]
             * tf.shape(anchor_negative, out_type=tf.int64)[1])
    chunk = tf.maximum(_SOFT_MARGIN_BLOCK // tf.maximum(block, 1), 1)
    num_chunks = (batch + chunk - 1) // chunk

    def body(i, total, count, grad_positive, grad_negative):
        rows = slice(i * chunk, tf.minimum((i + 1) * chunk, batch))
        differences = anchor_positive[rows][:, :, None] - anchor_negative[rows][:, None, :]
        losses = tf.nn.softplus(differences)
        slopes = tf.sigmoid(differences)
        total += tf.reduce_sum(tf.cast(tf.reduce_sum(losses, axis=[1, 2]), tf.float64))
        count += tf.reduce_sum(tf.cast(losses > _POSITIVE_LOSS, tf.int64))
        grad_positive = grad_positive.write(tf.cast(i, tf.int32), tf.reduce_sum(slopes, axis=2))
        grad_negative = grad_negative.write(tf.cast(i, tf.int32), -tf.reduce_sum(slopes, axis=1))
        return i + 1, total, count, grad_positive, grad_negative

    def empty():
        return tf.TensorArray(tf.float32, size=tf.cast(num_chunks, tf.int32), infer_shape=False)

    _, total, count, grad_positive, grad_negative = tf.while_loop(
        lambda i, *_: i < num_chunks, body,
        (tf.constant(0, tf.int64), tf.constant(0.0, tf.float64), tf.constant(0, tf.int64),
         empty(), empty()))
    grad_positive = tf.reshape(grad_positive.concat(), tf.shape(anchor_positive))
    grad_negative = tf.reshape(grad_negative.concat(), tf.shape(anchor_negative))

    def grad(upstream_total, upstream_count=None):
        upstream = tf.cast(upstream_total, tf.float32)
        return upstream * grad_positive, upstream * grad_negative

    return (total, count), grad
