"""Triplet losses with online mining: batch all, batch hard, batch semi-hard.

The losses of Moindrot's "Triplet Loss and Online Triplet Mining in TensorFlow" (batch
all, batch hard), of FaceNet (Schroff et al. 2015: semi-hard) and the soft margin of
Hermans et al. (2017); docs/losses.md states every convention. Each loss is distances,
masks, mining and a reduction, and the module reads in that order, as the blog does; the
losses come last, the blog's textbook batch-all next to the exact one that replaces it.
It is one module, near 400 lines (nearly half of them docstrings), so that it reads top to
bottom as the blog's one file; the exact batch-all sums are :mod:`tftriplet.exact_batch_all`
and the checks of the inputs :mod:`tftriplet.inputs`:

* ``labels``: [B] or [B, 1] integer class ids. Floats holding integer values
  (Keras casts ``y_true`` to float32) are accepted; one-hot [B, C], non-integer
  floats, booleans and rank > 2 raise ``ValueError``. When a shape or value is
  only known at run time inside a ``tf.function``, the same check runs as a
  ``tf.debugging`` assertion (``InvalidArgumentError``).
* ``embeddings``: [B, D] float16, bfloat16, float32 or float64. Everything is
  computed in float32 and every returned tensor is float32.
* ``distance``: None for the Euclidean distance (squared if ``squared``), a name in
  :data:`tftriplet.distances.METRICS`, or a callable embeddings -> [B, B] distances.
* A triplet (a, p, n) is valid when a != p, label[a] == label[p] and
  label[a] != label[n]. A batch without any valid triplet gives loss 0.
* ``block_size``: None computes batches above :data:`tftriplet.blocked.BLOCKED_ABOVE`
  (4,096) in blocks of anchors (O(B x block) memory, :mod:`tftriplet.blocked`) and smaller
  ones with [B, B] tensors; a positive int forces blocks of that many anchors; 0 never
  blocks. Blocks need a named distance (a callable is always unblocked) and give the
  same values to float32 round-off.
* ``soft_margin`` replaces the hinge max(d(a,p) - d(a,n) + margin, 0) by
  softplus(d(a,p) - d(a,n)) (Hermans et al.); ``margin`` is then unused.

:data:`STRATEGIES` maps each ``triplet_strategy`` of params.json to its loss and the
summaries TensorBoard shows for it (``contrastive``, the online contrastive loss of
:func:`tftriplet.pair_losses.batch_contrastive_loss`, among them).
"""

import numpy as np
import tensorflow as tf

from tftriplet import distances as distances_lib
from tftriplet import blocked, exact_batch_all, inputs, pair_losses
from tftriplet.exact_batch_all import POSITIVE_LOSS

# --- Distances ---------------------------------------------------------------------------


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
    return distances_lib.distance_matrix(embeddings, _metric(squared, None))


def _metric(squared, distance):
    if distance is not None:
        return distance
    return "squared-L2" if squared else "L2"


def _labels_and_distances(labels, embeddings, squared, distance):
    """Checked [B] int64 labels and [B, B] float32 distances of matching batch size.

    Returns:
        (labels, distances, finite): ``finite`` is a bool scalar, False when a distance is
        NaN or infinite (NaN or Inf in the embeddings): the losses are then NaN, never a
        finite number that would hide a diverged network.
    """
    labels = inputs.check_labels(labels)
    distances = inputs.check_batch_sizes(
        labels, distances_lib.distance_matrix(embeddings, _metric(squared, distance)))
    return labels, distances, tf.reduce_all(tf.math.is_finite(distances))


