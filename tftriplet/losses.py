"""Keras 3 triplet losses: TensorFlow Addons' drop-in replacements, and the original's.

Migrating from TensorFlow Addons is one import line::

    # from tensorflow_addons.losses import TripletSemiHardLoss
    from tftriplet.losses import TripletSemiHardLoss
    model.compile(optimizer="adam", loss=TripletSemiHardLoss())

* :class:`TripletSemiHardLoss`, :func:`triplet_semihard_loss`,
  :class:`TripletHardLoss`, :func:`triplet_hard_loss`: TFA's names, arguments,
  defaults and values (its conventions included: batch-hard averages over all B anchors,
  an anchor without a positive counting with its row's smallest distance as hardest
  positive). Two fixes, documented in docs/losses.md: no positive pair gives 0 (TFA: NaN),
  and the soft margin is a softplus that does not overflow (TFA's log1p(exp(x)) is inf
  above x ~ 88).
* :class:`BatchAllTripletLoss`, :class:`BatchHardTripletLoss`: the original project's
  batch-all (average over the positive triplets) and batch-hard (average over the
  anchors that have a positive and a negative).
* :class:`FractionPositiveTriplets`: the batch-all fraction of positive triplets as a
  Keras metric.

``distance_metric`` is "L2" (Euclidean), "squared-L2", "angular" (1 - cosine
similarity of the L2-normalised rows) or a callable ``embeddings -> [B, B] distances``.

The functions are TFA's functions: under a ``tf.distribute`` strategy pass the classes
to ``compile``, which mine the global batch (a function wrapped by Keras mines each
replica's slice and is not scaled for the replicas).

Labels ``y_true``: [B] or [B, 1] integer class ids of any integer dtype (or floats
holding integers). Keras 3's ``Loss.__call__`` casts ``y_true`` to float32, which merges
ids above 2^24; these losses keep the labels as given. Under a ``tf.distribute``
strategy, ``model.fit`` calls a loss once per replica with that replica's slice of the
batch: these losses all-gather the embeddings and labels of every replica first, so
each replica mines the whole global batch, and scale the loss so that the summed
update equals the single-device one.
"""

import keras
import tensorflow as tf

from tftriplet import distances, triplet_loss

PACKAGE = "TripletLoss"


def _distance(distance_metric):
    if not callable(distance_metric) and distance_metric not in distances.METRICS:
        raise ValueError(f"unknown distance_metric {distance_metric!r}; use one of "
                         f"{', '.join(distances.METRICS)} or a callable embeddings -> [B, B] "
                         "distances")
    return distance_metric


def _serialize_distance(distance_metric):
    if callable(distance_metric):
        return keras.saving.serialize_keras_object(distance_metric)
    return distance_metric


def _deserialize_distance(config):
    if isinstance(config, str) and config in distances.METRICS:
        return config
    return keras.saving.deserialize_keras_object(config)


def _in_input_dtype(loss, y_pred):
    """The float32 ``loss`` in the floating dtype of ``y_pred`` (as TensorFlow Addons)."""
    dtype = tf.convert_to_tensor(y_pred).dtype
    return tf.cast(loss, dtype) if dtype.is_floating else loss


@keras.saving.register_keras_serializable(package=PACKAGE)
def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2"):
    """TensorFlow Addons' ``triplet_semihard_loss``: FaceNet semi-hard mining.

    loss = mean over every positive pair (a, p) of max(d(a,p) - d(a,n) + margin, 0), n the
    closest negative farther than d(a, p), else the farthest negative; an anchor without
    a negative takes its row's smallest distance as d(a, n). 0 without positive pairs.

    Args:
        y_true: [B] or [B, 1] integer labels.
        y_pred: [B, D] embeddings (float16 / bfloat16 are computed in float32).
        margin: float.
        distance_metric: "L2", "squared-L2", "angular" or a callable.

    Returns:
        Scalar loss in the dtype of ``y_pred``.
    """
    loss = triplet_loss.batch_semihard_triplet_loss(
        y_true, y_pred, margin, distance=_distance(distance_metric), all_anchors=True)
    return _in_input_dtype(loss, y_pred)


@keras.saving.register_keras_serializable(package=PACKAGE)
def triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2"):
    """TensorFlow Addons' ``triplet_hard_loss``: hardest positive against hardest negative.

    loss = mean over all B anchors of max(max_p d(a,p) - min_n d(a,n) + margin, 0), or
    softplus(max_p d(a,p) - min_n d(a,n)) with ``soft``; an anchor without a positive
    takes its row's smallest distance (0 for L2) as max_p d(a,p), one without a negative
    its row's largest distance as min_n d(a,n).

    Args:
        y_true: [B] or [B, 1] integer labels.
        y_pred: [B, D] embeddings (float16 / bfloat16 are computed in float32).
        margin: float (unused with ``soft``).
        soft: the soft margin of Hermans et al. (2017).
        distance_metric: "L2", "squared-L2", "angular" or a callable.

    Returns:
        Scalar loss in the dtype of ``y_pred``.
    """
    loss, _, _ = triplet_loss.batch_hard_triplet_loss(
        y_true, y_pred, margin, soft_margin=soft, distance=_distance(distance_metric),
        all_anchors=True)
    return _in_input_dtype(loss, y_pred)


def _batch_all_loss(y_true, y_pred, margin, soft, distance_metric):
    loss, _ = triplet_loss.batch_all_triplet_loss(
        y_true, y_pred, margin, soft_margin=soft, distance=_distance(distance_metric))
    return loss


