"""The losses in blocks of anchors (tftriplet/blocked.py) equal the [B, B] losses.

Blocks only switch on by themselves above B = 4,096; these tests force small blocks on
small batches (``block_size``), or lower the threshold, so that every block boundary, the
padded last block and the automatic choice run in seconds. Values and gradients are
compared with the unblocked losses (``block_size=0``) and with the numpy loops of
test_triplet_loss.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_losses import CLASS_IDS, CLASSES, tiny_data, tiny_model
from test_triplet_loss import (DEGENERATE, np_batch_all, np_batch_hard, np_semihard,
                               random_batch)

from tftriplet import blocked
from tftriplet import triplet_loss as tl

# Each returns every output of the loss (the first one is differentiated).
LOSSES = {
    "batch_all": lambda l, e, m, **k: tl.batch_all_triplet_loss(l, e, m, **k),
    "batch_all_soft": lambda l, e, m, **k: tl.batch_all_triplet_loss(l, e, m, soft_margin=True,
                                                                     **k),
    "batch_hard": lambda l, e, m, **k: tl.batch_hard_triplet_loss(l, e, m, **k),
    "batch_hard_soft": lambda l, e, m, **k: tl.batch_hard_triplet_loss(l, e, m, soft_margin=True,
                                                                       **k),
    "batch_hard_all_anchors": lambda l, e, m, **k: tl.batch_hard_triplet_loss(
        l, e, m, all_anchors=True, **k),
    "batch_semihard": lambda l, e, m, **k: (tl.batch_semihard_triplet_loss(l, e, m, **k),),
    "batch_semihard_all_anchors": lambda l, e, m, **k: (tl.batch_semihard_triplet_loss(
        l, e, m, all_anchors=True, **k),),
}
DISTANCES = {"L2": {}, "squared-L2": {"squared": True}, "angular": {"distance": "angular"}}


def outputs_and_gradient(name, labels, embeddings, margin=0.5, metric="L2", **kwargs):
    embeddings = tf.constant(embeddings)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        outputs = LOSSES[name](labels, embeddings, margin, **DISTANCES[metric], **kwargs)
    return [o.numpy() for o in outputs], tape.gradient(outputs[0], embeddings).numpy()


def assert_same(got, want, rtol=1e-5):
    (got_outputs, got_grad), (want_outputs, want_grad) = got, want
    for g, w in zip(got_outputs, want_outputs):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-6)
    # A gradient sums terms of both signs (d/de_i of d(i, j) is +-(e_i - e_j) / d(i, j)):
    # round-off is relative to its largest entries, not to each entry.
    scale = max(np.abs(want_grad).max(), 1e-3)
    np.testing.assert_allclose(got_grad, want_grad, rtol=10 * rtol, atol=1e-4 * scale)


def tied_batch(seed=21, batch=29, classes=4, dim=5):
    """A random batch with exact ties: duplicated points inside and across classes."""
    labels, embeddings = random_batch(seed, batch, classes, dim)
    embeddings[3] = embeddings[7]
    labels[3] = labels[7]
    embeddings[10] = embeddings[11]  # maybe another class: distance 0 to a negative
    embeddings[20:23] = embeddings[20]
    return labels, embeddings


# ---------------------------------------------------------------- equal to the [B, B] losses


@pytest.mark.parametrize("block_size", [1, 4, 29, 64])
@pytest.mark.parametrize("metric", sorted(DISTANCES))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_blocks_give_the_unblocked_values_and_gradients(name, metric, block_size):
    # 4 leaves a padded last block (29 = 7 x 4 + 1); 64 is one block, mostly padding.
    labels, embeddings = tied_batch()
    want = outputs_and_gradient(name, labels, embeddings, metric=metric, block_size=0)
    assert np.abs(want[1]).max() > 0.01  # not trivially flat
    got = outputs_and_gradient(name, labels, embeddings, metric=metric, block_size=block_size)
    assert_same(got, want)


@pytest.mark.parametrize("margin", [0.0, 1.0, 2.0])
def test_blocks_handle_exact_ties_like_the_definition(margin):
    # Integer points: squared distances are small integers, so d(a,n) == d(a,p) + margin often.
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 3, 40)
    embeddings = rng.integers(-1, 2, size=(40, 3)).astype(np.float32)
    want = tl.batch_all_triplet_loss_naive(labels, embeddings, margin, squared=True)
    got = tl.batch_all_triplet_loss(labels, embeddings, margin, squared=True, block_size=6)
    assert got[1] == want[1]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for name in ("batch_all", "batch_hard", "batch_semihard"):
        assert_same(outputs_and_gradient(name, labels, embeddings, margin, "squared-L2",
                                         block_size=6),
                    outputs_and_gradient(name, labels, embeddings, margin, "squared-L2",
                                         block_size=0), rtol=1e-6)


@pytest.mark.parametrize("squared", [False, True])
def test_blocks_match_the_numpy_loops(squared):
    labels, embeddings = random_batch(22, 23, 3, dim=4)
    metric = "squared-L2" if squared else "L2"
    outputs = {name: outputs_and_gradient(name, labels, embeddings, 0.3, metric, block_size=5)[0]
               for name in ("batch_all", "batch_all_soft", "batch_hard", "batch_semihard")}
    np.testing.assert_allclose(outputs["batch_all"], np_batch_all(labels, embeddings, 0.3, squared),
                               rtol=1e-5)
    np.testing.assert_allclose(outputs["batch_all_soft"],
                               np_batch_all(labels, embeddings, 0.3, squared, soft_margin=True),
                               rtol=1e-5)
    for got, want in zip(outputs["batch_hard"], np_batch_hard(labels, embeddings, 0.3, squared)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["batch_semihard"][0],
                               np_semihard(labels, embeddings, 0.3, squared), rtol=1e-5)


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_degenerate_batches_in_blocks(case, name):
    labels, embeddings = DEGENERATE[case]
    want = outputs_and_gradient(name, labels, embeddings, block_size=0)
    got = outputs_and_gradient(name, labels, embeddings, block_size=2)
    assert np.all(np.isfinite(got[1]))
    assert_same(got, want)


def test_identical_embeddings_are_exactly_zero_apart_in_blocks():
    labels, embeddings = DEGENERATE["identical embeddings"]
    embeddings = embeddings * np.float32(1.7)  # a norm that rounds
    for squared in (False, True):
        for block_size in (1, 2, 3):
            loss, fraction = tl.batch_all_triplet_loss(labels, embeddings, 0.5, squared,
                                                       block_size=block_size)
            assert (loss.numpy(), fraction.numpy()) == (0.5, 1.0)
            # Margin 0: every triplet sits exactly on the hinge, so none is positive.
            assert tl.batch_all_triplet_loss(labels, embeddings, 0.0, squared,
                                             block_size=block_size)[1].numpy() == 0.0
            hard = tl.batch_hard_triplet_loss(labels, embeddings, 0.5, squared,
                                              block_size=block_size)
            assert hard[0].numpy() == 0.5
            np.testing.assert_array_equal(hard[1], 0.0)
            assert tl.batch_semihard_triplet_loss(labels, embeddings, 0.5, squared,
                                                  block_size=block_size).numpy() == 0.5


def test_an_empty_batch_and_a_batch_without_triplets_give_zero():
    empty_labels, empty = np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
    for labels, embeddings in ((empty_labels, empty), DEGENERATE["one class"]):
        for name in ("batch_all", "batch_hard", "batch_semihard"):
            outputs, grad = outputs_and_gradient(name, labels, embeddings, block_size=2)
            assert outputs[0] == 0.0
            np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_nan_or_inf_embeddings_give_nan_in_blocks(name, bad):
    labels, embeddings = random_batch(23, 9, 2)
    embeddings[4, 1] = bad
    outputs, _ = outputs_and_gradient(name, labels, embeddings, block_size=2)
    assert np.isnan(outputs[0])


# ---------------------------------------------------------------- when blocks are used


def test_the_block_size_is_chosen_from_the_batch():
    assert blocked.automatic_block_size(10) == 10
    assert blocked.automatic_block_size(16_384) == 256
    assert blocked.automatic_block_size(65_536) == 64
    assert blocked.automatic_block_size(2**23) == 1
    for batch in (1, 4097, 16_384, 100_000):
        assert int(blocked.automatic_block_size(tf.constant(batch))) == \
            blocked.automatic_block_size(batch)


@pytest.fixture
def blocks_above_8(monkeypatch):
    """Batches of more than 8 computed in blocks when the losses choose (block_size=None)."""
    monkeypatch.setattr(blocked, "BLOCKED_ABOVE", 8)
    calls = []
    for function in ("batch_all_sums", "batch_hard_sums", "batch_semihard_sums"):
        original = getattr(blocked, function)

        def spy(*args, original=original, function=function):
            calls.append(function)
            return original(*args)

        monkeypatch.setattr(blocked, function, spy)
    return calls


def test_blocks_switch_on_above_the_threshold(blocks_above_8):
    for batch, used in ((8, False), (9, True)):
        labels, embeddings = random_batch(24, batch, 3)
        for name in ("batch_all", "batch_hard", "batch_semihard"):
            del blocks_above_8[:]
            got = outputs_and_gradient(name, labels, embeddings)
            assert bool(blocks_above_8) is used, (batch, name)
            assert_same(got, outputs_and_gradient(name, labels, embeddings, block_size=0))


def test_an_unknown_batch_size_chooses_at_run_time(blocks_above_8):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None, 4], tf.float32)])
    def losses(labels, embeddings):
        return (tl.batch_all_triplet_loss(labels, embeddings, 0.5)[0],
                tl.batch_hard_triplet_loss(labels, embeddings, 0.5)[0],
                tl.batch_semihard_triplet_loss(labels, embeddings, 0.5))

    for batch in (5, 30):
        labels, embeddings = random_batch(25, batch, 3)
        want = [tl.batch_all_triplet_loss(labels, embeddings, 0.5, block_size=0)[0],
                tl.batch_hard_triplet_loss(labels, embeddings, 0.5, block_size=0)[0],
                tl.batch_semihard_triplet_loss(labels, embeddings, 0.5, block_size=0)]
        np.testing.assert_allclose(losses(labels, embeddings), want, rtol=1e-5)


@pytest.mark.parametrize("block_size,match", [(-1, "block_size"), (2.0, "block_size"),
                                              (True, "block_size")])
def test_a_bad_block_size_is_refused(block_size, match):
    labels, embeddings = random_batch(26, 6, 2)
    with pytest.raises(ValueError, match=match):
        tl.batch_all_triplet_loss(labels, embeddings, 0.5, block_size=block_size)


def test_a_callable_distance_is_never_blocked():
    labels, embeddings = random_batch(27, 6, 2)

    def manhattan(e):
        return tf.reduce_sum(tf.abs(e[:, None] - e[None, :]), axis=-1)

    with pytest.raises(ValueError, match="named distance"):
        tl.batch_hard_triplet_loss(labels, embeddings, 0.5, distance=manhattan, block_size=2)
    unblocked = tl.batch_hard_triplet_loss(labels, embeddings, 0.5, distance=manhattan)
    assert np.isfinite(unblocked[0].numpy())


# ---------------------------------------------------------------- execution modes


@pytest.mark.parametrize("name", ["batch_all", "batch_all_soft", "batch_hard", "batch_semihard"])
def test_blocks_under_xla_and_in_a_tf1_session(name):
    labels, embeddings = tied_batch()
    want = outputs_and_gradient(name, labels, embeddings, block_size=0)

    @tf.function(jit_compile=True)
    def compiled(labels, embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            outputs = LOSSES[name](labels, embeddings, 0.5, block_size=4)
        return outputs, tape.gradient(outputs[0], embeddings)

    outputs, grad = compiled(tf.constant(labels), tf.constant(embeddings))
    assert_same(([o.numpy() for o in outputs], grad.numpy()), want)

    with tf.Graph().as_default():
        label_input = tf.compat.v1.placeholder(tf.int64, [None])
        embedding_input = tf.compat.v1.placeholder(tf.float32, [None, embeddings.shape[1]])
        graph = LOSSES[name](label_input, embedding_input, 0.5, block_size=4)
        gradient = tf.gradients(graph[0], embedding_input)[0]
        with tf.compat.v1.Session() as session:
            got = session.run((list(graph), gradient),
                              {label_input: labels, embedding_input: embeddings})
    assert_same(got, want)


def fit_history(cls, strategy=None, jit_compile=False):
    strategy = strategy or tf.distribute.get_strategy()
    x, labels = tiny_data(seed=3, count=32), np.random.RandomState(3).randint(0, 4, size=32)
    with strategy.scope():
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=cls(), jit_compile=jit_compile)
    history = model.fit(x, labels, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    return history["loss"], model.get_weights()


@pytest.mark.e2e
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_fit_and_a_mirrored_fit_in_blocks_equal_fit_without(cls, monkeypatch, mirrored_strategy):
    want_loss, want_weights = fit_history(cls)
    monkeypatch.setattr(blocked, "BLOCKED_ABOVE", 8)
    monkeypatch.setattr(blocked, "BLOCK_ELEMENTS", 16 * 3)  # 3 anchors per block of 16
    calls = []
    original = blocked._blocked_sum
    monkeypatch.setattr(blocked, "_blocked_sum",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    for strategy in (None, mirrored_strategy):
        del calls[:]
        loss, weights = fit_history(cls, strategy)
        assert calls, "the blocks were not used"
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        for got, want in zip(weights, want_weights):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