def _blocked_or_not(labels, embeddings, squared, distance, block_size, unblocked, in_blocks):
    """``unblocked()``, or ``in_blocks(labels, points, metric, block)`` as ``block_size`` says
    (see the module docstring), with ``points`` the float32 embeddings, L2-normalised for
    the angular distance."""
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                   or block_size < 0):
        raise ValueError(f"block_size must be None (automatic), 0 (no blocks) or a positive "
                         f"number of anchors per block, got {block_size!r}")
    metric = _metric(squared, distance)
    if callable(metric) and block_size:
        raise ValueError("block_size needs a named distance (L2, squared-L2, angular): a "
                         "callable distance returns the whole [B, B] matrix at once")
    if callable(metric) or metric not in distances_lib.METRICS or block_size == 0:
        return unblocked()  # which also names an unknown distance
    labels = inputs.check_labels(labels)
    embeddings = inputs.check_batch_sizes(labels, inputs.check_embeddings(embeddings))

    def in_blocks_of(block):
        points = tf.math.l2_normalize(embeddings, axis=1) if metric == "angular" else embeddings
        return in_blocks(labels, points, metric, block)

    batch = embeddings.shape[0]
    if block_size:
        # An empty batch has no block to loop over: the unblocked losses give its zeros.
        use_blocks = batch > 0 if batch is not None else tf.shape(embeddings)[0] > 0
        block = block_size
    elif batch is not None:
        use_blocks, block = batch > blocked.BLOCKED_ABOVE, blocked.automatic_block_size(batch)
    elif exact_batch_all.under_xla():
        # XLA compiles static block shapes only; its batch size is not known here.
        return unblocked()
    else:
        batch = tf.shape(embeddings)[0]
        use_blocks = batch > blocked.BLOCKED_ABOVE
        block = blocked.automatic_block_size(batch)
    if isinstance(use_blocks, bool):
        return in_blocks_of(block) if use_blocks else unblocked()
    return tf.cond(use_blocks, lambda: in_blocks_of(block), unblocked)


# --- Masks -------------------------------------------------------------------------------


def anchor_positive_mask(labels):
    """Pairs (a, p) with a != p and the same label.

    Args:
        labels: [B] or [B, 1] integer class ids.

    Returns:
        [B, B] bool, True at [a, p] when a != p and label[a] == label[p].
    """
    labels = inputs.check_labels(labels)
    same = tf.equal(labels[:, None], labels[None, :])
    return tf.linalg.set_diag(same, tf.zeros_like(labels, dtype=tf.bool))


def anchor_negative_mask(labels):
    """Pairs (a, n) with different labels.

    Args:
        labels: [B] or [B, 1] integer class ids.

    Returns:
        [B, B] bool, True at [a, n] when label[a] != label[n] (so a != n).
    """
    labels = inputs.check_labels(labels)
    return tf.not_equal(labels[:, None], labels[None, :])


def triplet_mask(labels):
    """Valid triplets (a, p, n); B x B x B, so for tests and the textbook batch-all only.

    Args:
        labels: [B] or [B, 1] integer class ids.

    Returns:
        [B, B, B] bool, True at [a, p, n] when the triplet is valid.
    """
    labels = inputs.check_labels(labels)
    # label[a] == label[p] != label[n] already implies n != a and n != p.
    return anchor_positive_mask(labels)[:, :, None] & anchor_negative_mask(labels)[:, None, :]


# --- Mining ------------------------------------------------------------------------------


class _Hardest:
    """Batch-hard mining of one batch: per anchor, the hardest distances and which exist."""

    def __init__(self, labels, distances):
        positive, negative = anchor_positive_mask(labels), anchor_negative_mask(labels)
        self.has_positive = tf.reduce_any(positive, axis=1)
        self.has_negative = tf.reduce_any(negative, axis=1)
        # Infinite fill values keep masked entries out of the max/min; the tf.where
        # afterwards replaces the infinities of empty rows, and their gradient there
        # is exactly zero.
        hardest_positive = tf.reduce_max(tf.where(positive, distances, -np.inf), axis=1)
        self.positive_dist = tf.where(self.has_positive, hardest_positive,
                                      tf.reduce_min(distances, axis=1))
        hardest_negative = tf.reduce_min(tf.where(negative, distances, np.inf), axis=1)
        self.negative_dist = tf.where(self.has_negative, hardest_negative,
                                      tf.reduce_max(distances, axis=1))


def _semihard_negatives(distances, negative):
    """For every pair (a, p), d(a, n) of its semi-hard negative n.

    Args:
        distances: [B, B] float32.
        negative: [B, B] bool anchor-negative mask.

    Returns:
        negative_distances: [B, B] float32, at [a, p] the smallest d(a, n) > d(a, p), else
            the largest d(a, n); meaningless where a has no negative.
        num_negatives: [B, 1] int32, the number of negatives of each anchor.
    """
    sorted_keys, sorted_distances = _sorted_negatives(distances, negative)
    num_negatives = _row_count(negative, tf.int32)[:, None]
    # Number of negatives with d(a, n) <= d(a, p): the semi-hard one comes next.
    not_farther = exact_batch_all.searchsorted_rows(sorted_keys, distances)
    index = tf.where(not_farther < num_negatives, not_farther, num_negatives - 1)
    return tf.gather(sorted_distances, tf.maximum(index, 0), batch_dims=1), num_negatives


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


