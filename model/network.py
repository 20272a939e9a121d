"""The network, the optimizer and the steps of a run (the TF1 original's ``model_fn.py``).

It holds what the TF1 project's ``model_fn`` built as one graph, now as separate
pieces: the original CNN (two conv blocks by default, then one dense layer to
``embedding_size``) as a Keras 3 model, Adam, the loss of ``params.triplet_strategy``
with its TensorBoard summaries, and the ``tf.function`` steps built once per run
(train, embed, evaluation loss). Under a ``tf.distribute`` strategy the embeddings and
labels of every replica are gathered before mining, so the loss of a distributed step
is the loss of the whole global batch (see :func:`make_train_step`).
"""

import functools

import keras
import tensorflow as tf

from tftriplet import triplet_loss


def precision_policy(params):
    """The Keras dtype policy of the hidden layers: mixed_float16 on a GPU, mixed_bfloat16
    on a CPU when ``params.mixed_precision``, else float32.

    Passed to every layer explicitly: Keras's global policy is never set, so building
    a network here changes nothing for the caller's own models.
    """
    if not params.mixed_precision:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def build_model(params, dtype_policy=None):
    """The original CNN: ``num_conv_blocks`` (2) x [3x3 conv, optional batch norm, ReLU,
    2x2 max-pool], then one dense layer. Block i has ``num_channels * 2**i`` filters.

    Input: float images [batch, image_size, image_size, image_channels] in [0, 1].
    Output: float32 embeddings [batch, embedding_size], L2-normalised if
    ``params.l2_normalize``. The hidden layers compute in ``dtype_policy`` (default:
    :func:`precision_policy`); the embedding layer always computes in float32.
    """
    dtype_policy = dtype_policy or precision_policy(params)
    # A synchronised batch norm keeps the statistics of the global batch under a
    # strategy, so a distributed step normalises exactly like the single-device one.
    synchronized = params.distribution != "none"
    inputs = keras.Input(input_shape(params), name="images")
    out = inputs
    widths = [params.num_channels * 2 ** block for block in range(params.num_conv_blocks)]
    for block, channels in enumerate(widths, 1):
        out = keras.layers.Conv2D(channels, 3, padding="same", dtype=dtype_policy,
                                  name=f"block_{block}_conv")(out)
        if params.use_batch_norm:
            out = keras.layers.BatchNormalization(
                momentum=params.bn_momentum, synchronized=synchronized, dtype=dtype_policy,
                name=f"block_{block}_bn")(out)
        out = keras.layers.ReLU(dtype=dtype_policy, name=f"block_{block}_relu")(out)
        out = keras.layers.MaxPooling2D(2, dtype=dtype_policy, name=f"block_{block}_pool")(out)
    out = keras.layers.Flatten(dtype=dtype_policy, name="flatten")(out)
    # float32 output: distances and the loss must not be computed in half precision.
    out = keras.layers.Dense(params.embedding_size, dtype="float32", name="embedding")(out)
    if params.l2_normalize:
        out = keras.layers.UnitNormalization(dtype="float32", name="l2_normalize")(out)
    return keras.Model(inputs, out, name="triplet_embedding_net")


def build_plain_model(params):
    """The network on one device in float32, whatever strategy and precision trained it."""
    return build_model(params.replace(distribution="none"), dtype_policy="float32")


def compute_loss(params, labels, embeddings):
    """The loss of ``params.triplet_strategy`` and its scalar summaries for TensorBoard.

    Args:
        params: a :class:`model.params.Params`.
        labels: int [B] labels of the batch.
        embeddings: float [B, D] embeddings of the batch.

    Returns:
        (loss, summaries): a float32 scalar, and a dict of float32 scalars named as in
        docs/runs.md (``fraction_positive_triplets``, ``hardest_positive_dist``, ...) plus
        ``embedding_mean_norm``.
    """
    loss_with_summaries = triplet_loss.STRATEGIES[params.triplet_strategy]
    loss, summaries = loss_with_summaries(labels, embeddings, params.margin,
                                          soft_margin=params.soft_margin,
                                          distance=params.distance_metric)
    norms = tf.norm(tf.cast(embeddings, tf.float32), axis=1)
    return loss, {**summaries, "embedding_mean_norm": tf.reduce_mean(norms)}


