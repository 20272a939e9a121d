"""Keras 3 metric-learning losses: TensorFlow Addons' drop-in replacements, and the original's.

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
* :class:`ContrastiveLoss`, :func:`contrastive_loss`, :class:`NpairsLoss`,
  :func:`npairs_loss`, :class:`NpairsMultilabelLoss`, :func:`npairs_multilabel_loss`,
  :class:`LiftedStructLoss`, :func:`lifted_struct_loss`: TFA's other metric-learning
  losses, with its names, arguments, defaults, input conventions and values, safe where
  TFA's were not (see :mod:`tftriplet.pair_losses`).
* :class:`TripletLoss`: the triplet loss of explicit (offline) triplets, stacked [B, 3, D].

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

from tftriplet import distances, pair_losses, triplet_loss

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


def _num_replicas():
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def _global_batch(y_true, y_pred):
    """The labels and embeddings of every replica, in replica order (this replica's alone
    outside a strategy), and the number of replicas."""
    replicas = _num_replicas()
    if replicas > 1:
        context = tf.distribute.get_replica_context()
        # The gradient of all_gather sums the upstream gradients of every replica (N
        # copies of dL/d(slice)); the loss is then divided by N so that the optimizer's
        # sum over replicas makes the update of L on one device.
        y_pred = context.all_gather(y_pred, axis=0)
        y_true = context.all_gather(tf.reshape(y_true, [-1]), axis=0)
    return y_true, y_pred, replicas


class _WholeBatchLoss(keras.losses.Loss):
    """A loss of the whole batch (not a mean of per-example losses), with integer labels.

    Subclasses set ``_function(y_true, y_pred, **self._arguments) -> float32 scalar``, and
    ``_global`` False when ``y_pred`` is not one row per example (a similarity matrix):
    each replica then computes its own loss instead of mining the global batch.
    """

    _function = None
    _global = True

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
        if "distance_metric" in arguments:
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
            if not isinstance(y_true, tf.SparseTensor):
                y_true = tf.convert_to_tensor(y_true)
            if type(self)._global:
                y_true, y_pred, replicas = _global_batch(y_true, y_pred)
            else:
                replicas = _num_replicas()
            loss = type(self)._function(y_true, y_pred, **self._arguments)
            # Each replica's update is then 1 / replicas of its own: their sum is the mean.
            return loss / replicas if replicas > 1 else loss

    def call(self, y_true, y_pred):
        return type(self)._function(y_true, y_pred, **self._arguments)

    def get_config(self):
        config = {"name": self.name, **self._arguments}
        if "distance_metric" in config:
            config["distance_metric"] = _serialize_distance(config["distance_metric"])
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "distance_metric" in config:
            config["distance_metric"] = _deserialize_distance(config["distance_metric"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletSemiHardLoss(_WholeBatchLoss):
    """TensorFlow Addons' ``TripletSemiHardLoss`` (see :func:`triplet_semihard_loss`)."""

    _function = staticmethod(triplet_semihard_loss)

    def __init__(self, margin=1.0, distance_metric="L2", name=None, **kwargs):
        super().__init__(name=name or "triplet_semihard_loss", keras_arguments=kwargs,
                         margin=margin, distance_metric=distance_metric)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletHardLoss(_WholeBatchLoss):
    """TensorFlow Addons' ``TripletHardLoss`` (see :func:`triplet_hard_loss`)."""

    _function = staticmethod(triplet_hard_loss)

    def __init__(self, margin=1.0, soft=False, distance_metric="L2", name=None, **kwargs):
        super().__init__(name=name or "triplet_hard_loss", keras_arguments=kwargs,
                         margin=margin, soft=soft, distance_metric=distance_metric)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchAllTripletLoss(_WholeBatchLoss):
    """The original project's batch-all loss: every valid triplet, averaged over the
    positive ones (see :func:`tftriplet.triplet_loss.batch_all_triplet_loss`)."""

    _function = staticmethod(_batch_all_loss)

    def __init__(self, margin=0.5, distance_metric="L2", soft=False, name=None, **kwargs):
        super().__init__(name=name or "batch_all_triplet_loss", keras_arguments=kwargs,
                         margin=margin, soft=soft, distance_metric=distance_metric)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchHardTripletLoss(_WholeBatchLoss):
    """The original project's batch-hard loss over the anchors that have a positive and a
    negative (see :func:`tftriplet.triplet_loss.batch_hard_triplet_loss`)."""

    _function = staticmethod(_batch_hard_loss)

    def __init__(self, margin=0.5, distance_metric="L2", soft=False, name=None, **kwargs):
        super().__init__(name=name or "batch_hard_triplet_loss", keras_arguments=kwargs,
                         margin=margin, soft=soft, distance_metric=distance_metric)


# --- TensorFlow Addons' other metric-learning losses (tftriplet/pair_losses.py) ----------


@keras.saving.register_keras_serializable(package=PACKAGE)
def contrastive_loss(y_true, y_pred, margin=1.0):
    """TensorFlow Addons' ``contrastive_loss``: per pair, y d^2 + (1 - y) max(margin - d, 0)^2.

    Args:
        y_true: [B] 1 for a same-class pair, 0 for a different one.
        y_pred: [B] distances of the pairs (not squared).
        margin: float.

    Returns:
        [B] losses in the dtype of ``y_pred`` (computed in float32).
    """
    return _in_input_dtype(pair_losses.contrastive(y_true, y_pred, margin), y_pred)


