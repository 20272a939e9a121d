"""Checks of what the losses are given: labels, embeddings, and matching batch sizes.

What is known while the graph is built is checked then and raises ``ValueError``. What is
only known when it runs (a shape or value inside a ``tf.function`` or a TF1 graph) is
checked by a ``tf.debugging`` assertion (``InvalidArgumentError``), and the checked
tensor waits for it: in TF1 graph mode an assertion that nothing depends on never runs.
"""

import numpy as np
import tensorflow as tf


def check_labels(labels):
    """[B] int64 labels from [B] or [B, 1] integer (or integer-valued float) labels.

    Labels it has returned come back unchanged, without new ops, so every function that
    takes labels can check them.
    """
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
            # Without the wait a one-hot batch could fail later with an obscure shape
            # error instead of this message.
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
        check = tf.debugging.assert_equal(labels, tf.round(labels), message=message)
        with tf.control_dependencies([check] if check is not None else []):
            return tf.identity(labels)
    if not np.all(np.isfinite(value) & (value == np.round(value))):
        raise ValueError(f"{message} (got {value.ravel()[:5].tolist()}...)")
    return labels


def check_embeddings(embeddings):
    """float32 [B, D] from a floating [B, D] tensor (half precision is computed in float32)."""
    embeddings = tf.convert_to_tensor(embeddings)
    if not embeddings.dtype.is_floating:
        raise ValueError(
            f"embeddings must be floating point, got {embeddings.dtype.name}; "
            "cast them to float32")
    if embeddings.shape.rank is not None and embeddings.shape.rank != 2:
        raise ValueError(
            f"embeddings must have shape [batch_size, embedding_size], got {embeddings.shape}")
    return tf.cast(embeddings, tf.float32)


def check_batch_sizes(labels, distances):
    """``distances`` [B, B], once checked against the [B] checked ``labels``."""
    batch_labels, batch_embeddings = labels.shape[0], distances.shape[0]
    if batch_labels is not None and batch_embeddings is not None:
        if batch_labels != batch_embeddings:
            raise ValueError(
                f"labels hold {batch_labels} entries but embeddings {batch_embeddings} rows; "
                "pass one label per embedding")
        return distances
    check = tf.debugging.assert_equal(
        tf.shape(labels)[0], tf.shape(distances)[0],
        message="labels and embeddings must have the same batch size")
    with tf.control_dependencies([check] if check is not None else []):
        return tf.identity(distances)
