"""Distance matrices (tftriplet/distances.py) and their use by every loss through one entry point."""

import numpy as np
import pytest
import tensorflow as tf

from tftriplet import distances
from tftriplet import triplet_loss as tl


def np_euclidean(embeddings, squared):
    diffs = embeddings[:, None, :].astype(np.float64) - embeddings[None, :, :]
    squares = (diffs ** 2).sum(axis=2)
    return squares if squared else np.sqrt(squares)


@pytest.mark.parametrize("name, squared", [("L2", False), ("squared-L2", True)])
def test_named_metrics_match_numpy(name, squared):
    embeddings = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    got = distances.distance_matrix(embeddings, name).numpy()
    np.testing.assert_allclose(got, np_euclidean(embeddings, squared), rtol=1e-5, atol=1e-5)
    assert got.dtype == np.float32 and np.all(np.diag(got) == 0)


def test_angular_is_one_minus_cosine_clipped_at_zero():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(6, 3)).astype(np.float32)
    embeddings[1] = -2 * embeddings[0]  # opposite: distance 2
    embeddings[2] = 0.0  # a zero row is normalised to zero: distance 1 to every other row
    norms = np.maximum(np.linalg.norm(embeddings.astype(np.float64), axis=1), 1e-6)[:, None]
    unit = embeddings / norms
    want = np.maximum(1 - unit @ unit.T, 0)
    got = distances.distance_matrix(embeddings, "angular").numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0, 1] == pytest.approx(2.0) and got[2, 3] == pytest.approx(1.0)


def test_distance_matrix_refuses_unknown_names_and_bad_callables():
    embeddings = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="unknown distance 'cosine'; use one of L2, squared-L2, angular"):
        distances.distance_matrix(embeddings, "cosine")
    with pytest.raises(ValueError, match="returned shape \\(3,\\)"):
        distances.distance_matrix(embeddings, lambda e: tf.reduce_sum(e, axis=1))
    with pytest.raises(ValueError, match="floating point"):
        distances.distance_matrix(np.ones((3, 2), np.int32), "L2")


def manhattan(embeddings):
    return tf.reduce_sum(tf.abs(embeddings[:, None, :] - embeddings[None, :, :]), axis=2)


@pytest.mark.parametrize("strategy", sorted(tl.STRATEGIES))
def test_a_callable_distance_reaches_every_loss(strategy):
    """A new distance is one function: the loss on it equals the loss on its matrix."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=12)
    embeddings = tf.constant(rng.normal(size=(12, 5)).astype(np.float32))
    loss_fn = tl.STRATEGIES[strategy]
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        custom, _ = loss_fn(labels, embeddings, 0.5, distance=manhattan)
    gradient = tape.gradient(custom, embeddings)
    # The same loss with the named Euclidean distance differs: the callable was used.
    euclidean, _ = loss_fn(labels, embeddings, 0.5)
    assert not np.isclose(float(custom), float(euclidean))
    # Through the named metric whose function is the callable, the result is identical.
    distances.METRICS["manhattan"] = manhattan
    try:
        named, _ = loss_fn(labels, embeddings, 0.5, distance="manhattan")
    finally:
        del distances.METRICS["manhattan"]
    assert float(named) == float(custom)
    assert np.all(np.isfinite(gradient.numpy()))
