"""Triplet losses (tftriplet/triplet_loss.py) against plain numpy loops and the B^3 definition."""

import numpy as np
import pytest
import tensorflow as tf

from tftriplet import triplet_loss as tl

MARGINS = (0.0, 0.2, 1.0)


# ---------------------------------------------------------------- numpy references


def np_distances(embeddings, squared):
    embeddings = np.asarray(embeddings, np.float64)
    batch = len(embeddings)
    out = np.zeros((batch, batch))
    for i in range(batch):
        for j in range(batch):
            square = np.sum((embeddings[i] - embeddings[j]) ** 2)
            out[i, j] = square if squared else np.sqrt(square)
    return out


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_batch_all(labels, embeddings, margin, squared, soft_margin=False):
    dist = np_distances(embeddings, squared)
    batch = len(labels)
    total, num_positive, num_valid = 0.0, 0, 0
    for a in range(batch):
        for p in range(batch):
            for n in range(batch):
                if a == p or labels[a] != labels[p] or labels[a] == labels[n]:
                    continue
                num_valid += 1
                diff = dist[a, p] - dist[a, n]
                loss = np_softplus(diff) if soft_margin else max(diff + margin, 0.0)
                total += loss
                num_positive += loss > 1e-16
    if num_positive == 0:
        return 0.0, 0.0
    return total / num_positive, num_positive / num_valid


def np_batch_hard(labels, embeddings, margin, squared, soft_margin=False):
    """Documented conventions: no positive -> hardest positive 0; no negative -> row maximum;
    the loss averages over anchors having both."""
    dist = np_distances(embeddings, squared)
    batch = len(labels)
    hardest_pos, hardest_neg, losses = np.zeros(batch), np.zeros(batch), []
    for a in range(batch):
        pos = [dist[a, p] for p in range(batch) if p != a and labels[p] == labels[a]]
        neg = [dist[a, n] for n in range(batch) if labels[n] != labels[a]]
        hardest_pos[a] = max(pos) if pos else 0.0
        hardest_neg[a] = min(neg) if neg else max(dist[a])
        if pos and neg:
            diff = hardest_pos[a] - hardest_neg[a]
            losses.append(np_softplus(diff) if soft_margin else max(diff + margin, 0.0))
    return (np.mean(losses) if losses else 0.0), hardest_pos, hardest_neg


def np_semihard(labels, embeddings, margin, squared):
    dist = np_distances(embeddings, squared)
    batch = len(labels)
    losses = []
    for a in range(batch):
        neg = [dist[a, n] for n in range(batch) if labels[n] != labels[a]]
        if not neg:
            continue
        for p in range(batch):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d for d in neg if d > dist[a, p]]
            d_neg = min(farther) if farther else max(neg)
            losses.append(max(dist[a, p] - d_neg + margin, 0.0))
    return np.mean(losses) if losses else 0.0


# ---------------------------------------------------------------- helpers


def random_batch(seed, batch, num_classes, dim=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, batch)
    embeddings = rng.normal(size=(batch, dim)).astype(np.float32)
    return labels, embeddings


def loss_of(name, labels, embeddings, margin, squared, soft_margin):
    """Scalar loss of strategy ``name``."""
    if name == "batch_all":
        return tl.batch_all_triplet_loss(labels, embeddings, margin, squared, soft_margin)[0]
    if name == "batch_all_naive":
        return tl.batch_all_triplet_loss_naive(labels, embeddings, margin, squared, soft_margin)[0]
    if name == "batch_hard":
        return tl.batch_hard_triplet_loss(labels, embeddings, margin, squared, soft_margin)[0]
    return tl.batch_semihard_triplet_loss(labels, embeddings, margin, squared)


def value_and_gradient(name, labels, embeddings, margin=0.5, squared=False, soft_margin=False):
    embeddings = tf.constant(embeddings)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = loss_of(name, labels, embeddings, margin, squared, soft_margin)
    return loss.numpy(), tape.gradient(loss, embeddings).numpy()