def _batch_hard_loss(y_true, y_pred, margin, soft, distance_metric):
    loss, _, _ = triplet_loss.batch_hard_triplet_loss(
        y_true, y_pred, margin, soft_margin=soft, distance=_distance(distance_metric))
    return loss


def _global_batch(y_true, y_pred):
    """The labels and embeddings of every replica, in replica order (this replica's alone
    outside a strategy), and the number of replicas."""
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    if replicas > 1:
        # The gradient of all_gather sums the upstream gradients of every replica (N
        # copies of dL/d(slice)); the loss is then divided by N so that the optimizer's
        # sum over replicas makes the update of L on one device.
        y_pred = context.all_gather(y_pred, axis=0)
        y_true = context.all_gather(tf.reshape(y_true, [-1]), axis=0)
    return y_true, y_pred, replicas


class _TripletLoss(keras.losses.Loss):
    """A loss of the whole batch (not a mean of per-example losses), with integer labels.

    Subclasses set ``_function(y_true, y_pred, **self._arguments) -> float32 scalar``.
    """

    _function = None

    def __init__(self, name=None, keras_arguments=None, **arguments):
        # TFA's classes took **kwargs for Keras's own arguments (reduction, dtype); these
        # losses are whole-batch scalars, so those are ignored, and anything else is a
        # mistake that would otherwise train silently with a default.
        unknown = sorted(set(keras_arguments or {}) - {"reduction", "dtype"})
        if unknown:
            raise TypeError(f"{type(self).__name__} got an unexpected keyword argument "
                            f"'{unknown[0]}'")
        super().__init__(name=name, reduction="none")
        self._arguments = arguments
        _distance(arguments["distance_metric"])  # fail at construction, not in fit

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} is a loss of the whole batch, not a mean of "
                "per-example losses: sample_weight is not supported; drop it (or the "
                "sample weights / class_weight given to fit)")
        with tf.name_scope(self.name):
            # Keras's Loss.__call__ would cast y_true to float32, merging ids above 2^24.
            y_pred = tf.cast(y_pred, tf.float32)
            y_true, y_pred, replicas = _global_batch(tf.convert_to_tensor(y_true), y_pred)
            loss = type(self)._function(y_true, y_pred, **self._arguments)
            return loss / replicas if replicas > 1 else loss

    def call(self, y_true, y_pred):
        return type(self)._function(y_true, y_pred, **self._arguments)

    def get_config(self):
        config = {"name": self.name, **self._arguments}
        config["distance_metric"] = _serialize_distance(config["distance_metric"])
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["distance_metric"] = _deserialize_distance(config.get("distance_metric", "L2"))
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletSemiHardLoss(_TripletLoss):
    """TensorFlow Addons' ``TripletSemiHardLoss`` (see :func:`triplet_semihard_loss`)."""

    _function = staticmethod(triplet_semihard_loss)

    def __init__(self, margin=1.0, distance_metric="L2", name=None, **kwargs):
        super().__init__(name=name or "triplet_semihard_loss", keras_arguments=kwargs,
                         margin=margin, distance_metric=distance_metric)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletHardLoss(_TripletLoss):
    """TensorFlow Addons' ``TripletHardLoss`` (see :func:`triplet_hard_loss`)."""

    _function = staticmethod(triplet_hard_loss)

    def __init__(self, margin=1.0, soft=False, distance_metric="L2", name=None, **kwargs):
        super().__init__(name=name or "triplet_hard_loss", keras_arguments=kwargs,
                         margin=margin, soft=soft, distance_metric=distance_metric)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchAllTripletLoss(_TripletLoss):
    """The original project's batch-all loss: every valid triplet, averaged over the
    positive ones (see :func:`tftriplet.triplet_loss.batch_all_triplet_loss`)."""

    _function = staticmethod(_batch_all_loss)

    def __init__(self, margin=0.5, distance_metric="L2", soft=False, name=None, **kwargs):
        super().__init__(name=name or "batch_all_triplet_loss", keras_arguments=kwargs,
                         margin=margin, soft=soft, distance_metric=distance_metric)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchHardTripletLoss(_TripletLoss):
    """The original project's batch-hard loss over the anchors that have a positive and a
    negative (see :func:`tftriplet.triplet_loss.batch_hard_triplet_loss`)."""

    _function = staticmethod(_batch_hard_loss)

    def __init__(self, margin=0.5, distance_metric="L2", soft=False, name=None, **kwargs):
        super().__init__(name=name or "batch_hard_triplet_loss", keras_arguments=kwargs,
                         margin=margin, soft=soft, distance_metric=distance_metric)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FractionPositiveTriplets(keras.metrics.Mean):
    """Mean over batches of batch-all's fraction of positive triplets (loss > 1e-16 among
    the valid ones): near 1 early in training, falling as the embeddings separate."""

    def __init__(self, margin=0.5, distance_metric="L2", name="fraction_positive_triplets",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin
        self.distance_metric = distance_metric
        _distance(distance_metric)

    def update_state(self, y_true, y_pred, sample_weight=None):
        # The fraction of the global batch, as the losses mine it under a strategy.
        y_true, y_pred, _ = _global_batch(tf.convert_to_tensor(y_true),
                                          tf.cast(y_pred, tf.float32))
        _, fraction = triplet_loss.batch_all_triplet_loss(
            y_true, y_pred, self.margin, distance=_distance(self.distance_metric))
        return super().update_state(fraction)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin,
                "distance_metric": _serialize_distance(self.distance_metric)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["distance_metric"] = _deserialize_distance(config.get("distance_metric", "L2"))
        return cls(**config)
