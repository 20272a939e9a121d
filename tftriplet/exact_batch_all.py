"""Exact batch-all triplet sums in O(B^2) memory (used by :mod:`tftriplet.triplet_loss`).

The textbook batch-all loss builds all B x B x B triplets. The hinge version here sorts
each anchor's thresholds d(a, p) + margin and counts, by binary search, which negatives
fall below which thresholds: O(B^2 log B) time and O(B^2) memory, with the gradient
written from the same counts. The soft-margin version has no such shortcut (every valid
triplet contributes); it loops over chunks of anchors to keep memory O(B^2).
"""

import os

import numpy as np
import tensorflow as tf

# A triplet counts as "positive" (and in the batch-all denominator) above this loss.
POSITIVE_LOSS = 1e-16
# TF's searchsorted kernel runs on one thread: searches are split into this many
# independent ops so that the inter-op thread pool spreads them.
_SEARCH_CHUNKS = max(1, min(os.cpu_count() or 1, 8))
# The largest batch whose B x B indices fit in int32 (batch-all indexes flat tensors):
# floor(sqrt(2**31 - 1)). Larger batches are computed in blocks (tftriplet/blocked.py).
MAX_BATCH = 46340
# Elements of one [chunk, P, N] block in the soft-margin loop (4 MiB per float32
# temporary: small enough to stay in cache, big enough that the per-iteration
# overhead is negligible).
_SOFT_MARGIN_BLOCK = 2**20
# The largest batch of soft-margin batch-all under XLA (its B^3 block: 1 GB of float32).
_XLA_MAX_BATCH = 640


def under_xla():
    """Whether the ops being built will be compiled by XLA (``jit_compile=True``).

    XLA compiles one program per set of shapes: widths that depend on the labels (the
    largest class, the most negatives of an anchor) would recompile it at nearly every
    batch (measured: 0.4 ms -> 360 ms per call at B = 64), so under XLA they are the
    batch size instead, fixed for a given batch shape.
    """
    # No public TensorFlow API tells this. jit_compile=True (tf.function, Keras) enters an
    # XLA control-flow context on the graph being traced or on one enclosing it; reading
    # it takes tf.__internal__ (exported for TensorFlow's own libraries, Keras among them)
    # or the private tensorflow.python.ops.control_flow_util.
    return tf.__internal__.get_enclosing_xla_context() is not None


def class_members(labels):
    """Every anchor's class, as columns of the distance matrix packed in a row.

    Args:
        labels: [B] int64 labels.

    Returns:
        columns: [B, W] int32, W the size of the largest class (B under XLA): row a lists the
            members of a's class; where ``is_positive`` is False (a itself, and the
            padding of smaller classes) it holds a.
        is_positive: [B, W] bool, columns[a, j] is a positive of a.
        class_sizes: [B] int32, the size of each anchor's class.
    """
    classes = ClassIndex(labels)
    columns, is_positive = classes.members(tf.range(classes.batch), classes.width())
    return columns, is_positive, classes.sizes


class ClassIndex:
    """Where each example's class lies in the batch sorted by label: O(B) memory, so that
    blocks of anchors can list their positives without a [B, B] mask."""

    def __init__(self, labels):
        self.batch = tf.size(labels)
        self.order = tf.argsort(labels, stable=True)
        sorted_labels = tf.gather(labels, self.order)
        self.first = tf.searchsorted(sorted_labels, labels, side="left", out_type=tf.int32)
        self.end = tf.searchsorted(sorted_labels, labels, side="right", out_type=tf.int32)
        self.sizes = self.end - self.first

    def width(self):
        """The size of the largest class (the batch size under XLA), at least 1."""
        if under_xla():
            return tf.maximum(self.batch, 1)
        return tf.reduce_max(tf.concat([self.sizes, [1]], axis=0))  # 1 for an empty batch

    def members(self, anchors, width):
        """(columns, is_positive), [b, width], of the ``anchors`` [b] (see class_members)."""
        first, end = tf.gather(self.first, anchors), tf.gather(self.end, anchors)
        offsets = tf.range(width)[None, :]
        anchors = anchors[:, None]
        columns = tf.gather(self.order, tf.minimum(first[:, None] + offsets, end[:, None] - 1))
        # tf.not_equal, not `!=`: in TF1 graph mode `!=` on tensors compares the Python
        # objects and gives True, which made every anchor its own positive.
        is_positive = tf.logical_and(offsets < (end - first)[:, None],
                                     tf.not_equal(columns, anchors))
        return tf.where(is_positive, columns, anchors), is_positive