LOSS_CASES = [("batch_all", False), ("batch_all", True), ("batch_all_naive", False),
              ("batch_all_naive", True), ("batch_hard", False), ("batch_hard", True),
              ("batch_semihard", False)]


def reference(name, labels, embeddings, margin, squared, soft_margin):
    if name.startswith("batch_all"):
        return np_batch_all(labels, embeddings, margin, squared, soft_margin)[0]
    if name == "batch_hard":
        return np_batch_hard(labels, embeddings, margin, squared, soft_margin)[0]
    return np_semihard(labels, embeddings, margin, squared)


# ---------------------------------------------------------------- distances and masks


@pytest.mark.parametrize("squared", [False, True])
def test_pairwise_distances_match_numpy(squared):
    _, embeddings = random_batch(0, 10, 3, dim=5)
    got = tl.pairwise_distances(embeddings, squared=squared)
    assert got.dtype == tf.float32 and got.shape == (10, 10)
    np.testing.assert_allclose(got, np_distances(embeddings, squared), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("squared", [False, True])
def test_identical_embeddings_are_exactly_zero_apart_with_finite_gradient(squared):
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(6, 7)).astype(np.float32) * 10
    embeddings[3] = embeddings[1]
    embeddings[5] = embeddings[1]
    embeddings = tf.constant(embeddings)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        dist = tl.pairwise_distances(embeddings, squared=squared)
        total = tf.reduce_sum(dist)
    dist = dist.numpy()
    assert np.all(np.diag(dist) == 0.0)
    assert dist[1, 3] == 0.0 and dist[3, 5] == 0.0 and dist[5, 1] == 0.0
    assert np.all(dist[0, 1:] > 0)
    assert np.all(np.isfinite(tape.gradient(total, embeddings).numpy()))


def test_pairwise_distances_of_one_repeated_point_have_zero_gradient():
    embeddings = tf.constant(np.ones((4, 3), np.float32))
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        total = tf.reduce_sum(tl.pairwise_distances(embeddings))
    assert total.numpy() == 0.0
    np.testing.assert_array_equal(tape.gradient(total, embeddings).numpy(), 0.0)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float64])
def test_pairwise_distances_accept_other_float_dtypes(dtype):
    _, embeddings = random_batch(2, 8, 2)
    cast = tf.cast(embeddings, dtype)
    got = tl.pairwise_distances(cast)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got, np_distances(tf.cast(cast, tf.float64).numpy(), False),
                               rtol=1e-5, atol=1e-5)


def test_masks_match_loops():
    labels = np.array([0, 1, 0, 2, 1, 0, 3])
    batch = len(labels)
    ap = np.array([[i != j and labels[i] == labels[j] for j in range(batch)] for i in range(batch)])
    an = np.array([[labels[i] != labels[j] for j in range(batch)] for i in range(batch)])
    trip = np.array([[[len({a, p, n}) == 3 and labels[a] == labels[p] != labels[n]
                       for n in range(batch)] for p in range(batch)] for a in range(batch)])
    for given in (labels, labels[:, None]):
        np.testing.assert_array_equal(tl.anchor_positive_mask(given), ap)
        np.testing.assert_array_equal(tl.anchor_negative_mask(given), an)
        np.testing.assert_array_equal(tl.triplet_mask(given), trip)
    assert tl.triplet_mask(labels).dtype == tf.bool


# ---------------------------------------------------------------- values against loops


BATCHES = [  # (seed, batch size, classes): with singletons, pairs, and bigger classes
    (3, 12, 3), (4, 9, 5), (5, 16, 2)]