# --- Triplet losses and reductions -------------------------------------------------------


def _triplet_losses(differences, margin, soft_margin):
    """Losses from d(a, p) - d(a, n): the hinge with ``margin``, or softplus."""
    if soft_margin:
        return tf.nn.softplus(differences)
    return tf.nn.relu(differences + tf.cast(margin, tf.float32))


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


def _row_count(mask, dtype=tf.int64):
    return tf.reduce_sum(tf.cast(mask, dtype), axis=1)


def _nan_unless(finite, *values):
    nan = tf.constant(np.nan, tf.float32)
    results = tuple(tf.where(finite, value, nan) for value in values)
    return results if len(results) > 1 else results[0]


# --- The losses --------------------------------------------------------------------------


def batch_all_triplet_loss_naive(labels, embeddings, margin, squared=False, soft_margin=False,
                                 distance=None):
    """The textbook batch-all loss, as the blog writes it: every B x B x B triplet.

    Same arguments and results as :func:`batch_all_triplet_loss`, which computes the
    same sums exactly without the B x B x B tensors; O(B^3) memory, kept as the
    reference for tests and benchmarks.
    """
    labels, distances, finite = _labels_and_distances(labels, embeddings, squared, distance)
    differences = distances[:, :, None] - distances[:, None, :]
    losses = _triplet_losses(differences, margin, soft_margin)
    valid = triplet_mask(labels)
    losses = tf.where(valid, losses, 0.0)
    num_positive = tf.reduce_sum(tf.cast(losses > POSITIVE_LOSS, tf.int64))
    num_valid = tf.reduce_sum(tf.cast(valid, tf.int64))
    return _nan_unless(finite, *_positive_average(tf.reduce_sum(losses), num_positive,
                                                  num_valid))


def batch_all_triplet_loss(labels, embeddings, margin, squared=False, soft_margin=False,
                           distance=None, block_size=None):
    """Average loss over the positive triplets among all valid triplets of the batch.

    loss = sum over valid (a, p, n) of max(d(a,p) - d(a,n) + margin, 0), divided by
    the number of those triplets whose loss is > 1e-16 (averaging over the easy zeros
    too would shrink the loss to nothing as training progresses).

    The fast exact version of the textbook :func:`batch_all_triplet_loss_naive`, without
    its B x B x B tensors: see :mod:`tftriplet.exact_batch_all` (hinge: O(B^2 log B)
    time, O(B^2) memory; soft margin: O(B^3) time, exactly B x the largest #positives x
    the largest #negatives of an anchor, O(B^2) memory).

    Args:
        labels: [B] or [B, 1] integer class ids.
        embeddings: [B, D] floating tensor.
        margin: float, margin of the hinge (unused with ``soft_margin``).
        squared: use squared Euclidean distances.
        soft_margin: softplus(d(a,p) - d(a,n)) instead of the hinge.
        distance, block_size: see the module docstring.

    Returns:
        (loss, fraction_positive_triplets), float32 scalars: loss = sum of the
        triplet losses / number of triplets with loss > 1e-16, fraction = that
        number / number of valid triplets; both 0 when either number is 0.
        With ``soft_margin`` nearly every valid triplet counts (softplus is
        > 1e-16 unless d(a, n) - d(a, p) > 36.8), so the fraction stays near 1.
    """
    def in_blocks(labels, points, metric, block):
        total, num_positive, finite = blocked.batch_all_sums(labels, points, metric, margin,
                                                            soft_margin, block)
        return _nan_unless(finite, *_positive_average(total, num_positive,
                                                      _num_valid_triplets(labels)))

    return _blocked_or_not(labels, embeddings, squared, distance, block_size,
                           lambda: _batch_all(labels, embeddings, margin, squared, soft_margin,
                                              distance), in_blocks)


def _num_valid_triplets(labels):
    """(|class| - 1) x (B - |class|) summed over anchors, from the class sizes alone."""
    class_sizes = tf.cast(exact_batch_all.ClassIndex(labels).sizes, tf.int64)
    return tf.reduce_sum((class_sizes - 1) * (tf.size(labels, tf.int64) - class_sizes))