def input_shape(params):
    """The shape of one input image: (image_size, image_size, image_channels)."""
    return (params.image_size, params.image_size, params.image_channels)


def _image_spec(params):
    return (tf.TensorSpec([None, *input_shape(params)], tf.float32),
            tf.TensorSpec([None], tf.int64))


def make_optimizer(params, steps_per_epoch=None):
    """Adam (default betas); with float16 compute (:func:`precision_policy`), wrapped in
    dynamic loss scaling.

    With ``learning_rate_schedule`` "cosine" the rate follows a cosine from
    ``learning_rate`` to 0 over ``num_epochs * steps_per_epoch`` steps (the optimizer's own
    step count, saved in the checkpoint, so a resumed run continues the same curve).
    """
    learning_rate = params.learning_rate
    if params.learning_rate_schedule == "cosine":
        if not steps_per_epoch:
            raise ValueError("a cosine learning rate schedule needs steps_per_epoch")
        learning_rate = keras.optimizers.schedules.CosineDecay(
            params.learning_rate, decay_steps=params.num_epochs * steps_per_epoch)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if precision_policy(params) == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _replica_slice(images, labels, context):
    """This replica's contiguous share of the global batch (sizes differ by at most one)."""
    replicas = context.num_replicas_in_sync
    replica = context.replica_id_in_sync_group
    size = tf.shape(labels)[0]
    start, stop = (replica * size) // replicas, ((replica + 1) * size) // replicas
    return images[start:stop], labels[start:stop]


def make_train_step(model, optimizer, params, strategy=None, loss_fn=None):
    """A ``tf.function(images, labels) -> (loss, summaries)`` that takes one optimizer step.

    ``images`` and ``labels`` are the whole global batch, on every worker. With a
    strategy of N replicas each replica embeds its own contiguous slice; the slices are
    all-gathered back into the global batch, in order, so every replica mines the same
    triplets and computes the same loss L as a single device would. The gradient of
    ``all_gather`` sums the upstream gradients of all replicas (N identical copies of
    dL/d(slice)) and the optimizer sums the replicas' gradients again, so each replica
    differentiates L / N: the update is exactly that of L on one device.

    ``loss_fn(labels, embeddings) -> (loss, summaries)`` replaces :func:`compute_loss`
    (e.g. to time another loss on the same step).
    """
    strategy = strategy or tf.distribute.get_strategy()
    loss_fn = loss_fn or functools.partial(compute_loss, params)
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    # Slot variables created lazily inside the first traced step would be created in a
    # replica context, which tf.distribute does not allow: create them now.
    with strategy.scope():
        optimizer.build(model.trainable_variables)

    def replica_step(images, labels):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        if replicas > 1:
            images, labels = _replica_slice(images, labels, context)
        with tf.GradientTape() as tape:
            embeddings = model(images, training=True)
            if replicas > 1:
                embeddings = context.all_gather(embeddings, axis=0)
                labels = context.all_gather(labels, axis=0)
            loss, summaries = loss_fn(labels, embeddings)
            objective = loss / replicas
            if scales_loss:
                objective = optimizer.scale_loss(objective)
        grads = tape.gradient(objective, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, summaries

    @tf.function(input_signature=_image_spec(params))
    def train_step(images, labels):
        loss, summaries = strategy.run(replica_step, args=(images, labels))
        # Every replica holds the same global summaries: report the first copy.
        return tf.nest.map_structure(
            lambda value: strategy.experimental_local_results(value)[0], (loss, summaries))

    return train_step


def make_embed_step(model, params):
    """A ``tf.function(images) -> embeddings`` in inference mode."""

    @tf.function(input_signature=_image_spec(params)[:1])
    def embed_step(images):
        return model(images, training=False)

    return embed_step


def make_loss_step(params):
    """A ``tf.function(labels, embeddings) -> (loss, summaries)`` of one evaluation batch."""

    @tf.function(input_signature=(tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None, params.embedding_size], tf.float32)))
    def loss_step(labels, embeddings):
        return compute_loss(params, labels, embeddings)

    return loss_step
