"""The exact O(B^2) batch-all machinery (tftriplet/exact_batch_all.py): its chunking and limits.

Values and gradients of every loss against numpy loops and the B^3 definition are in
test_triplet_loss.py; these tests force the code paths that only large batches reach.
"""

import numpy as np
import pytest
import tensorflow as tf
from test_triplet_loss import random_batch, value_and_gradient

from tftriplet import exact_batch_all
from tftriplet import triplet_loss as tl


@pytest.mark.parametrize("chunks", [1, 3, 8])
@pytest.mark.parametrize("batch", [1, 3, 37])
def test_batch_all_search_chunks_give_the_same_result(monkeypatch, chunks, batch):
    # More chunks than rows leaves some empty.
    labels, embeddings = random_batch(15, batch, 2)
    want = value_and_gradient("batch_all_naive", labels, embeddings)
    monkeypatch.setattr(exact_batch_all, "_SEARCH_CHUNKS", chunks)
    got = value_and_gradient("batch_all", labels, embeddings)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)


def test_batch_all_refuses_batches_whose_indices_overflow_int32(monkeypatch):
    monkeypatch.setattr(exact_batch_all, "MAX_BATCH", 8)
    labels, embeddings = random_batch(16, 9, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 8"):
        tl.batch_all_triplet_loss(labels, embeddings, 0.5)
    tl.batch_all_triplet_loss(labels[:8], embeddings[:8], 0.5)


def test_soft_margin_chunks_give_the_same_result(monkeypatch):
    labels, embeddings = random_batch(14, 20, 3)
    whole = value_and_gradient("batch_all", labels, embeddings, soft_margin=True)
    # A block of 7 elements forces one anchor per chunk.
    monkeypatch.setattr(exact_batch_all, "_SOFT_MARGIN_BLOCK", 7)
    chunked = value_and_gradient("batch_all", labels, embeddings, soft_margin=True)
    naive = value_and_gradient("batch_all_naive", labels, embeddings, soft_margin=True)
    for got in (whole, chunked):
        np.testing.assert_allclose(got[0], naive[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], naive[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("labels", [[0] * 6, list(range(6)), [0, 0, 1, 1, 2, 2]],
                         ids=["one class", "all distinct", "pairs"])
def test_soft_margin_under_xla_matches_eager(labels):
    # A batch without positives or negatives packs a zero-width block, which XLA's
    # dynamic slice in the chunk loop used to crash on (SIGFPE).
    embeddings = tf.constant(np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32))

    def loss_and_gradient(embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss, fraction = tl.batch_all_triplet_loss(labels, embeddings, 0.5, soft_margin=True)
        return loss, fraction, tape.gradient(loss, embeddings)

    eager = loss_and_gradient(embeddings)
    compiled = tf.function(loss_and_gradient, jit_compile=True)(embeddings)
    for want, got in zip(eager, compiled):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)


def test_hinge_under_xla_uses_fixed_widths_and_matches_eager():
    # Under XLA the widths are the batch size, so new labels of the same shape reuse one
    # compiled program (label-dependent widths recompiled at nearly every batch).
    rng = np.random.default_rng(5)
    embeddings = tf.constant(rng.normal(size=(12, 4)).astype(np.float32))

    def loss_and_gradient(labels, embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss, fraction = tl.batch_all_triplet_loss(labels, embeddings, 0.5)
        return loss, fraction, tape.gradient(loss, embeddings)

    compiled = tf.function(loss_and_gradient, jit_compile=True)
    programs = set()
    for labels in (rng.integers(0, 3, 12), rng.integers(0, 6, 12), np.zeros(12, np.int64)):
        labels = tf.constant(labels, tf.int64)
        for want, got in zip(loss_and_gradient(labels, embeddings),
                             compiled(labels, embeddings)):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
        programs.add(compiled.experimental_get_compiler_ir(labels, embeddings)(stage="hlo"))
    assert len(programs) == 1


def test_under_xla_in_every_mode():
    seen = {}

    def record(mode):
        seen[mode] = exact_batch_all.under_xla()
        return tf.constant(0.0)

    record("eager")
    tf.function(lambda: record("tf.function"))()
    tf.function(lambda: record("jit_compile"), jit_compile=True)()
    inner = tf.function(lambda: record("plain function inside jit_compile"))
    tf.function(lambda: inner(), jit_compile=True)()
    with tf.Graph().as_default():
        record("TF1 graph")
    assert seen == {"eager": False, "tf.function": False, "jit_compile": True,
                    "plain function inside jit_compile": True, "TF1 graph": False}