def _batch_all(labels, embeddings, margin, squared, soft_margin, distance):
    labels, distances, finite = _labels_and_distances(labels, embeddings, squared, distance)
    negative = anchor_negative_mask(labels)
    if soft_margin:
        positive = anchor_positive_mask(labels)
        total, num_positive = exact_batch_all.soft_margin_triplet_sum(distances, positive,
                                                                      negative)
        num_valid = tf.reduce_sum(_row_count(positive) * _row_count(negative))
    else:
        columns, is_positive, _ = exact_batch_all.class_members(labels)
        total, num_positive = exact_batch_all.hinge_triplet_sum(
            distances, columns, is_positive, negative, margin)
        num_valid = _num_valid_triplets(labels)
    return _nan_unless(finite, *_positive_average(total, num_positive, num_valid))


def batch_hard_triplet_loss(labels, embeddings, margin, squared=False, soft_margin=False,
                            distance=None, all_anchors=False, block_size=None):
    """For each anchor, the hardest positive against the hardest negative.

    loss = mean over anchors a of max(max_p d(a,p) - min_n d(a,n) + margin, 0).
    Anchors without a positive or without a negative in the batch form no
    triplet and are left out of the mean (the TF1 original let an anchor
    without a positive contribute max(margin - hardest_negative, 0)), unless
    ``all_anchors``.

    Args:
        labels: [B] or [B, 1] integer class ids.
        embeddings: [B, D] floating tensor.
        margin: float, margin of the hinge (unused with ``soft_margin``).
        squared: use squared Euclidean distances.
        soft_margin: softplus(hardest_pos - hardest_neg) instead of the hinge.
        distance, block_size: see the module docstring.
        all_anchors: average over all B anchors, each with the placeholders below
            (TensorFlow Addons' ``triplet_hard_loss`` and the TF1 original).

    Returns:
        loss: float32 scalar, mean over anchors having both a positive and a
            negative (all anchors with ``all_anchors``); 0 when there is none.
        hardest_positive_dist: [B] float32, largest d(a, p); where the anchor has
            no positive, the smallest distance in its row (0 for the Euclidean
            and angular distances: the diagonal).
        hardest_negative_dist: [B] float32, smallest d(a, n); where the anchor
            has no negative, the largest distance in its row (what the TF1
            original's masking gives: finite and never "hard").
        All NaN when a distance is NaN or infinite. Computed in blocks, the hardest
        distances carry no gradient (the loss does).
    """
    def in_blocks(labels, points, metric, block):
        total, count, finite, positive_dist, negative_dist = blocked.batch_hard_sums(
            labels, points, metric, margin, soft_margin, all_anchors, block)
        return _nan_unless(finite, _mean(total, count), positive_dist, negative_dist)

    return _blocked_or_not(labels, embeddings, squared, distance, block_size,
                           lambda: _batch_hard(labels, embeddings, margin, squared, soft_margin,
                                               distance, all_anchors), in_blocks)


def _batch_hard(labels, embeddings, margin, squared, soft_margin, distance, all_anchors):
    labels, distances, finite = _labels_and_distances(labels, embeddings, squared, distance)
    hardest = _Hardest(labels, distances)
    losses = _triplet_losses(hardest.positive_dist - hardest.negative_dist, margin, soft_margin)
    anchors = (tf.ones_like(hardest.has_positive) if all_anchors
               else hardest.has_positive & hardest.has_negative)
    return _nan_unless(finite, masked_mean(losses, anchors), hardest.positive_dist,
                       hardest.negative_dist)


def _mean(total, count):
    """float32 total / count (float64 scalars' quotient), 0 when count is 0."""
    mean = tf.cast(total, tf.float64) / tf.cast(tf.maximum(count, 1), tf.float64)
    return tf.cast(tf.where(count > 0, mean, 0.0), tf.float32)


def _has_positive_and_negative(labels):
    """[B] bool each: whether an anchor has a positive, and a negative, in the batch."""
    labels = inputs.check_labels(labels)
    class_sizes = exact_batch_all.ClassIndex(labels).sizes
    return class_sizes > 1, class_sizes < tf.size(labels)


