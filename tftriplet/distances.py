"""Pairwise distance matrices of a batch of embeddings, one function per distance.

Every loss in :mod:`tftriplet.triplet_loss` gets its [B, B] distances from
:func:`distance_matrix`, so a new distance is one function here (added to
:data:`METRICS`), or a callable passed as a loss's ``distance``.
"""

import tensorflow as tf

from tftriplet import inputs


def _euclidean(embeddings, squared):
    """[B, B] (squared) Euclidean distances from one matrix product, with a hand-written
    gradient that is finite everywhere (see :func:`euclidean`)."""

    # One [B, B] pass and two matrix products, where differentiating the forward ops
    # would take a dozen [B, B] passes.
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


def euclidean(embeddings):
    """Euclidean distances ||e_i - e_j|| as sqrt(|e_i|^2 - 2 e_i.e_j + |e_j|^2).

    The diagonal and the distance between identical embeddings are exactly 0, and the
    gradient there is 0 (sqrt'(0) is infinite; 0 is a subgradient of the distance).

    Args:
        embeddings: [B, D] float32.

    Returns:
        [B, B] float32.
    """
    return _euclidean(embeddings, squared=False)


def squared_euclidean(embeddings):
    """Squared Euclidean distances |e_i|^2 - 2 e_i.e_j + |e_j|^2, clamped at 0.

    Args:
        embeddings: [B, D] float32.

    Returns:
        [B, B] float32, exactly 0 between identical embeddings.
    """
    return _euclidean(embeddings, squared=True)


def angular(embeddings):
    """Angular (cosine) distance 1 - cos(e_i, e_j) of the L2-normalised rows, clipped at 0.

    As TensorFlow Addons' ``angular_distance``: between 0 (same direction) and 2
    (opposite); a zero row is normalised to zero (its distance to anything is 1).

    Args:
        embeddings: [B, D] float32.

    Returns:
        [B, B] float32.
    """
    unit = tf.math.l2_normalize(embeddings, axis=1)
    return tf.maximum(1.0 - tf.matmul(unit, unit, transpose_b=True), 0.0)


def paired(first, second, metric):
    """[N] float32 distances between the rows of ``first`` and ``second`` ([N, D] each), row
    by row: the distances of explicit pairs (e.g. offline triplets), as :data:`METRICS`
    defines them, with a gradient that is 0 (not infinite) where an L2 distance is 0.

    Raises:
        ValueError: a metric not in :data:`METRICS` (callables give [B, B] matrices).
    """
    first, second = inputs.check_embeddings(first), inputs.check_embeddings(second)
    if metric == "angular":
        cosine = tf.reduce_sum(tf.math.l2_normalize(first, axis=1)
                               * tf.math.l2_normalize(second, axis=1), axis=1)
        return tf.maximum(1.0 - cosine, 0.0)
    if metric not in METRICS:
        raise ValueError(f"unknown distance {metric!r} for explicit pairs; use one of "
                         f"{', '.join(METRICS)}")
    squared_distances = tf.reduce_sum(tf.square(first - second), axis=1)
    if metric == "squared-L2":
        return squared_distances
    # sqrt'(0) is infinite: both branches are finite where the distance is 0.
    is_zero = squared_distances <= 0.0
    return tf.where(is_zero, 0.0, tf.sqrt(tf.where(is_zero, 1.0, squared_distances)))


# The names are TensorFlow Addons' (``distance_metric``), also used by params.json.
METRICS = {"L2": euclidean, "squared-L2": squared_euclidean, "angular": angular}


def distance_matrix(embeddings, distance):
    """The [B, B] float32 distances between the rows of ``embeddings``.

    Args:
        embeddings: [B, D] floating tensor.
        distance: a name in :data:`METRICS`, or a callable mapping float32 [B, D]
            embeddings to [B, B] distances.

    Raises:
        ValueError: an unknown name, or a callable whose result is not [B, B].
    """
    embeddings = inputs.check_embeddings(embeddings)
    if callable(distance):
        function = distance
    elif distance in METRICS:
        function = METRICS[distance]
    else:
        raise ValueError(f"unknown distance {distance!r}; use one of {', '.join(METRICS)} "
                         "or a callable embeddings -> [B, B] distances")
    distances = tf.cast(function(embeddings), tf.float32)
    if distances.shape.rank is not None and distances.shape.rank != 2:
        raise ValueError(f"the distance function returned shape {distances.shape}; it must "
                         "return a [batch_size, batch_size] matrix")
    return distances