def hinge_triplet_sum(distances, columns, is_positive, negative, margin):
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
        columns, is_positive: [B, W], see :func:`class_members`.
        negative: [B, B] bool anchor-negative mask.
        margin: float.

    Returns:
        (total, num_positive): float64 and int64 scalars.
    """
    rows = _row_indices(tf.shape(distances)[0])

    @tf.custom_gradient
    def hinge_sum(distances):
        total, num_positive, counts = hinge_counts(distances, columns, is_positive, negative,
                                                   margin, rows)

        def grad(upstream_total, upstream_count=None):
            return tf.cast(upstream_total, tf.float32) * hinge_weights(columns, *counts)

        return (total, num_positive), grad

    return hinge_sum(distances)


def hinge_counts(distances, columns, is_positive, negative, margin, rows):
    """The sums of :func:`hinge_triplet_sum` for rows of anchors, and the counts behind them.

    Args:
        distances: [b, B] float32, the rows of b anchors.
        columns, is_positive: [b, W], their positives (see :func:`class_members`).
        negative: [b, B] bool.
        margin: float.
        rows: [b, 1] int32, 0 ... b - 1.

    Returns:
        total (float64), num_positive (int64), and the counts that :func:`hinge_weights`
        turns into the gradient.
    """
    margin = tf.cast(margin, tf.float32)
    num_columns = tf.shape(distances)[1]
    width = tf.shape(columns)[1]
    flat_distances = tf.reshape(distances, [-1])
    thresholds = tf.where(is_positive,
                          tf.gather(flat_distances, columns + num_columns * rows) + margin,
                          -np.inf)
    # Increasing, with the padding (-inf: below every distance) first.
    negated, order = tf.math.top_k(-thresholds, k=width)
    thresholds = -negated
    # Non-negatives are searched at +inf: no threshold is above them.
    below = searchsorted_rows(thresholds, tf.where(negative, distances, np.inf))
    negative_counts = width - below
    # Negative n is below the thresholds of rank >= below[a, n]; the last bin collects
    # the non-negatives.
    histogram = tf.math.unsorted_segment_sum(
        tf.ones_like(flat_distances, dtype=tf.int32),
        tf.reshape(below + (width + 1) * rows, [-1]), tf.size(rows) * (width + 1))
    positive_counts = tf.cumsum(tf.reshape(histogram, [-1, width + 1])[:, :-1], axis=1)
    total, num_positive = _hinge_total(thresholds, positive_counts, distances, negative_counts)
    return total, num_positive, (order, positive_counts, negative_counts)


def hinge_weights(columns, order, positive_counts, negative_counts):
    """[b, B] float32, the derivative of the hinge total by the distances: k at the
    positives' columns, -c at the negatives'."""
    num_rows, num_columns = tf.shape(negative_counts)[0], tf.shape(negative_counts)[1]
    # k back at the columns of the positives (the padding's k is 0).
    targets = tf.gather(columns, order, batch_dims=1) + num_columns * tf.range(num_rows)[:, None]
    positive_weights = tf.math.unsorted_segment_sum(
        tf.reshape(positive_counts, [-1]), tf.reshape(targets, [-1]), num_rows * num_columns)
    return tf.cast(tf.reshape(positive_weights, tf.shape(negative_counts)) - negative_counts,
                   tf.float32)


def _row_indices(batch):
    """[B, 1] int32 anchor indices, once B is checked to keep int32 flat indices into
    [B, B] (row * B + column) and [B, W + 1] tensors from overflowing."""
    check = tf.debugging.assert_less_equal(
        batch, MAX_BATCH, message=f"batch-all without blocks (block_size=0) supports "
        f"batches of at most {MAX_BATCH}; leave block_size at None (blocks above 4,096)")
    with tf.control_dependencies([check] if check is not None else []):
        return tf.range(batch)[:, None]


def _hinge_total(thresholds, positive_counts, distances, negative_counts):
    """sum_p k t - sum_n c d(a, n) (float64) and sum_n c (int64) of hinge_triplet_sum."""
    num_positive = tf.reduce_sum(tf.cast(tf.reduce_sum(negative_counts, axis=1), tf.int64))
    # float64: the two sums cancel heavily.
    total = (_dot64(positive_counts, tf.where(positive_counts > 0, thresholds, 0.0))
             - _dot64(negative_counts, distances))
    return total, num_positive


def searchsorted_rows(sorted_rows, values):
    """int32 [B, N]: per row, how many of ``sorted_rows`` [B, W] are <= ``values`` [B, N]."""
    batch, width = tf.shape(values)[0], tf.shape(values)[1]
    # tf.searchsorted fails on zero-width values (an empty batch): one padding column.
    padding = [[0, 0], [0, tf.maximum(1 - width, 0)]]
    values = tf.pad(values, padding)
    sorted_rows = tf.pad(sorted_rows, [[0, 0], [0, tf.maximum(1 - tf.shape(sorted_rows)[1], 0)]],
                         constant_values=np.inf)
    bounds = [batch * i // _SEARCH_CHUNKS for i in range(_SEARCH_CHUNKS + 1)]
    sizes = tf.stack(bounds[1:]) - tf.stack(bounds[:-1])
    return tf.concat([tf.searchsorted(rows, row_values, side="right", out_type=tf.int32)
                      for rows, row_values in zip(tf.split(sorted_rows, sizes, num=_SEARCH_CHUNKS),
                                                  tf.split(values, sizes, num=_SEARCH_CHUNKS))],
                     axis=0)[:, :width]


def _dot64(counts, values):
    return tf.reduce_sum(tf.cast(counts, tf.float64) * tf.cast(values, tf.float64))


def soft_margin_triplet_sum(distances, positive, negative):
    """Sum of softplus(d(a,p) - d(a,n)) over all valid triplets and the number > 1e-16."""
    # Packing each anchor's positives and negatives to the front shrinks the
    # work from B x B x B to B x max #positives x max #negatives. The fill
    # values make softplus and its slope exactly 0 for padding.
    anchor_positive, _ = pack_front(distances, positive, -np.inf)
    anchor_negative, _ = pack_front(distances, negative, np.inf)
    return _softplus_triplet_sum(anchor_positive, anchor_negative)


def pack_front(values, mask, fill):
    """[b, K]: each row's masked values first, then ``fill``; K = the largest row count.

    Returns:
        (packed, columns): ``columns`` [b, K] int32, where each packed value came from.
    """
    # At least 1: XLA crashes (SIGFPE) slicing a zero-width operand in the loop, and a
    # column of fill values adds exactly 0 to the sums and their slopes.
    if under_xla():
        width = tf.maximum(tf.shape(mask)[1], 1)
    else:
        width = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)), 1)
    order = tf.argsort(tf.cast(mask, tf.int32), axis=1, direction="DESCENDING", stable=True)
    columns = order[:, :width]
    return tf.gather(tf.where(mask, values, fill), columns, batch_dims=1), columns


@tf.custom_gradient
def _softplus_triplet_sum(anchor_positive, anchor_negative):
    """Sum over a, p, n of softplus(anchor_positive[a, p] - anchor_negative[a, n]).

    Returns:
        (total float64 scalar, number of terms > 1e-16 int64 scalar), and the
        gradient function (see :func:`softplus_sums`).
    """
    total, count, grad_positive, grad_negative = softplus_sums(anchor_positive, anchor_negative)

    def grad(upstream_total, upstream_count=None):
        upstream = tf.cast(upstream_total, tf.float32)
        return upstream * grad_positive, upstream * grad_negative

    return (total, count), grad


def softplus_sums(anchor_positive, anchor_negative):
    """Sum over a, p, n of softplus(anchor_positive[a, p] - anchor_negative[a, n]), the
    number of terms > 1e-16, and the derivatives of the sum by both inputs.

    Loops over chunks of anchors so that memory stays O(chunk x P x N). The
    gradient is accumulated in the same pass (the slope is the sigmoid of the
    same differences), which avoids both a second pass and autodiff's storing
    every chunk's intermediates.

    Args:
        anchor_positive: [B, P] float32, -inf for padding.
        anchor_negative: [B, N] float32, +inf for padding.

    Returns:
        total (float64 scalar), count (int64 scalar), d total / d anchor_positive [B, P] and
        d total / d anchor_negative [B, N] (float32).
    """
    batch = tf.shape(anchor_positive, out_type=tf.int64)[0]
    block = (tf.shape(anchor_positive, out_type=tf.int64)[1]
             * tf.shape(anchor_negative, out_type=tf.int64)[1])
    if under_xla():
        # XLA cannot compile the loop's slices of a varying size: one chunk of all
        # anchors, B x B x B under XLA's static widths.
        if anchor_positive.shape[0] is not None and anchor_positive.shape[0] > _XLA_MAX_BATCH:
            raise ValueError(
                f"soft-margin batch-all under XLA holds B^3 values; batch "
                f"{anchor_positive.shape[0]} is above {_XLA_MAX_BATCH}: compile without XLA "
                "(jit_compile=False, also faster on CPU) or use a smaller batch")
        chunk = tf.maximum(batch, 1)
    else:
        chunk = tf.maximum(_SOFT_MARGIN_BLOCK // tf.maximum(block, 1), 1)
    num_chunks = (batch + chunk - 1) // chunk

    def body(i, total, count, grad_positive, grad_negative):
        rows = slice(i * chunk, tf.minimum((i + 1) * chunk, batch))
        differences = anchor_positive[rows][:, :, None] - anchor_negative[rows][:, None, :]
        losses = tf.nn.softplus(differences)
        slopes = tf.sigmoid(differences)
        total += tf.reduce_sum(tf.cast(tf.reduce_sum(losses, axis=[1, 2]), tf.float64))
        count += tf.reduce_sum(tf.cast(losses > POSITIVE_LOSS, tf.int64))
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
    return total, count, grad_positive, grad_negative
