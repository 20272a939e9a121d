"""Metric-learning losses of pairs: contrastive, N-pairs and lifted structure.

The formulas of TensorFlow Addons' ``contrastive_loss``, ``npairs_loss``,
``npairs_multilabel_loss`` and ``lifted_struct_loss`` (its Keras names live in
:mod:`tftriplet.losses`), computed in float32 and safe where TFA's were not (each is
tested in tests/test_pair_losses.py):

* contrastive: a pair's two terms are selected by its label, not multiplied by it, so a
  negative pair at a huge distance gives 0 (TFA: 0 x inf = NaN), and distances are
  squared in float32 (TFA squared float16 distances in float16: inf above 256);
* N-pairs: integer labels are compared as integers (TFA compared them in the logits'
  dtype: in float16, ids 2048 and 2049 were one class); an example without any label
  (multilabel) has no positive and is left out of the mean (TFA: NaN);
* lifted structure: a batch without positive pairs, or of one class (no negatives),
  gives 0 (TFA: NaN), and the distances are :func:`tftriplet.distances.euclidean`'s
  (identical embeddings exactly 0 apart, finite gradient).
"""

import numpy as np
import tensorflow as tf

from tftriplet import distances as distances_lib
from tftriplet import inputs


def contrastive(same, distances, margin=1.0):
    """Per pair, y d^2 + (1 - y) max(margin - d, 0)^2 (Hadsell, Chopra and LeCun 2006).

    Args:
        same: [B] 1 for a pair of the same class, 0 for a different one (values in
            between weigh both terms linearly, as TFA); any shape, elementwise.
        distances: [B] distances d (not squared) of the pairs, the shape of ``same``.
        margin: float, how far apart different pairs are pushed.

    Returns:
        [B] float32 losses.
    """
    distances = tf.cast(distances, tf.float32)
    same = tf.cast(same, tf.float32)
    margin = tf.cast(margin, tf.float32)
    # Selected by the label, not multiplied by it: 0 x an infinite square is NaN.
    pull = tf.where(tf.equal(same, 0.0), 0.0, same * tf.square(distances))
    push = tf.where(tf.equal(same, 1.0), 0.0,
                    (1.0 - same) * tf.square(tf.maximum(margin - distances, 0.0)))
    return pull + push


def npairs(labels, similarities):
    """Mean over examples of the softmax cross-entropy of their row of ``similarities``
    against their class (Sohn 2016): the target is uniform over the examples of the
    same class, the example itself included.

    Args:
        labels: [B] or [B, 1] integer class ids.
        similarities: [B, B] logits, e.g. anchors . positives^T.

    Returns:
        float32 scalar.
    """
    labels = inputs.check_labels(labels)
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    return _soft_cross_entropy(same, similarities)


def npairs_multilabel(label_sets, similarities):
    """:func:`npairs` where each example has a set of labels: the target of row i is
    proportional to the number of labels it shares with each example.

    Args:
        label_sets: [B, C] 0 / 1 indicators (dense, or a ``tf.SparseTensor``).
        similarities: [B, B] logits.

    Returns:
        float32 scalar, the mean over the examples that have at least one label (0 when
        none has).
    """
    if isinstance(label_sets, tf.SparseTensor):
        label_sets = tf.sparse.to_dense(label_sets)
    label_sets = tf.cast(label_sets, tf.float32)
    return _soft_cross_entropy(tf.matmul(label_sets, label_sets, transpose_b=True),
                               similarities)


def _soft_cross_entropy(shared, similarities):
    """Mean softmax cross-entropy of the rows of ``similarities`` against ``shared``
    normalised per row; rows whose ``shared`` sums to 0 are left out."""
    logits = tf.cast(similarities, tf.float32)
    totals = tf.reduce_sum(shared, axis=1, keepdims=True)
    has_target = totals[:, 0] > 0.0
    targets = tf.math.divide_no_nan(shared, totals)
    losses = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    count = tf.reduce_sum(tf.cast(has_target, tf.float32))
    return tf.reduce_sum(tf.where(has_target, losses, 0.0)) / tf.maximum(count, 1.0)


