"""The triplet losses over blocks of anchors: O(B x block) memory for very large batches.

The losses of :mod:`tftriplet.triplet_loss` hold a handful of [B, B] tensors (the
distances, the masks, the mining's sorts and searches, their gradients): eleven of them at
the peak, 12 GB at B = 16,384 (a global batch of 8 x 2,048 under ``tf.distribute``).
Every strategy's loss is a sum over anchors divided by a count, so the same losses are
computed here one block of b anchors at a time: the block's [b, B] rows of the distance
matrix come from one matrix product with all the embeddings, its share of the sum, the
count and the gradient with respect to the embeddings is added up, and the rows are
dropped. No [B, B] tensor exists; memory is O(b x B + B x D).

The mining of each row is the unblocked one (the same sorts, searches and tie rules), and
the gradient is the one autodiff gives the unblocked loss, written by hand: d loss / d
distances per block, then through the distance (Euclidean, squared, or angular on the
L2-normalised rows) to the embeddings. The values agree with the unblocked losses to
float32 round-off (the sums are float64 here), which tests/test_blocked.py checks for
every strategy, distance and degenerate batch.

Blocks have a fixed size (the last one is padded with rows that are not anchors), so
that every block is the same matrix product: identical embeddings are exactly 0 apart,
as in the unblocked losses, and XLA compiles the loop when the batch size is static.
"""

import numpy as np
import tensorflow as tf

from tftriplet import exact_batch_all

# Batches above this size are computed in blocks unless a loss is told otherwise: below
# it the [B, B] losses are faster (benchmarks/bench_losses.py) and well within memory.
BLOCKED_ABOVE = 4096
# A block's [b, B] rows hold about this many distances (16 MiB of float32 per temporary).
BLOCK_ELEMENTS = 2**22
# The largest batch: every int32 index into a block's rows stays far below 2^31 (a block
# has at least one anchor: b x B <= max(BLOCK_ELEMENTS, B)).
MAX_BATCH = 2**24