def batch_semihard_triplet_loss(labels, embeddings, margin, squared=False, distance=None,
                                all_anchors=False, block_size=None):
    """FaceNet semi-hard mining (tf.contrib ``triplet_semihard_loss`` semantics).

    For every (a, p) pair the negative is the closest one farther than
    d(a, p); when there is none, the farthest negative. Computed from the
    sorted negative distances of each anchor: O(B^2 log B) time, O(B^2) memory.

    Args:
        labels: [B] or [B, 1] integer class ids.
        embeddings: [B, D] floating tensor.
        margin: float, margin of the hinge.
        squared: use squared Euclidean distances.
        distance, block_size: see the module docstring.
        all_anchors: average over every (a, p) pair, a pair whose anchor has no
            negative taking the smallest distance of its row as d(a, n) (TensorFlow
            Addons' ``triplet_semihard_loss``; 0 instead of its NaN when there is
            no pair at all).

    Returns:
        float32 scalar: mean of max(d(a,p) - d(a,n) + margin, 0) over the (a, p)
        pairs whose anchor has at least one negative (every pair with
        ``all_anchors``); 0 when there is none; NaN when a distance is NaN or
        infinite.
    """
    def in_blocks(labels, points, metric, block):
        total, count, finite = blocked.batch_semihard_sums(labels, points, metric, margin,
                                                           all_anchors, block)
        return _nan_unless(finite, _mean(total, count))

    return _blocked_or_not(labels, embeddings, squared, distance, block_size,
                           lambda: _batch_semihard(labels, embeddings, margin, squared, distance,
                                                   all_anchors), in_blocks)


def _batch_semihard(labels, embeddings, margin, squared, distance, all_anchors):
    labels, distances, finite = _labels_and_distances(labels, embeddings, squared, distance)
    positive, negative = anchor_positive_mask(labels), anchor_negative_mask(labels)
    negative_distances, num_negatives = _semihard_negatives(distances, negative)
    if all_anchors:
        negative_distances = tf.where(num_negatives > 0, negative_distances,
                                      tf.reduce_min(distances, axis=1, keepdims=True))
    else:
        positive &= num_negatives > 0
    losses = _triplet_losses(distances - negative_distances, margin, soft_margin=False)
    return _nan_unless(finite, masked_mean(losses, positive))


# --- The strategies of params.json: loss and TensorBoard summaries -----------------------
# Each takes (labels, embeddings, margin, squared, soft_margin, distance) and returns
# (loss, dict of float32 scalar summaries named as in docs/runs.md).


def _batch_all_with_summaries(labels, embeddings, margin, squared=False, soft_margin=False,
                              distance=None):
    loss, fraction = batch_all_triplet_loss(labels, embeddings, margin, squared, soft_margin,
                                            distance)
    return loss, {"fraction_positive_triplets": fraction}


def _batch_hard_with_summaries(labels, embeddings, margin, squared=False, soft_margin=False,
                               distance=None):
    loss, positive_dist, negative_dist = batch_hard_triplet_loss(labels, embeddings, margin,
                                                                squared, soft_margin, distance)
    has_positive, has_negative = _has_positive_and_negative(labels)
    # Averaged over the anchors that have a positive (a negative): the placeholders of
    # the others (0, the row maximum) would blur the curves.
    return loss, {"hardest_positive_dist": masked_mean(positive_dist, has_positive),
                  "hardest_negative_dist": masked_mean(negative_dist, has_negative)}


def _batch_semihard_with_summaries(labels, embeddings, margin, squared=False, soft_margin=False,
                                   distance=None):
    if soft_margin:
        raise ValueError("batch_semihard has no soft margin: its negatives are chosen by the "
                         "margin; use batch_all or batch_hard")
    return batch_semihard_triplet_loss(labels, embeddings, margin, squared, distance), {}


def _contrastive_with_summaries(labels, embeddings, margin, squared=False, soft_margin=False,
                                distance=None):
    if soft_margin:
        raise ValueError("contrastive has no soft margin: use batch_all or batch_hard")
    loss, fraction = pair_losses.batch_contrastive_loss(labels, embeddings, margin, squared,
                                                        distance)
    return loss, {"fraction_positive_pairs": fraction}


STRATEGIES = {
    "batch_all": _batch_all_with_summaries,
    "batch_hard": _batch_hard_with_summaries,
    "batch_semihard": _batch_semihard_with_summaries,
    "contrastive": _contrastive_with_summaries,
}
# The names of the summaries each strategy returns (for dashboards that list them ahead).
SUMMARY_NAMES = {
    "batch_all": ("fraction_positive_triplets",),
    "batch_hard": ("hardest_positive_dist", "hardest_negative_dist"),
    "batch_semihard": (),
    "contrastive": ("fraction_positive_pairs",),
}
