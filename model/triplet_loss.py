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

import numpy as np
import tensorflow as tf

# Added under the square root where a squared distance is exactly 0, so its
# gradient stays finite; the distance itself is zeroed afterwards.
_SQRT_EPSILON = 1e-16
# A triplet counts as "positive" (and in the batch-all denominator) above this loss.
_POSITIVE_LOSS = 1e-16
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
        embeddings are exactly 0, and the gradient is finite everywhere.
    """
    embeddings = _check_embeddings(embeddings)
    dot = tf.matmul(embeddings, embeddings, transpose_b=True)
    # The norms come from the same product so identical rows cancel exactly.
    square_norm = tf.linalg.diag_part(dot)
    distances = square_norm[:, None] - 2.0 * dot + square_norm[None, :]
    # Round-off leaves small negatives; the diagonal is 0 by definition.
    distances = tf.maximum(distances, 0.0)
    distances = tf.linalg.set_diag(distances, tf.zeros_like(square_norm))
    if squared:
        return distances
    # sqrt'(0) is infinite: take the root of epsilon there and zero the result,
    # which also zeroes the gradient flowing into those entries.
    zeros = tf.cast(tf.equal(distances, 0.0), tf.float32)
    return tf.sqrt(distances + zeros * _SQRT_EPSILON) * (1.0 - zeros)


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

    Exact. The hinge version never builds a B x B x B tensor: one sort per
    anchor of its thresholds d(a, p) + margin mixed with its negative distances
    gives every triplet count and sum (see ``_hinge_triplet_sum``), so time is
    O(B^2 log B) and memory O(B^2). The soft-margin version has no such
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
    positive, negative = _anchor_positive_mask(labels), _anchor_negative_mask(labels)
    if soft_margin:
        total, num_positive = _soft_margin_triplet_sum(distances, positive, negative)
    else:
        total, num_positive = _hinge_triplet_sum(distances, positive, negative, margin)
    num_valid = tf.reduce_sum(_row_count(positive) * _row_count(negative))
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
    not_farther = tf.searchsorted(sorted_keys, distances, side="right")
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


def _hinge_triplet_sum(distances, positive, negative, margin):
    """Sum of the hinge losses of all valid triplets and the number of positive ones.

    Triplet (a, p, n) has a positive loss exactly when d(a, n) < d(a, p) + margin.
    One decreasing sort per anchor of its thresholds d(a, p) + margin mixed with
    its negative distances therefore tells, for every positive, how many
    negatives sort after it (k, its weight in the sum) and, for every negative,
    how many positives sort before it (c): the sum is
    sum_p k_p (d(a, p) + margin) - sum_n c_n d(a, n), and its gradient is k and
    -c exactly. On a tie the negative sorts first: loss 0, not counted.
    """
    margin = _margin(margin)
    batch = tf.shape(distances)[0]
    keys = _sort_keys(tf.where(positive, distances + margin, distances), negative)
    # The anchor itself sorts last, so every earlier position is a positive or
    # a negative; taken for a positive, it has no negative after it: weight 0.
    keys = tf.where(positive | negative, keys, tf.int64.min)
    sorted_keys, order = tf.math.top_k(keys, k=batch)
    is_negative = tf.cast(tf.bitwise.bitwise_and(sorted_keys, 1), tf.int32)
    is_positive = 1 - is_negative
    negatives_so_far = tf.cumsum(is_negative, axis=1)
    positives_so_far = tf.range(1, batch + 1)[None, :] - negatives_so_far
    negatives_after = negatives_so_far[:, -1:] - negatives_so_far
    sorted_weights = is_positive * negatives_after - is_negative * positives_so_far
    num_positive = tf.reduce_sum(tf.cast(tf.maximum(sorted_weights, 0), tf.int64))
    weights = _unpermute(sorted_weights, order)
    # float64: the positive and negative terms cancel heavily.
    total = (tf.reduce_sum(tf.cast(weights, tf.float64) * tf.cast(distances, tf.float64))
             + tf.cast(margin, tf.float64) * tf.cast(num_positive, tf.float64))
    return total, num_positive


def _sort_keys(values, flags):
    """int64 keys ordered like float32 ``values``, equal values ordered by bool ``flags``.

    ``values`` must not hold -0.0 (which would sort below +0.0); distances and
    distances plus a margin never do.
    """
    bits = tf.bitcast(values, tf.int32)
    # Floats are sign-magnitude: flipping the magnitude bits of negatives makes
    # their bit patterns order like the floats as two's-complement integers.
    sign = tf.bitwise.right_shift(bits, 31)  # arithmetic: -1 for negatives, else 0
    bits = tf.bitwise.bitwise_xor(bits, tf.bitwise.bitwise_and(sign, 0x7FFFFFFF))
    return tf.cast(bits, tf.int64) * 2 + tf.cast(flags, tf.int64)


def _unpermute(sorted_values, order):
    """[B, B] values with values[a, order[a, q]] = sorted_values[a, q]."""
    batch = tf.shape(order, out_type=tf.int64)[0]
    # A scatter of the flattened rows: each target index occurs exactly once.
    targets = tf.reshape(tf.cast(order, tf.int64) + batch * tf.range(batch)[:, None], [-1])
    values = tf.math.unsorted_segment_sum(tf.reshape(sorted_values, [-1]), targets, batch * batch)
    return tf.reshape(values, tf.shape(order))


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