def automatic_block_size(batch):
    """Anchors per block for a batch of ``batch`` (an int or an int32 scalar tensor)."""
    if isinstance(batch, int):
        return max(1, min(batch, BLOCK_ELEMENTS // max(batch, 1)))
    return tf.maximum(1, tf.minimum(batch, BLOCK_ELEMENTS // tf.maximum(batch, 1)))


class _Rows:
    """Rows of the distance matrix of ``points``, one fixed-size block of anchors at a time,
    and the way back from d sum / d distances to d sum / d points.

    ``metric`` is "L2", "squared-L2", or "angular" (then ``points`` are the L2-normalised
    embeddings and the distance is max(1 - u_i.u_j, 0), as :func:`tftriplet.distances.angular`).
    """

    def __init__(self, points, metric, block):
        self.points = points
        self.metric = metric
        self.block = block
        check = tf.debugging.assert_less_equal(
            tf.shape(points)[0], MAX_BATCH,
            message=f"the triplet losses take batches of at most {MAX_BATCH}")
        with tf.control_dependencies([check] if check is not None else []):
            self.batch = tf.identity(tf.shape(points)[0])
        self.num_blocks = (self.batch + block - 1) // block
        padding = self.num_blocks * block - self.batch
        # Zero rows: they are no anchor (see valid), and keep every block one shape.
        self.padded = tf.pad(points, [[0, padding], [0, 0]])
        if metric != "angular":
            self.padded_norms = self._square_norms()
            self.norms = self.padded_norms[:self.batch]

    def _square_norms(self):
        """[padded] float32 |e_i|^2, each the diagonal entry of its block's product.

        The distances take the norms from the same [b, B] matrix product as the dot
        products (same shape, same kernel: the kernels of other shapes round differently),
        so an embedding's distance to itself and to an identical one is (n - 2 n) + n == 0
        exactly, as in the unblocked losses. It costs one more pass of products, a small
        share of the mining's sorts and searches.
        """
        def body(index, norms):
            rows, anchors, valid = self.anchors(index)
            dot = tf.matmul(rows, self.points, transpose_b=True)
            diagonal = tf.gather(dot, anchors[:, None], batch_dims=1)[:, 0]
            return index + 1, norms.write(index, tf.where(valid, diagonal, 0.0))

        _, norms = tf.while_loop(
            lambda index, _: index < self.num_blocks, body,
            (tf.constant(0), tf.TensorArray(tf.float32, size=self.num_blocks, infer_shape=False)),
            parallel_iterations=1)
        return norms.concat()

    def anchors(self, index):
        """(rows [b, D], anchors [b] int32 clipped into the batch, valid [b] bool)."""
        start = index * self.block
        rows = tf.slice(self.padded, [start, 0], [self.block, -1])
        positions = start + tf.range(self.block)
        return rows, tf.minimum(positions, self.batch - 1), positions < self.batch

    def distances(self, index, rows):
        """[b, B] float32 distances of the block's anchors, and what :meth:`backward` needs."""
        dot = tf.matmul(rows, self.points, transpose_b=True)
        if self.metric == "angular":
            cosine_distances = 1.0 - dot
            return tf.maximum(cosine_distances, 0.0), cosine_distances
        row_norms = tf.slice(self.padded_norms, [index * self.block], [self.block])
        raw = row_norms[:, None] - 2.0 * dot + self.norms[None, :]
        squared_distances = tf.maximum(raw, 0.0)
        if self.metric == "squared-L2":
            return squared_distances, raw
        return tf.sqrt(squared_distances), raw

    def backward(self, rows, distances, before_clamp, weights):
        """d sum / d points from ``weights`` [b, B] = d sum / d distances of one block.

        Returns:
            (gradient of the block's rows [b, D], gradient of all the points [B, D]).
        """
        if self.metric == "angular":
            # tf.maximum passes the gradient where its first argument is >= the second.
            weights = tf.where(before_clamp >= 0.0, weights, 0.0)
            return (-tf.matmul(weights, self.points),
                    -tf.matmul(weights, rows, transpose_a=True))
        if self.metric == "squared-L2":
            weights = tf.where(before_clamp > 0.0, weights, 0.0)
        else:
            # d sqrt(s) = ds / (2 sqrt(s)), and 0 at s = 0 (see distances.euclidean).
            weights = 0.5 * tf.math.divide_no_nan(weights, distances)
        # d/de of n_i + n_j - 2 e_i.e_j, the rows' half and the columns' half.
        row_gradient = 2.0 * (tf.reduce_sum(weights, axis=1)[:, None] * rows
                              - tf.matmul(weights, self.points))
        column_gradient = 2.0 * (tf.reduce_sum(weights, axis=0)[:, None] * self.points
                                 - tf.matmul(weights, rows, transpose_a=True))
        return row_gradient, column_gradient


class _Part:
    """One block of anchors: their [b, B] distances and masks."""

    def __init__(self, labels, rows_of, index):
        self.rows, self.anchors, self.valid = rows_of.anchors(index)
        self.distances, self.before_clamp = rows_of.distances(index, self.rows)
        anchor_labels = tf.gather(labels, self.anchors)[:, None]
        columns = tf.range(tf.size(labels))[None, :]
        valid = self.valid[:, None]
        self.positive = (tf.equal(anchor_labels, labels[None, :])
                         & tf.not_equal(columns, self.anchors[:, None]) & valid)
        self.negative = tf.not_equal(anchor_labels, labels[None, :]) & valid
        self.has_positive = tf.reduce_any(self.positive, axis=1)
        self.has_negative = tf.reduce_any(self.negative, axis=1)


def _blocked_sum(labels, points, metric, block, block_sum, num_extras=0):
    """Sum over blocks of ``block_sum(part) -> (sum, count, weights, extras)`` (``part`` a
    :class:`_Part`).

    ``sum`` is a float64 scalar, ``count`` an int64 scalar, ``weights`` [b, B] float32 =
    d sum / d distances, ``extras`` ``num_extras`` [b] float32 per-anchor values.

    Returns:
        (total float64, count int64, finite bool, extras [B] float32 each): ``total`` has
        its gradient with respect to ``points``; ``finite`` is False when a distance is NaN
        or infinite; the extras carry no gradient.
    """
    @tf.custom_gradient
    def total_of(points):
        rows_of = _Rows(points, metric, block)

        def body(index, total, count, finite, column_gradient, row_gradients, extras):
            part = _Part(labels, rows_of, index)
            block_total, block_count, weights, block_extras = block_sum(part)
            weights = tf.where(part.valid[:, None], weights, 0.0)
            row_gradient, column_gradient_part = rows_of.backward(
                part.rows, part.distances, part.before_clamp, weights)
            finite &= tf.reduce_all(tf.math.is_finite(part.distances))
            return (index + 1, total + block_total, count + block_count, finite,
                    column_gradient + tf.ensure_shape(column_gradient_part, points.shape),
                    row_gradients.write(index, row_gradient),
                    [values.write(index, value) for values, value in zip(extras, block_extras)])

        def per_block():
            return tf.TensorArray(tf.float32, size=rows_of.num_blocks, infer_shape=False)

        _, total, count, finite, column_gradient, row_gradients, extras = tf.while_loop(
            lambda index, *_: index < rows_of.num_blocks, body,
            (tf.constant(0), tf.constant(0.0, tf.float64), tf.constant(0, tf.int64),
             tf.constant(True), tf.zeros_like(points),
             per_block(), [per_block() for _ in range(num_extras)]),
            # One block at a time: parallel iterations would each hold their [b, B] rows.
            parallel_iterations=1)
        gradient = (tf.reshape(row_gradients.concat(), tf.shape(rows_of.padded))[:rows_of.batch]
                    + column_gradient)
        extras = [tf.stop_gradient(values.concat()[:rows_of.batch]) for values in extras]

        def grad(upstream_total, *unused_upstream):
            return tf.cast(upstream_total, tf.float32) * gradient

        return (total, count, finite, *extras), grad

    return total_of(points)


# --- Batch all ---------------------------------------------------------------------------


def batch_all_sums(labels, points, metric, margin, soft_margin, block):
    """(total, num_positive, finite) of batch-all (see exact_batch_all), in blocks."""
    classes = exact_batch_all.ClassIndex(labels)
    width = classes.width()
    block_rows = tf.range(block)[:, None]

    def hinge(part):
        columns, is_positive = classes.members(part.anchors, width)
        is_positive &= part.valid[:, None]
        total, count, counts = exact_batch_all.hinge_counts(
            part.distances, columns, is_positive, part.negative, margin, block_rows)
        return total, count, exact_batch_all.hinge_weights(columns, *counts), ()

    def soft(part):
        anchor_positive, positive_columns = exact_batch_all.pack_front(
            part.distances, part.positive, -np.inf)
        anchor_negative, negative_columns = exact_batch_all.pack_front(
            part.distances, part.negative, np.inf)
        total, count, positive_slopes, negative_slopes = exact_batch_all.softplus_sums(
            anchor_positive, anchor_negative)
        # Back to the columns they were packed from; the padding's slopes are exactly 0.
        return total, count, _scatter_rows(
            tf.concat([positive_columns, negative_columns], axis=1),
            tf.concat([positive_slopes, negative_slopes], axis=1),
            tf.size(labels)), ()

    total, count, finite = _blocked_sum(labels, points, metric, block,
                                        soft if soft_margin else hinge)
    return total, count, finite


def _scatter_rows(columns, values, num_columns):
    """[b, num_columns]: ``values`` [b, K] added at ``columns`` [b, K] of their row."""
    num_rows = tf.shape(columns)[0]
    flat = columns + num_columns * tf.range(num_rows)[:, None]
    return tf.reshape(tf.math.unsorted_segment_sum(tf.reshape(values, [-1]),
                                                   tf.reshape(flat, [-1]),
                                                   num_rows * num_columns),
                      [num_rows, num_columns])


# --- Batch hard --------------------------------------------------------------------------


def _selected(masked, selected):
    """tf.reduce_max / reduce_min's gradient: 1 / #ties at the entries equal to ``selected``."""
    ties = tf.cast(tf.equal(masked, selected[:, None]), tf.float32)
    return ties / tf.reduce_sum(ties, axis=1, keepdims=True)


def batch_hard_sums(labels, points, metric, margin, soft_margin, all_anchors, block):
    """(sum of the anchors' losses, number of anchors averaged, finite, hardest positive
    distances [B], hardest negative distances [B]) of batch-hard, in blocks."""
    margin = tf.cast(margin, tf.float32)

    def hard(part):
        distances = part.distances
        masked_positive = tf.where(part.positive, distances, -np.inf)
        masked_negative = tf.where(part.negative, distances, np.inf)
        row_min = tf.reduce_min(distances, axis=1)
        row_max = tf.reduce_max(distances, axis=1)
        positive_dist = tf.where(part.has_positive, tf.reduce_max(masked_positive, axis=1),
                                 row_min)
        negative_dist = tf.where(part.has_negative, tf.reduce_min(masked_negative, axis=1),
                                 row_max)
        differences = positive_dist - negative_dist
        if soft_margin:
            losses, slopes = tf.nn.softplus(differences), tf.sigmoid(differences)
        else:
            losses = tf.nn.relu(differences + margin)
            slopes = tf.cast(differences + margin > 0.0, tf.float32)
        anchors = part.valid if all_anchors else part.has_positive & part.has_negative
        slopes = tf.where(anchors, slopes, 0.0)[:, None]
        positive_ties = tf.where(part.has_positive[:, None],
                                 _selected(masked_positive, positive_dist),
                                 _selected(distances, positive_dist))
        negative_ties = tf.where(part.has_negative[:, None],
                                 _selected(masked_negative, negative_dist),
                                 _selected(distances, negative_dist))
        total = tf.reduce_sum(tf.cast(tf.where(anchors, losses, 0.0), tf.float64))
        count = tf.reduce_sum(tf.cast(anchors, tf.int64))
        return (total, count, slopes * (positive_ties - negative_ties),
                (positive_dist, negative_dist))

    return _blocked_sum(labels, points, metric, block, hard, num_extras=2)


# --- Batch semi-hard ---------------------------------------------------------------------


def batch_semihard_sums(labels, points, metric, margin, all_anchors, block):
    """(sum of the pairs' losses, number of pairs averaged, finite) of semi-hard mining,
    in blocks: per pair (a, p), the closest negative farther than d(a, p), else the
    farthest (see triplet_loss.batch_semihard_triplet_loss)."""
    margin = tf.cast(margin, tf.float32)
    classes = exact_batch_all.ClassIndex(labels)
    width = classes.width()

    def semihard(part):
        distances = part.distances
        columns, is_positive = classes.members(part.anchors, width)
        is_positive &= part.valid[:, None]
        keys = tf.where(part.negative, distances, np.inf)
        order = tf.argsort(keys, axis=1)
        sorted_keys = tf.gather(keys, order, batch_dims=1)
        num_negatives = tf.reduce_sum(tf.cast(part.negative, tf.int32), axis=1)[:, None]
        positive_distances = tf.gather(distances, columns, batch_dims=1)
        # Number of negatives with d(a, n) <= d(a, p): the semi-hard one comes next.
        not_farther = exact_batch_all.searchsorted_rows(sorted_keys, positive_distances)
        index = tf.maximum(tf.where(not_farther < num_negatives, not_farther,
                                    num_negatives - 1), 0)
        negative_columns = tf.gather(order, index, batch_dims=1)
        negative_distances = tf.gather(distances, negative_columns, batch_dims=1)
        has_negative = num_negatives > 0
        row_min = tf.reduce_min(distances, axis=1)
        if all_anchors:
            negative_distances = tf.where(has_negative, negative_distances, row_min[:, None])
            pairs = is_positive
        else:
            pairs = is_positive & has_negative
        differences = positive_distances - negative_distances + margin
        losses = tf.where(pairs, tf.nn.relu(differences), 0.0)
        slopes = tf.where(pairs & (differences > 0.0), 1.0, 0.0)
        num_columns = tf.size(labels)
        weights = (_scatter_rows(columns, slopes, num_columns)
                   - _scatter_rows(negative_columns,
                                   tf.where(has_negative, slopes, 0.0), num_columns))
        if all_anchors:
            # An anchor without negative takes its row's smallest distance.
            without = tf.where(has_negative, 0.0, slopes)
            weights -= (tf.reduce_sum(without, axis=1)[:, None]
                        * _selected(distances, row_min))
        return (tf.reduce_sum(tf.cast(losses, tf.float64)),
                tf.reduce_sum(tf.cast(pairs, tf.int64)), weights, ())

    return _blocked_sum(labels, points, metric, block, semihard)