def lifted_struct(labels, embeddings, margin=1.0):
    """The lifted structured loss (Oh Song et al. 2016).

    For a positive pair (i, j), J_ij = log(sum over negatives k of i of exp(margin - d(i, k))
    + the same sum over the negatives of j) + d(i, j), and the loss is the sum over the
    unordered positive pairs of max(J_ij, 0)^2, divided by twice their number. d is the
    Euclidean distance.

    Args:
        labels: [B] or [B, 1] integer class ids.
        embeddings: [B, D] floating tensor (computed in float32).
        margin: float.

    Returns:
        float32 scalar; 0 without positive pairs or without negatives (one class).
    """
    labels = inputs.check_labels(labels)
    distances = inputs.check_batch_sizes(labels, distances_lib.distance_matrix(embeddings, "L2"))
    margin = tf.cast(margin, tf.float32)
    same = tf.equal(labels[:, None], labels[None, :])
    positive = tf.linalg.set_diag(same, tf.zeros_like(labels, dtype=tf.bool))
    has_negatives = tf.logical_not(tf.reduce_all(same))
    # log sum over each row's negatives of exp(margin - d); a one-class batch has no
    # negative anywhere: its rows are made finite (and its loss 0) so that no gradient is
    # NaN.
    negative_terms = tf.where(has_negatives,
                              tf.where(same, -np.inf, margin - distances), 0.0)
    row_terms = tf.reduce_logsumexp(negative_terms, axis=1)
    larger = tf.maximum(row_terms[:, None], row_terms[None, :])
    pair_terms = larger + tf.math.log(tf.exp(row_terms[:, None] - larger)
                                      + tf.exp(row_terms[None, :] - larger))
    hinge = tf.nn.relu(pair_terms + distances)
    squares = tf.where(positive, tf.square(hinge), 0.0)
    num_ordered_pairs = tf.reduce_sum(tf.cast(positive, tf.float32))
    loss = 0.5 * tf.reduce_sum(squares) / tf.maximum(num_ordered_pairs, 1.0)
    return tf.where(has_negatives & (num_ordered_pairs > 0.0), loss, 0.0)


def batch_contrastive_loss(labels, embeddings, margin, squared=False, distance=None):
    """The contrastive loss with online pair mining: every pair of the batch, averaged over
    the pairs whose loss is positive (as batch-all averages over its positive triplets).

    loss = sum over pairs i < j of [same class] d^2 + [different] max(margin - d, 0)^2,
    divided by the number of those pairs whose loss is > 1e-16.

    Args:
        labels: [B] or [B, 1] integer class ids.
        embeddings: [B, D] floating tensor (computed in float32).
        margin: float, how far apart pairs of different classes are pushed.
        squared, distance: the distance d, as the triplet losses take it (Euclidean, squared
            with ``squared``; a name in :data:`tftriplet.distances.METRICS` or a callable).

    Returns:
        (loss, fraction_positive_pairs), float32 scalars: 0 for a batch of fewer than two
        examples or without a positive pair; NaN when a distance is NaN or infinite.
    """
    labels = inputs.check_labels(labels)
    metric = distance if distance is not None else ("squared-L2" if squared else "L2")
    distances = inputs.check_batch_sizes(labels, distances_lib.distance_matrix(embeddings, metric))
    same = tf.equal(labels[:, None], labels[None, :])
    losses = contrastive(tf.cast(same, tf.float32), distances, margin)  # elementwise
    # Each unordered pair once: the strict upper triangle.
    pairs = tf.linalg.band_part(tf.ones_like(same), 0, -1)
    pairs = tf.linalg.set_diag(pairs, tf.zeros_like(labels, dtype=tf.bool))
    positive = pairs & (losses > 1e-16)
    num_positive = tf.reduce_sum(tf.cast(positive, tf.float32))
    num_pairs = tf.reduce_sum(tf.cast(pairs, tf.float32))
    loss = tf.reduce_sum(tf.where(positive, losses, 0.0)) / tf.maximum(num_positive, 1.0)
    fraction = num_positive / tf.maximum(num_pairs, 1.0)
    finite = tf.reduce_all(tf.math.is_finite(distances))
    nan = tf.constant(np.nan, tf.float32)
    return tf.where(finite, loss, nan), tf.where(finite, fraction, nan)


def offline_triplet_losses(anchors, positives, negatives, margin=1.0, distance="squared-L2",
                           soft_margin=False):
    """Losses of explicit (anchor, positive, negative) triplets, chosen before training
    (offline), as the tutorials' three-branch models use them.

    loss_i = max(d(a_i, p_i) - d(a_i, n_i) + margin, 0), or softplus(d(a_i, p_i) -
    d(a_i, n_i)) with ``soft_margin`` (Hermans et al. 2017).

    Args:
        anchors, positives, negatives: [N, D] embeddings (computed in float32).
        margin: float (unused with ``soft_margin``).
        distance: "squared-L2" (the tutorials'), "L2" or "angular".
        soft_margin: softplus instead of the hinge.

    Returns:
        [N] float32 losses.
    """
    differences = (distances_lib.paired(anchors, positives, distance)
                   - distances_lib.paired(anchors, negatives, distance))
    if soft_margin:
        return tf.nn.softplus(differences)
    return tf.nn.relu(differences + tf.cast(margin, tf.float32))