@pytest.mark.parametrize("soft_margin", [False, True])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", MARGINS)
def test_batch_all_matches_loops(margin, squared, soft_margin):
    for seed, batch, classes in BATCHES:
        labels, embeddings = random_batch(seed, batch, classes)
        want = np_batch_all(labels, embeddings, margin, squared, soft_margin)
        for fn in (tl.batch_all_triplet_loss, tl.batch_all_triplet_loss_naive):
            loss, fraction = fn(labels, embeddings, margin, squared, soft_margin)
            assert loss.dtype == tf.float32 and fraction.dtype == tf.float32
            np.testing.assert_allclose([loss, fraction], want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("soft_margin", [False, True])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", MARGINS)
def test_batch_hard_matches_loops(margin, squared, soft_margin):
    for seed, batch, classes in BATCHES:
        labels, embeddings = random_batch(seed, batch, classes)
        args = (labels, embeddings, margin, squared, soft_margin)
        loss, pos, neg = tl.batch_hard_triplet_loss(*args)
        want_loss, want_pos, want_neg = np_batch_hard(*args)
        assert pos.shape == (batch,) and neg.shape == (batch,)
        np.testing.assert_allclose(loss, want_loss, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(pos, want_pos, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(neg, want_neg, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", MARGINS)
def test_batch_semihard_matches_loops(margin, squared):
    for seed, batch, classes in BATCHES:
        labels, embeddings = random_batch(seed, batch, classes)
        got = tl.batch_semihard_triplet_loss(labels, embeddings, margin, squared)
        assert got.dtype == tf.float32
        np.testing.assert_allclose(got, np_semihard(labels, embeddings, margin, squared),
                                   rtol=2e-5, atol=1e-6)


def test_batch_hard_conventions_for_anchors_without_positive_or_negative():
    # Anchor 2 is alone in its class; with one class no anchor has a negative.
    labels = np.array([0, 0, 1, 0])
    embeddings = np.array([[0.0], [1.0], [5.0], [3.0]], np.float32)
    loss, pos, neg = tl.batch_hard_triplet_loss(labels, embeddings, 1.0)
    np.testing.assert_allclose(pos, [3.0, 2.0, 0.0, 3.0])
    np.testing.assert_allclose(neg, [5.0, 4.0, 2.0, 2.0])
    # Anchors 0, 1, 3: max(3 - 5 + 1, 0), max(2 - 4 + 1, 0), max(3 - 2 + 1, 0); anchor 2 left out.
    np.testing.assert_allclose(loss, 2.0 / 3.0, rtol=1e-6)
    loss, pos, neg = tl.batch_hard_triplet_loss(np.zeros(3, np.int64), embeddings[:3], 1.0)
    assert loss.numpy() == 0.0
    np.testing.assert_allclose(pos, [5.0, 4.0, 5.0])
    np.testing.assert_allclose(neg, [5.0, 4.0, 5.0])  # the row maximum: finite, never "hard"


def test_semihard_picks_the_closest_farther_negative_else_the_farthest():
    labels = np.array([0, 0, 1, 1])
    embeddings = np.array([[0.0], [2.0], [1.0], [3.0]], np.float32)
    # (0,1): d=2, negatives at 1 and 3 -> semi-hard 3: max(2-3+m, 0). (1,0): d=2, negatives at
    # 1 and 1 -> none farther, farthest is 1: max(2-1+m, 0). Class 1 mirrors it: (2,3) d=2,
    # negatives at 1, 1 -> farthest 1; (3,2) d=2, negatives 3, 1 -> semi-hard 3.
    got = tl.batch_semihard_triplet_loss(labels, embeddings, 0.5)
    np.testing.assert_allclose(got, (0.0 + 1.5 + 1.5 + 0.0) / 4, rtol=1e-6)


# ---------------------------------------------------------------- degenerate batches


DEGENERATE = {
    "one example": (np.array([3]), np.ones((1, 2), np.float32)),
    "two, same label": (np.array([1, 1]), np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)),
    "two, different labels": (np.array([1, 2]), np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)),
    "one class": (np.zeros(5, np.int64), random_batch(6, 5, 1, dim=3)[1]),
    "all singletons": (np.arange(5), random_batch(7, 5, 1, dim=3)[1]),
    "identical embeddings": (np.array([0, 0, 1, 1, 2]), np.ones((5, 3), np.float32)),
    "duplicated points": (np.array([0, 1, 0, 1, 0, 1]),
                          np.repeat(np.eye(3, 2, dtype=np.float32), 2, axis=0)),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("name,soft_margin", LOSS_CASES)
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_degenerate_batches_match_loops_with_finite_gradients(
        case, name, soft_margin, squared, margin):
    labels, embeddings = DEGENERATE[case]
    args = (labels, embeddings, margin, squared, soft_margin)
    loss, grad = value_and_gradient(name, *args)
    np.testing.assert_allclose(loss, reference(name, *args), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("squared", [False, True])
def test_identical_embeddings_values(squared):
    labels, embeddings = DEGENERATE["identical embeddings"]
    for fn in (tl.batch_all_triplet_loss, tl.batch_all_triplet_loss_naive):
        np.testing.assert_allclose(fn(labels, embeddings, 0.5, squared), [0.5, 1.0])
        # Margin 0: every triplet sits exactly on the hinge, so none is positive.
        np.testing.assert_array_equal(fn(labels, embeddings, 0.0, squared), [0.0, 0.0])
    assert tl.batch_hard_triplet_loss(labels, embeddings, 0.5, squared)[0].numpy() == 0.5
    assert tl.batch_semihard_triplet_loss(labels, embeddings, 0.5, squared).numpy() == 0.5


def test_no_valid_triplet_gives_zero_never_nan():
    for labels, embeddings in (DEGENERATE["one class"], DEGENERATE["all singletons"]):
        for fn in (tl.batch_all_triplet_loss, tl.batch_all_triplet_loss_naive):
            np.testing.assert_array_equal(fn(labels, embeddings, 0.5), [0.0, 0.0])
        assert tl.batch_hard_triplet_loss(labels, embeddings, 0.5)[0].numpy() == 0.0
        assert tl.batch_semihard_triplet_loss(labels, embeddings, 0.5).numpy() == 0.0


def test_batch_all_counts_beyond_int32_and_float32():
    # Counts at B ~ 2000 exceed 2^31 triplets; the average must not overflow or round.
    loss, fraction = tl._positive_average(
        tf.constant(6e9, tf.float64), tf.constant(3_000_000_001, tf.int64),
        tf.constant(6_000_000_002, tf.int64))
    np.testing.assert_allclose([loss, fraction], [6e9 / 3_000_000_001, 0.5], rtol=1e-7)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name,soft_margin", LOSS_CASES)
@pytest.mark.parametrize("squared", [False, True])
def test_gradients_match_numerical_differentiation(name, soft_margin, squared):
    labels = np.array([0, 1, 0, 1, 2, 0])
    embeddings = np.random.default_rng(8).normal(size=(6, 3)).astype(np.float32)

    def loss(x):
        return loss_of(name, labels, x, 0.7, squared, soft_margin)

    theoretical, numerical = tf.test.compute_gradient(loss, [tf.constant(embeddings)], delta=1e-3)
    assert np.abs(theoretical[0]).max() > 0.01  # the case is not trivially flat
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize("soft_margin", [False, True])
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("seed,batch,classes", [(10, 32, 4), (11, 128, 10), (12, 128, 3)])
def test_fast_batch_all_equals_the_cubic_definition(seed, batch, classes, squared, soft_margin):
    labels, embeddings = random_batch(seed, batch, classes, dim=8)
    embeddings = tf.constant(embeddings)
    results = []
    for fn in (tl.batch_all_triplet_loss, tl.batch_all_triplet_loss_naive):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss, fraction = fn(labels, embeddings, 0.5, squared, soft_margin)
        results.append((loss.numpy(), fraction.numpy(), tape.gradient(loss, embeddings).numpy()))
    (loss, fraction, grad), (want_loss, want_fraction, want_grad) = results
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    assert fraction == want_fraction
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-5 * np.abs(want_grad).max())


@pytest.mark.parametrize("margin", [0.0, 1.0, 2.0])
def test_fast_batch_all_handles_exact_ties_like_the_definition(margin):
    # Integer points: squared distances are small integers, so d(a,n) == d(a,p) + margin often.
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 3, 40)
    embeddings = tf.constant(rng.integers(-1, 2, size=(40, 3)).astype(np.float32))
    results = []
    for fn in (tl.batch_all_triplet_loss, tl.batch_all_triplet_loss_naive):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss, fraction = fn(labels, embeddings, margin, squared=True)
        results.append((loss.numpy(), fraction.numpy(), tape.gradient(loss, embeddings).numpy()))
    (loss, fraction, grad), (want_loss, want_fraction, want_grad) = results
    assert fraction == want_fraction
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["batch_all", "batch_hard", "batch_semihard"])
def test_label_values_only_matter_through_equality(name):
    # Negative, huge and unordered ids group the batch like 0..C-1 would.
    compact = np.array([2, 0, 1, 0, 2, 2, 1, 3, 0])
    ids = np.array([-7, 2**40, 5, -(2**35)])
    embeddings = np.random.default_rng(14).normal(size=(9, 3)).astype(np.float32)
    want = value_and_gradient(name, compact, embeddings)
    got = value_and_gradient(name, ids[compact], embeddings)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- dtypes and graphs


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("name,soft_margin", LOSS_CASES)
def test_low_precision_embeddings_give_float32_losses(dtype, name, soft_margin):
    labels, embeddings = random_batch(15, 12, 3)
    low = tf.cast(embeddings, dtype)
    with tf.GradientTape() as tape:
        tape.watch(low)
        loss = loss_of(name, labels, low, 0.5, False, soft_margin)
    grad = tape.gradient(loss, low)
    assert loss.dtype == tf.float32 and grad.dtype == dtype
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
    # The loss is computed in float32 from the rounded inputs.
    want = loss_of(name, labels, tf.cast(low, tf.float32), 0.5, False, soft_margin)
    np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_every_loss_works_in_tf_function_with_unknown_batch_size():
    labels, embeddings = random_batch(16, 14, 3)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None, 4], tf.float32)])
    def all_losses(labels, embeddings):
        return (tl.batch_all_triplet_loss(labels, embeddings, 0.5),
                tl.batch_all_triplet_loss(labels, embeddings, 0.5, soft_margin=True),
                tl.batch_hard_triplet_loss(labels, embeddings, 0.5),
                tl.batch_semihard_triplet_loss(labels, embeddings, 0.5))

    got = all_losses(labels, embeddings)
    want = (tl.batch_all_triplet_loss(labels, embeddings, 0.5),
            tl.batch_all_triplet_loss(labels, embeddings, 0.5, soft_margin=True),
            tl.batch_hard_triplet_loss(labels, embeddings, 0.5),
            tl.batch_semihard_triplet_loss(labels, embeddings, 0.5))
    tf.nest.map_structure(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6), got, want)
    # The same trace serves other batch sizes, including ones without any triplet.
    for batch in (1, 2, 30):
        small_labels, small_embeddings = random_batch(batch, batch, 3)
        np.testing.assert_allclose(all_losses(small_labels, small_embeddings)[0],
                                   np_batch_all(small_labels, small_embeddings, 0.5, False),
                                   rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("labels,match", [
    (np.eye(4, 3, dtype=np.int64), r"got shape \(4, 3\).*one-hot"),
    (np.zeros((4, 1, 1), np.int64), r"got shape \(4, 1, 1\)"),
    (np.int64(3), r"got shape \(\)"),
    (np.array([0.0, 1.5, 1.0, 0.0], np.float32), "fractional"),
    (np.array([True, False, True, True]), "dtype bool"),
    (np.array([0, 1, 0]), "3 entries but embeddings 4 rows"),
])
@pytest.mark.parametrize("name", ["batch_all", "batch_hard", "batch_semihard"])
def test_bad_labels_raise_value_error(labels, match, name):
    embeddings = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=match):
        loss_of(name, labels, embeddings, 0.5, False, False)