@keras.saving.register_keras_serializable(package=PACKAGE)
def npairs_loss(y_true, y_pred):
    """TensorFlow Addons' ``npairs_loss``: softmax cross-entropy of each row of the
    similarity matrix against its class.

    Args:
        y_true: [B] or [B, 1] integer labels.
        y_pred: [B, B] similarities (logits), e.g. anchors . positives^T.

    Returns:
        Scalar loss in the dtype of ``y_pred``.
    """
    return _in_input_dtype(pair_losses.npairs(y_true, y_pred), y_pred)


@keras.saving.register_keras_serializable(package=PACKAGE)
def npairs_multilabel_loss(y_true, y_pred):
    """TensorFlow Addons' ``npairs_multilabel_loss``: :func:`npairs_loss` with label sets.

    Args:
        y_true: [B, C] 0 / 1 label indicators, dense or a ``tf.SparseTensor``.
        y_pred: [B, B] similarities (logits).

    Returns:
        Scalar loss in the dtype of ``y_pred``.
    """
    return _in_input_dtype(pair_losses.npairs_multilabel(y_true, y_pred), y_pred)


@keras.saving.register_keras_serializable(package=PACKAGE)
def lifted_struct_loss(labels, embeddings, margin=1.0):
    """TensorFlow Addons' ``lifted_struct_loss`` (see
    :func:`tftriplet.pair_losses.lifted_struct`).

    Args:
        labels: [B] or [B, 1] integer labels.
        embeddings: [B, D] embeddings (float16 / bfloat16 are computed in float32).
        margin: float.

    Returns:
        Scalar loss in the dtype of ``embeddings``.
    """
    return _in_input_dtype(pair_losses.lifted_struct(labels, embeddings, margin), embeddings)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ContrastiveLoss(keras.losses.Loss):
    """TensorFlow Addons' ``ContrastiveLoss``: :func:`contrastive_loss` per pair, reduced as
    Keras reduces (default: the mean over the pairs; with ``sample_weight``, the weighted
    sum divided by the number of pairs, as TFA)."""

    def __init__(self, margin=1.0, reduction="sum_over_batch_size", name="contrastive_loss",
                 **kwargs):
        # "auto" was Keras 2's default (TFA's saved configs may hold it): the mean.
        reduction = "sum_over_batch_size" if reduction == "auto" else reduction
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        # One label per distance: TFA broadcast [B, 1] labels against [B] distances to a
        # [B, B] loss.
        return pair_losses.contrastive(tf.reshape(y_true, tf.shape(y_pred)), y_pred,
                                       self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package=PACKAGE)
class NpairsLoss(_WholeBatchLoss):
    """TensorFlow Addons' ``NpairsLoss`` (see :func:`npairs_loss`). Under a
    ``tf.distribute`` strategy each replica's similarity matrix is its own batch."""

    _function = staticmethod(npairs_loss)
    _global = False

    def __init__(self, name="npairs_loss", **kwargs):
        super().__init__(name=name, keras_arguments=kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NpairsMultilabelLoss(_WholeBatchLoss):
    """TensorFlow Addons' ``NpairsMultilabelLoss`` (see :func:`npairs_multilabel_loss`)."""

    _function = staticmethod(npairs_multilabel_loss)
    _global = False

    def __init__(self, name="npairs_multilabel_loss", **kwargs):
        super().__init__(name=name, keras_arguments=kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LiftedStructLoss(_WholeBatchLoss):
    """TensorFlow Addons' ``LiftedStructLoss`` (see :func:`lifted_struct_loss`); under a
    ``tf.distribute`` strategy it mines the global batch, as the triplet losses."""

    _function = staticmethod(lifted_struct_loss)

    def __init__(self, margin=1.0, name=None, **kwargs):
        super().__init__(name=name or "lifted_struct_loss", keras_arguments=kwargs,
                         margin=margin)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletLoss(keras.losses.Loss):
    """The triplet loss of explicit, offline triplets: ``y_pred`` stacks each triplet's
    anchor, positive and negative embeddings as [B, 3, D] (a three-branch model's output);
    ``y_true`` is not used. Mean over the triplets of max(d(a, p) - d(a, n) + margin, 0),
    or softplus(d(a, p) - d(a, n)) with ``soft`` (see
    :func:`tftriplet.pair_losses.offline_triplet_losses`).

    Args:
        margin: float (unused with ``soft``).
        distance_metric: "squared-L2" (default, as the tutorials), "L2" or "angular".
        soft: the soft margin of Hermans et al. (2017).
    """

    def __init__(self, margin=1.0, distance_metric="squared-L2", soft=False,
                 reduction="sum_over_batch_size", name="triplet_loss", **kwargs):
        if callable(distance_metric) or distance_metric not in distances.METRICS:
            raise ValueError(f"unknown distance_metric {distance_metric!r} for explicit "
                             f"triplets; use one of {', '.join(distances.METRICS)}")
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.margin, self.distance_metric, self.soft = margin, distance_metric, soft

    def call(self, y_true, y_pred):
        if y_pred.shape.rank is not None and (y_pred.shape.rank != 3 or y_pred.shape[1] != 3):
            raise ValueError(f"TripletLoss takes y_pred of shape [batch, 3, embedding_size] "
                             f"(anchor, positive, negative), got {y_pred.shape}; stack the "
                             "three branches' embeddings on axis 1")
        return pair_losses.offline_triplet_losses(y_pred[:, 0], y_pred[:, 1], y_pred[:, 2],
                                                  self.margin, self.distance_metric, self.soft)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin,
                "distance_metric": self.distance_metric, "soft": self.soft}


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