def test_integer_valued_float_uint8_and_column_labels_are_accepted():
    labels, embeddings = random_batch(17, 10, 3)
    want = tl.batch_all_triplet_loss(labels, embeddings, 0.5)
    # MNIST labels are uint8; Keras hands y_true over as float32 [B, 1].
    for given in (labels.astype(np.uint8), labels.astype(np.float32), labels[:, None],
                  labels[:, None].astype(np.float32)):
        np.testing.assert_array_equal(tl.batch_all_triplet_loss(given, embeddings, 0.5), want)


def test_label_shape_only_known_at_run_time_is_checked_in_the_graph():
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None, 2], tf.float32)])
    def loss(labels, embeddings):
        return tl.batch_all_triplet_loss(labels, embeddings, 0.5)[0]

    embeddings = np.random.default_rng(18).normal(size=(4, 2)).astype(np.float32)
    labels = np.array([[0.0], [1.0], [0.0], [1.0]], np.float32)
    np.testing.assert_allclose(loss(labels, embeddings),
                               np_batch_all(labels[:, 0], embeddings, 0.5, False)[0], rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one-hot"):
        loss(np.eye(4, 2, dtype=np.float32), embeddings)
    with pytest.raises(tf.errors.InvalidArgumentError, match="fractional"):
        loss(labels + 0.5, embeddings)


@pytest.mark.parametrize("embeddings,match", [
    (np.zeros(4, np.float32), r"\[batch_size, embedding_size\]"),
    (np.zeros((4, 2), np.int32), "floating point"),
])
def test_bad_embeddings_raise_value_error(embeddings, match):
    with pytest.raises(ValueError, match=match):
        tl.batch_all_triplet_loss(np.zeros(4, np.int64), embeddings, 0.5)


# ---------------------------------------------------------------- TF1 graph mode


def report_batch():
    rng = np.random.RandomState(177)
    embeddings = rng.rand(10, 6).astype(np.float32)
    return rng.randint(0, 5, size=10), embeddings


@pytest.mark.parametrize("distance", [None, "squared-L2", "angular"])
@pytest.mark.parametrize("name", ["batch_all", "batch_all_soft", "batch_hard", "batch_semihard"])
def test_tf1_graph_session_equals_eager(name, distance):
    """People migrating from the TF1 original run the losses in a v1 graph + Session."""
    labels, embeddings = report_batch()
    loss_fn = {
        "batch_all": lambda l, e: tl.batch_all_triplet_loss(l, e, 0.2, distance=distance),
        "batch_all_soft": lambda l, e: tl.batch_all_triplet_loss(l, e, 0.2, soft_margin=True,
                                                                 distance=distance),
        "batch_hard": lambda l, e: tl.batch_hard_triplet_loss(l, e, 0.2, distance=distance),
        "batch_semihard": lambda l, e: (tl.batch_semihard_triplet_loss(l, e, 0.2,
                                                                       distance=distance),),
    }[name]
    eager_embeddings = tf.constant(embeddings)
    with tf.GradientTape() as tape:
        tape.watch(eager_embeddings)
        eager = loss_fn(labels, eager_embeddings)
    eager_gradient = tape.gradient(eager[0], eager_embeddings).numpy()
    with tf.Graph().as_default():
        label_input = tf.compat.v1.placeholder(tf.int64, [None])
        embedding_input = tf.compat.v1.placeholder(tf.float32, [None, 6])
        graph = loss_fn(label_input, embedding_input)
        gradient = tf.gradients(graph[0], embedding_input)[0]
        with tf.compat.v1.Session() as session:
            values, graph_gradient = session.run(
                (graph, gradient), {label_input: labels, embedding_input: embeddings})
    for got, want in zip(values, eager):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(graph_gradient, eager_gradient, rtol=1e-4, atol=1e-6)
    if name == "batch_all" and distance == "squared-L2":
        np.testing.assert_allclose(values, [0.53471, 0.66379], atol=1e-5)
