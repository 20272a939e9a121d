"""Keras 3 triplet losses (tftriplet/losses.py) as drop-in replacements for TensorFlow Addons'.

Checks, against independent float64 numpy loops written from TFA 0.23's semantics:

* the values of ``triplet_semihard_loss`` / ``triplet_hard_loss`` and their classes for every
  dtype (float32 / float16 / bfloat16) x distance metric (L2 / squared-L2 / angular)
  x soft margin, on TFA's own test matrix (seeded; the reference is computed on the
  inputs rounded to the half dtype), the docstring examples, the softplus that does not
  overflow, 0 instead of NaN without a positive pair;
* the original project's ``BatchAllTripletLoss`` / ``BatchHardTripletLoss`` and the
  ``FractionPositiveTriplets`` metric;
* labels: [B] and [B, 1], every integer dtype and integer-valued floats, one-hot refused,
  ids above 2^24 kept apart (Keras casts y_true to float32), directly and in ``model.fit``;
* equal values and gradients in eager, ``tf.function``, XLA and TF1 graph + Session;
  ``model.fit`` with and without ``jit_compile``; one ``MirroredStrategy`` step on two
  logical CPUs equal to the single-device step (global mining, 1/N scaling); mixed
  precision; NaN / Inf propagation; ``.keras`` serialization and the registered names;
  ``sample_weight`` and unknown distance metrics refused.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tftriplet import losses
from tftriplet import triplet_loss as tl

# ---------------------------------------------------------------- numpy references (float64)


def np_distances(embeddings, metric):
    """TFA's pairwise_distance ("L2", "squared-L2") and angular_distance, as loops."""
    e = np.asarray(embeddings, np.float64)
    if callable(metric):  # a numpy twin of a callable distance_metric
        return metric(e)
    batch = len(e)
    out = np.zeros((batch, batch))
    if metric == "angular":
        unit = [row / np.sqrt(max(np.dot(row, row), 1e-12)) for row in e]
        for i in range(batch):
            for j in range(batch):
                out[i, j] = max(1.0 - np.dot(unit[i], unit[j]), 0.0)
        return out
    for i in range(batch):
        for j in range(batch):
            if i == j:
                continue  # exactly 0
            square = max(np.dot(e[i], e[i]) + np.dot(e[j], e[j]) - 2.0 * np.dot(e[i], e[j]), 0.0)
            out[i, j] = square if metric == "squared-L2" else np.sqrt(square)
    return out


def np_positives_negatives(labels, a):
    batch = len(labels)
    positives = [p for p in range(batch) if p != a and labels[p] == labels[a]]
    negatives = [n for n in range(batch) if labels[n] != labels[a]]
    return positives, negatives


def np_semihard(labels, embeddings, margin=1.0, metric="L2"):
    """TFA triplet_semihard_loss (0 instead of its NaN without a positive pair)."""
    labels = np.asarray(labels).ravel()
    dist = np_distances(embeddings, metric)
    total, pairs = 0.0, 0
    for a in range(len(labels)):
        positives, negatives = np_positives_negatives(labels, a)
        for p in positives:
            pairs += 1
            if not negatives:
                d_neg = min(dist[a])  # the whole row, diagonal included
            else:
                farther = [dist[a, n] for n in negatives if dist[a, n] > dist[a, p]]
                d_neg = min(farther) if farther else max(dist[a, n] for n in negatives)
            total += max(margin + dist[a, p] - d_neg, 0.0)
    return total / pairs if pairs else 0.0


def np_hard(labels, embeddings, margin=1.0, soft=False, metric="L2"):
    """TFA triplet_hard_loss: mean over all B anchors (softplus for TFA's log1p(exp))."""
    labels = np.asarray(labels).ravel()
    dist = np_distances(embeddings, metric)
    total = 0.0
    for a in range(len(labels)):
        positives, negatives = np_positives_negatives(labels, a)
        hardest_positive = max(dist[a, p] for p in positives) if positives else min(dist[a])
        hardest_negative = min(dist[a, n] for n in negatives) if negatives else max(dist[a])
        difference = hardest_positive - hardest_negative
        total += np.logaddexp(0.0, difference) if soft else max(difference + margin, 0.0)
    return total / len(labels)


def np_batch_all(labels, embeddings, margin=0.5, soft=False, metric="L2"):
    """The original batch-all: (sum over valid triplets / #triplets with loss > 1e-16,
    that number / #valid triplets); (0, 0) without a positive triplet."""
    labels = np.asarray(labels).ravel()
    dist = np_distances(embeddings, metric)
    total, num_positive, num_valid = 0.0, 0, 0
    for a in range(len(labels)):
        positives, negatives = np_positives_negatives(labels, a)
        for p in positives:
            for n in negatives:
                difference = dist[a, p] - dist[a, n]
                loss = np.logaddexp(0.0, difference) if soft else max(difference + margin, 0.0)
                num_valid += 1
                total += loss
                num_positive += loss > 1e-16
    if num_positive == 0:
        return 0.0, 0.0
    return total / num_positive, num_positive / num_valid


def np_batch_hard(labels, embeddings, margin=0.5, soft=False, metric="L2"):
    """The original batch-hard: mean over the anchors having a positive and a negative."""
    labels = np.asarray(labels).ravel()
    dist = np_distances(embeddings, metric)
    anchor_losses = []
    for a in range(len(labels)):
        positives, negatives = np_positives_negatives(labels, a)
        if positives and negatives:
            difference = max(dist[a, p] for p in positives) - min(dist[a, n] for n in negatives)
            anchor_losses.append(np.logaddexp(0.0, difference) if soft
                                 else max(difference + margin, 0.0))
    return float(np.mean(anchor_losses)) if anchor_losses else 0.0


# ---------------------------------------------------------------- helpers

HALF_TOLERANCE = {tf.float32: 1e-6, tf.float16: 1e-3, tf.bfloat16: 1e-2}
CLASSES = [losses.TripletSemiHardLoss, losses.TripletHardLoss, losses.BatchAllTripletLoss,
           losses.BatchHardTripletLoss]
CLASS_IDS = [cls.__name__ for cls in CLASSES]


def class_reference(loss):
    """The numpy reference of a loss object, from its config."""
    config = loss.get_config()
    margin, metric = config["margin"], config["distance_metric"]
    if isinstance(loss, losses.TripletSemiHardLoss):
        return functools.partial(np_semihard, margin=margin, metric=metric)
    if isinstance(loss, losses.TripletHardLoss):
        return functools.partial(np_hard, margin=margin, soft=config["soft"], metric=metric)
    if isinstance(loss, losses.BatchAllTripletLoss):
        return lambda y, e: np_batch_all(y, e, margin, config["soft"], metric)[0]
    return functools.partial(np_batch_hard, margin=margin, soft=config["soft"], metric=metric)


def tfa_batch(seed, num_data, num_classes, feat_dim=6):
    """TFA's test inputs (rng.rand embeddings, randint labels), seeded."""
    rng = np.random.RandomState(seed)
    embeddings = rng.rand(num_data, feat_dim).astype(np.float32)
    labels = rng.randint(0, num_classes, size=num_data)
    return labels, embeddings


def rounded(embeddings, dtype):
    """(tensor of ``dtype``, the same values as float64 numpy)."""
    tensor = tf.cast(tf.constant(embeddings, tf.float32), dtype)
    return tensor, tf.cast(tensor, tf.float64).numpy()


def assert_close(got, want, dtype=tf.float32):
    tolerance = HALF_TOLERANCE[dtype]
    rtol = 1e-5 if dtype == tf.float32 else tolerance
    np.testing.assert_allclose(float(got), want, rtol=rtol, atol=tolerance)


# Batches of 10 six-d embeddings: every anchor with a positive and a negative; some
# anchors without a positive (classes 0 and 5 are singletons); one class (no negative).
MODE_LABELS = {
    "full": np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1]),
    "singletons": np.array([0, 1, 1, 2, 2, 2, 3, 4, 4, 5]),
    "one_class": np.zeros(10, np.int64),
}
MODE_EMBEDDINGS = np.random.RandomState(7).rand(10, 6).astype(np.float32)


# ---------------------------------------------------------------- TFA values


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16, tf.bfloat16], ids=lambda d: d.name)
def test_semihard_matches_tfa_reference(dtype, metric, seed):
    labels, embeddings = tfa_batch(seed, num_data=10, num_classes=4)
    tensor, values = rounded(embeddings, dtype)
    want = np_semihard(labels, values, 1.0, metric)
    got = losses.triplet_semihard_loss(labels, tensor, margin=1.0, distance_metric=metric)
    assert got.dtype == dtype
    assert_close(got, want, dtype)
    got = losses.TripletSemiHardLoss(margin=1.0, distance_metric=metric)(labels, tensor)
    assert_close(got, want, dtype)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16, tf.bfloat16], ids=lambda d: d.name)
def test_hard_matches_tfa_reference(dtype, metric, soft, seed):
    labels, embeddings = tfa_batch(seed, num_data=20, num_classes=5)
    tensor, values = rounded(embeddings, dtype)
    want = np_hard(labels, values, 1.0, soft, metric)
    got = losses.triplet_hard_loss(labels, tensor, margin=1.0, soft=soft, distance_metric=metric)
    assert got.dtype == dtype
    assert_close(got, want, dtype)
    got = losses.TripletHardLoss(margin=1.0, soft=soft, distance_metric=metric)(labels, tensor)
    assert_close(got, want, dtype)


@pytest.mark.parametrize("batch", ["singletons", "one_class"])
def test_tfa_losses_on_anchors_without_positive_or_negative(batch):
    labels = MODE_LABELS[batch]
    for metric in ("L2", "squared-L2", "angular"):
        assert_close(losses.triplet_semihard_loss(labels, MODE_EMBEDDINGS, 0.7, metric),
                     np_semihard(labels, MODE_EMBEDDINGS, 0.7, metric))
        for soft in (False, True):
            assert_close(losses.triplet_hard_loss(labels, MODE_EMBEDDINGS, 0.7, soft, metric),
                         np_hard(labels, MODE_EMBEDDINGS, 0.7, soft, metric))


def test_semihard_negative_must_be_strictly_farther():
    # Anchor 0: positive at distance 1, negatives at exactly 1 (a tie: not semi-hard) and 3.
    labels = np.array([0, 0, 1, 1])
    embeddings = np.array([[0.0], [1.0], [-1.0], [3.0]], np.float32)
    for metric in ("L2", "squared-L2"):
        want = np_semihard(labels, embeddings, 1.0, metric)
        assert_close(losses.triplet_semihard_loss(labels, embeddings, distance_metric=metric),
                     want)
        assert_close(losses.TripletSemiHardLoss(distance_metric=metric)(labels, embeddings),
                     want)


def test_callable_distance_matches_reference():
    # x x^T: the diagonal is the largest entry, not 0, so the placeholders of anchors
    # without a positive (row minimum) or a negative (row maximum) show.
    dot = lambda x: tf.matmul(x, x, transpose_b=True)  # noqa: E731
    np_dot = lambda e: e @ e.T  # noqa: E731
    for batch, labels in MODE_LABELS.items():
        args = labels, MODE_EMBEDDINGS
        for margin in (0.2, 1.0):
            want = np_semihard(*args, margin, np_dot)
            assert_close(losses.triplet_semihard_loss(*args, margin, dot), want)
            assert_close(losses.TripletSemiHardLoss(margin, dot)(*args), want)
            for soft in (False, True):
                want = np_hard(*args, margin, soft, np_dot)
                assert_close(losses.triplet_hard_loss(*args, margin, soft, dot), want)
                assert_close(losses.TripletHardLoss(margin, soft, dot)(*args), want)
                assert_close(losses.BatchAllTripletLoss(margin, dot, soft)(*args),
                             np_batch_all(*args, margin, soft, np_dot)[0])
                assert_close(losses.BatchHardTripletLoss(margin, dot, soft)(*args),
                             np_batch_hard(*args, margin, soft, np_dot))


def test_docstring_examples():
    labels = tf.constant([0, 0])
    embeddings = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    assert float(losses.TripletSemiHardLoss()(labels, embeddings)) == pytest.approx(
        2.4142137, rel=1e-6)
    assert float(losses.triplet_semihard_loss(labels, embeddings)) == pytest.approx(
        2.4142137, rel=1e-6)
    assert float(losses.TripletHardLoss()(labels, embeddings)) == pytest.approx(1.0, rel=1e-6)
    assert float(losses.triplet_hard_loss(labels, embeddings)) == pytest.approx(1.0, rel=1e-6)
    for dot in (lambda x: x @ tf.transpose(x), lambda x: tf.matmul(x, x, transpose_b=True)):
        assert float(losses.TripletSemiHardLoss(distance_metric=dot)(labels, embeddings)) == (
            pytest.approx(1.0, rel=1e-6))
        assert float(losses.TripletHardLoss(distance_metric=dot)(labels, embeddings)) == (
            pytest.approx(0.0, abs=1e-7))
        assert float(losses.triplet_semihard_loss(labels, embeddings, distance_metric=dot)
                     ) == pytest.approx(1.0, rel=1e-6)
        assert float(losses.triplet_hard_loss(labels, embeddings, distance_metric=dot)
                     ) == pytest.approx(0.0, abs=1e-7)


def test_semihard_without_positive_pair_is_zero_with_zero_gradient():
    # TFA divides 0 by 0 here (NaN).
    embeddings = tf.constant(MODE_EMBEDDINGS[:5])
    labels = np.arange(5)
    for loss_fn in (losses.triplet_semihard_loss, losses.TripletSemiHardLoss()):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = loss_fn(labels, embeddings)
        assert float(loss) == 0.0
        np.testing.assert_array_equal(tape.gradient(loss, embeddings).numpy(), 0.0)


def test_soft_hard_loss_does_not_overflow():
    # Anchor 0: hardest positive 100, hardest negative 0.25 (squared-L2): TFA's
    # log1p(exp(99.75)) is inf in float32; softplus is 99.75.
    labels = np.array([0, 0, 1])
    embeddings = tf.constant([[0.0], [10.0], [0.5]])
    with np.errstate(over="ignore"):
        assert np.isinf(np.log1p(np.exp(np.float32(99.75))))
    want = np_hard(labels, embeddings.numpy(), soft=True, metric="squared-L2")
    assert want > 33
    for loss_fn in (functools.partial(losses.triplet_hard_loss, soft=True,
                                      distance_metric="squared-L2"),
                    losses.TripletHardLoss(soft=True, distance_metric="squared-L2")):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = loss_fn(labels, embeddings)
        assert np.isfinite(float(loss))
        np.testing.assert_allclose(float(loss), want, rtol=1e-6)
        assert np.all(np.isfinite(tape.gradient(loss, embeddings).numpy()))


# ---------------------------------------------------------------- the original project's losses


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_batch_all_and_batch_hard_match_reference(metric, soft, seed):
    labels, embeddings = tfa_batch(seed, num_data=12, num_classes=4)
    for margin in (0.2, 1.0):
        got = losses.BatchAllTripletLoss(margin, metric, soft)(labels, embeddings)
        assert_close(got, np_batch_all(labels, embeddings, margin, soft, metric)[0])
        got = losses.BatchHardTripletLoss(margin, metric, soft)(labels, embeddings)
        assert_close(got, np_batch_hard(labels, embeddings, margin, soft, metric))


def test_fraction_positive_triplets_metric():
    metric = losses.FractionPositiveTriplets(margin=0.3, distance_metric="squared-L2")
    fractions = []
    for seed in range(2):
        labels, embeddings = tfa_batch(seed, num_data=12, num_classes=4)
        metric.update_state(labels, embeddings)
        fractions.append(np_batch_all(labels, embeddings, 0.3, False, "squared-L2")[1])
    assert 0 < fractions[0] < 1
    np.testing.assert_allclose(float(metric.result()), np.mean(fractions), rtol=1e-6)


# ---------------------------------------------------------------- labels

CALLABLES = {
    **{cls.__name__: cls for cls in CLASSES},
    "triplet_semihard_loss": lambda: losses.triplet_semihard_loss,
    "triplet_hard_loss": lambda: losses.triplet_hard_loss,
}


@pytest.mark.parametrize("name", CALLABLES)
def test_label_shapes_and_dtypes(name):
    loss_fn = CALLABLES[name]()
    labels, embeddings = MODE_LABELS["singletons"], MODE_EMBEDDINGS
    want = float(loss_fn(tf.constant(labels, tf.int32), embeddings))
    assert want > 0
    for dtype in (tf.int8, tf.int16, tf.int32, tf.int64, tf.uint8, tf.float16, tf.float32,
                  tf.float64):
        for shaped in (labels, labels[:, None]):
            assert float(loss_fn(tf.constant(shaped, dtype), embeddings)) == want, dtype
    with pytest.raises(ValueError, match="one-hot|argmax"):
        loss_fn(tf.one_hot(labels, 6), embeddings)


BIG = 2**24  # float32 holds every integer up to here: 2^24 + 1 rounds to 2^24
BIG_LABELS = BIG + np.array([0, 1, 2, 3] * 4, np.int64)
SMALL_LABELS = BIG_LABELS - BIG  # relabelled 0, 1, ...


@pytest.mark.parametrize("name", CALLABLES)
def test_labels_above_2_24_stay_distinct(name):
    loss_fn = CALLABLES[name]()
    embeddings = np.random.RandomState(3).rand(16, 6).astype(np.float32)
    want = float(loss_fn(SMALL_LABELS, embeddings))
    assert float(loss_fn(tf.constant(BIG_LABELS), embeddings)) == want
    merged = float(loss_fn(tf.cast(BIG_LABELS, tf.float32), embeddings))
    assert merged != pytest.approx(want, rel=1e-3), "the batch must tell merged ids apart"


def tiny_model(seed=0, dim=8, outputs=4):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((dim,)), keras.layers.Dense(outputs)])


def tiny_data(seed=0, count=16, dim=8):
    return np.random.RandomState(seed).rand(count, dim).astype(np.float32)


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_labels_above_2_24_stay_distinct_in_fit(cls):
    x = tiny_data()
    histories = []
    for labels in (BIG_LABELS, SMALL_LABELS):
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=cls())
        if labels is BIG_LABELS:
            embeddings = model(x)
            # Merging the ids would change the first step's loss.
            assert float(cls()(tf.cast(labels, tf.float32), embeddings)) != pytest.approx(
                float(cls()(SMALL_LABELS, embeddings)), rel=1e-3)
        histories.append(model.fit(x, labels, batch_size=8, epochs=2, shuffle=False,
                                   verbose=0).history["loss"])
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-6)


# ---------------------------------------------------------------- execution modes

MODE_CASES = {
    "semihard": lambda: losses.TripletSemiHardLoss(),
    "semihard_angular": lambda: losses.TripletSemiHardLoss(0.5, distance_metric="angular"),
    "hard": lambda: losses.TripletHardLoss(),
    "hard_soft_squared": lambda: losses.TripletHardLoss(soft=True, distance_metric="squared-L2"),
    "batch_all": lambda: losses.BatchAllTripletLoss(),
    "batch_all_soft_angular": lambda: losses.BatchAllTripletLoss(soft=True,
                                                                 distance_metric="angular"),
    "batch_hard_squared": lambda: losses.BatchHardTripletLoss(distance_metric="squared-L2"),
    "semihard_function": lambda: functools.partial(losses.triplet_semihard_loss, margin=0.5),
    "hard_function_soft": lambda: functools.partial(losses.triplet_hard_loss, soft=True),
}
SIGNATURE = [tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, 6], tf.float32)]


def value_and_gradient(loss_fn, labels, embeddings):
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = loss_fn(labels, embeddings)
    return loss, tape.gradient(loss, embeddings)


def run_eager(loss_fn, batches):
    return [tuple(t.numpy() for t in value_and_gradient(loss_fn, tf.constant(y), tf.constant(e)))
            for y, e in batches]


def run_tf_function(loss_fn, batches, jit_compile):
    step = tf.function(functools.partial(value_and_gradient, loss_fn), input_signature=SIGNATURE,
                       jit_compile=jit_compile)
    return [tuple(t.numpy() for t in step(y, e)) for y, e in batches]


def run_v1_session(loss_fn, batches):
    with tf.Graph().as_default():
        labels = tf.compat.v1.placeholder(tf.int64, [None])
        embeddings = tf.compat.v1.placeholder(tf.float32, [None, 6])
        loss = loss_fn(labels, embeddings)
        gradient = tf.gradients(loss, embeddings)[0]
        with tf.compat.v1.Session() as session:
            return [tuple(session.run([loss, gradient], {labels: y, embeddings: e}))
                    for y, e in batches]


@pytest.mark.parametrize("case", MODE_CASES)
def test_execution_modes_give_equal_values_and_gradients(case):
    loss_fn = MODE_CASES[case]()
    batches = [(labels.astype(np.int64), MODE_EMBEDDINGS) for labels in MODE_LABELS.values()]
    eager = run_eager(loss_fn, batches)
    assert any(value > 0 for value, _ in eager)
    others = {"tf.function": run_tf_function(loss_fn, batches, jit_compile=False),
              "xla": run_tf_function(loss_fn, batches, jit_compile=True),
              "v1 session": run_v1_session(loss_fn, batches)}
    for mode, results in others.items():
        for batch, (want, got) in zip(MODE_LABELS, zip(eager, results)):
            np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-7,
                                       err_msg=f"{mode} value, batch {batch}")
            np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{mode} gradient, batch {batch}")


def test_batch_all_v1_session_matches_eager():
    # The reported TF1 graph-mode discrepancy (v1 Session gave 0.49133 / 0.73276).
    rng = np.random.RandomState(177)
    embeddings = rng.rand(10, 6).astype(np.float32)
    labels = rng.randint(0, 5, size=10)
    want = np_batch_all(labels, embeddings, 0.2, False, "squared-L2")
    eager = [float(v) for v in tl.batch_all_triplet_loss(labels, embeddings, 0.2, squared=True)]
    np.testing.assert_allclose(eager, want, rtol=1e-5)
    np.testing.assert_allclose(eager, [0.53471, 0.66379], atol=1e-5)
    with tf.Graph().as_default():
        label_input = tf.compat.v1.placeholder(tf.int64, [None])
        embedding_input = tf.compat.v1.placeholder(tf.float32, [None, 6])
        outputs = tl.batch_all_triplet_loss(label_input, embedding_input, 0.2, squared=True)
        with tf.compat.v1.Session() as session:
            graph = session.run(list(outputs), {label_input: labels, embedding_input: embeddings})
    np.testing.assert_allclose(graph, eager, rtol=1e-5)


# ---------------------------------------------------------------- model.fit


@pytest.fixture
def no_op_determinism():
    """Keras 3 silently refuses XLA while TF's op determinism is on (the training tests
    turn it on for the process): off for the test, then restored."""
    from tensorflow.python.framework import config

    was_on = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    yield
    if was_on:
        config.enable_op_determinism()


@pytest.mark.e2e
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_fit_with_and_without_jit_compile_gives_the_same_history(cls, no_op_determinism):
    x, labels = tiny_data(count=32), np.arange(32) % 4
    histories = {}
    for jit_compile in (False, True, "auto"):
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=cls(),
                      metrics=[losses.FractionPositiveTriplets()], jit_compile=jit_compile)
        histories[jit_compile] = model.fit(x, labels, batch_size=16, epochs=2, shuffle=False,
                                           verbose=0).history
        assert model.jit_compile is (jit_compile is True)  # "auto": no XLA without a GPU
    reference = histories[False]
    assert reference["loss"][0] > 0 and reference["loss"][1] != reference["loss"][0]
    for jit_compile in (True, "auto"):
        for key in ("loss", "fraction_positive_triplets"):
            np.testing.assert_allclose(histories[jit_compile][key], reference[key], rtol=1e-4,
                                       err_msg=f"jit_compile={jit_compile} {key}")


def test_sample_weight_is_refused():
    labels, embeddings = MODE_LABELS["full"], MODE_EMBEDDINGS
    for cls in CLASSES:
        with pytest.raises(ValueError, match="sample_weight"):
            cls()(labels, embeddings, sample_weight=np.ones(10, np.float32))
    model = tiny_model(dim=6)
    model.compile(optimizer="sgd", loss=losses.TripletSemiHardLoss())
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(embeddings, labels, sample_weight=np.ones(10, np.float32), verbose=0)


@pytest.mark.parametrize("cls", CLASSES + [losses.FractionPositiveTriplets],
                         ids=CLASS_IDS + ["FractionPositiveTriplets"])
def test_unknown_distance_metric_is_refused_at_construction(cls):
    with pytest.raises(ValueError, match="L1"):
        cls(distance_metric="L1")


def test_unknown_distance_metric_is_refused_by_the_functions():
    for function in (losses.triplet_semihard_loss, losses.triplet_hard_loss):
        with pytest.raises(ValueError, match="L1"):
            function(MODE_LABELS["full"], MODE_EMBEDDINGS, distance_metric="L1")


# ---------------------------------------------------------------- tf.distribute


def one_fit_step(cls, strategy, x, labels, initial):
    with strategy.scope():
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=cls(),
                      metrics=[losses.FractionPositiveTriplets()])
    model.set_weights(initial)
    history = model.fit(x, labels, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history
    return history, model.get_weights()


@pytest.mark.e2e
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_mirrored_fit_step_equals_single_device_step(cls, mirrored_strategy):
    x = tiny_data(seed=5, count=16)
    labels = np.random.RandomState(5).randint(0, 3, size=16)
    initial = tiny_model().get_weights()
    single, weights_1 = one_fit_step(cls, tf.distribute.get_strategy(), x, labels, initial)
    mirrored, weights_2 = one_fit_step(cls, mirrored_strategy, x, labels, initial)

    embeddings = tiny_model()(x)  # the initial weights again
    loss = float(cls()(labels, embeddings))
    assert single["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert mirrored["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert mirrored["fraction_positive_triplets"][0] == pytest.approx(
        single["fraction_positive_triplets"][0], rel=1e-5)
    # Mining each replica's half alone would give another loss.
    halves = np.mean([float(cls()(labels[s], embeddings[s]))
                      for s in (slice(0, 8), slice(8, 16))])
    assert halves != pytest.approx(loss, rel=1e-3)
    changed = False
    for before, a, b in zip(initial, weights_1, weights_2):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b - before, a - before, rtol=1e-3, atol=1e-6)
        changed |= not np.allclose(a, before)
    assert changed, "the step must update the weights"


# ---------------------------------------------------------------- mixed precision


@pytest.fixture
def restore_float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_mixed_precision_fit(cls, policy, restore_float32_policy):
    keras.mixed_precision.set_global_policy(policy)
    dtype = tf.as_dtype(policy.split("_")[1])
    x, labels = tiny_data(count=16), np.arange(16) % 4
    model = tiny_model()
    assert model.layers[-1].compute_dtype == dtype.name
    embeddings = model(x)
    assert embeddings.dtype == dtype
    loss_fn = cls()
    want = class_reference(loss_fn)(labels, tf.cast(embeddings, tf.float64).numpy())
    assert_close(loss_fn(labels, embeddings), want, dtype)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss_fn)
    history = model.fit(x, labels, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert_close(history["loss"][0], want, dtype)


# ---------------------------------------------------------------- NaN and Inf


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("case", MODE_CASES)
def test_nan_or_inf_embeddings_give_nan(case, bad):
    loss_fn = MODE_CASES[case]()
    for labels in MODE_LABELS.values():
        for row in (0, 4):  # 0 is a singleton of the "singletons" batch
            embeddings = MODE_EMBEDDINGS.copy()
            embeddings[row, 2] = bad
            assert np.isnan(float(loss_fn(labels, embeddings))), (labels, row)


def test_nan_embeddings_give_nan_fraction():
    embeddings = MODE_EMBEDDINGS.copy()
    embeddings[0, 0] = np.nan
    metric = losses.FractionPositiveTriplets()
    metric.update_state(MODE_LABELS["full"], embeddings)
    assert np.isnan(float(metric.result()))


# ---------------------------------------------------------------- serialization


@keras.saving.register_keras_serializable(package="test")
def negative_dot_distance(embeddings):
    return -tf.matmul(embeddings, embeddings, transpose_b=True)


SERIALIZED = [
    lambda: losses.TripletSemiHardLoss(margin=0.3, distance_metric="angular"),
    lambda: losses.TripletHardLoss(margin=0.4, soft=True, distance_metric="squared-L2"),
    lambda: losses.BatchAllTripletLoss(margin=0.2, soft=True),
    lambda: losses.BatchHardTripletLoss(margin=0.6, distance_metric=negative_dot_distance),
]


@pytest.mark.parametrize("make", SERIALIZED, ids=CLASS_IDS)
def test_keras_file_round_trip(make, tmp_path):
    x, labels = tiny_data(count=16), np.arange(16) % 4
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=make(),
                  metrics=[losses.FractionPositiveTriplets(margin=0.3,
                                                           distance_metric="squared-L2")])
    model.fit(x, labels, batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is type(model.loss)
    assert loaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    want = model.evaluate(x, labels, batch_size=16, verbose=0, return_dict=True)
    got = loaded.evaluate(x, labels, batch_size=16, verbose=0, return_dict=True)
    assert want["loss"] > 0 and 0 < want["fraction_positive_triplets"] <= 1
    assert got == pytest.approx(want, rel=1e-6)


def test_custom_distance_round_trips_through_config():
    loss = losses.TripletSemiHardLoss(margin=0.3, distance_metric=negative_dot_distance)
    config = loss.get_config()
    again = losses.TripletSemiHardLoss.from_config(config)
    assert again.get_config() == config
    assert again._arguments["distance_metric"] is negative_dot_distance
    labels, embeddings = MODE_LABELS["full"], MODE_EMBEDDINGS
    assert float(again(labels, embeddings)) == float(loss(labels, embeddings))
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, losses.TripletSemiHardLoss)
    assert restored.get_config() == config


def fit_first_two_losses(loss):
    x, labels = tiny_data(count=16), np.arange(16) % 4
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    history = model.fit(x, labels, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    assert history["loss"][0] == pytest.approx(np_semihard(labels, tiny_model()(x).numpy()),
                                               rel=1e-5)
    assert history["loss"][1] < history["loss"][0]


def test_registered_name():
    name = "TripletLoss>TripletSemiHardLoss"
    assert keras.saving.get_registered_object(name) is losses.TripletSemiHardLoss
    assert keras.saving.get_registered_name(losses.TripletSemiHardLoss) == name
    loss = keras.losses.get({"class_name": name, "config": {"margin": 0.5}})
    assert isinstance(loss, losses.TripletSemiHardLoss)
    assert loss.get_config()["margin"] == 0.5 and loss.get_config()["distance_metric"] == "L2"
    fit_first_two_losses(keras.losses.get({"class_name": name, "config": {}}))


def test_a_registered_name_as_a_string_is_not_resolved_by_keras():
    """What docs/losses.md says: Keras 3 looks a string loss up among its built-ins only, so
    compile(loss="TripletLoss>...") cannot work; if Keras starts resolving registered
    names, this fails and the docs' advice should change."""
    with pytest.raises(ValueError, match="Could not interpret loss identifier"):
        keras.losses.get("TripletLoss>TripletSemiHardLoss")


def test_unknown_keyword_arguments_are_refused_but_keras_ones_accepted():
    with pytest.raises(TypeError, match="unexpected keyword argument 'distance'"):
        losses.TripletHardLoss(distance="angular")
    loss = losses.TripletSemiHardLoss(reduction="sum_over_batch_size", dtype="float32")
    assert loss.get_config()["margin"] == 1.0


def test_fraction_metric_with_a_custom_distance_round_trips():
    @keras.saving.register_keras_serializable(package="test")
    def doubled_l1(embeddings):
        return 2 * tf.reduce_sum(tf.abs(embeddings[:, None] - embeddings[None]), axis=2)

    metric = losses.FractionPositiveTriplets(margin=0.3, distance_metric=doubled_l1)
    again = losses.FractionPositiveTriplets.from_config(metric.get_config())
    assert again.distance_metric is doubled_l1 and again.margin == 0.3


def test_a_config_naming_tensorflow_addons_loss_loads_with_custom_objects():
    # The loss entry of a model compiled with tfa.losses.TripletSemiHardLoss(margin=0.5)
    # (TFA 0.23's get_config, saved by Keras 2 under TFA's registered name).
    tfa_config = {"class_name": "Addons>TripletSemiHardLoss",
                  "config": {"reduction": "auto", "name": "triplet_semihard_loss",
                             "margin": 0.5, "distance_metric": "L2"}}
    loss = keras.losses.deserialize(
        tfa_config, custom_objects={"Addons>TripletSemiHardLoss": losses.TripletSemiHardLoss})
    assert isinstance(loss, losses.TripletSemiHardLoss)
    assert loss.get_config()["margin"] == 0.5
    labels = tf.constant([0, 0, 1, 1])
    embeddings = tf.constant([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(float(loss(labels, embeddings)),
                               float(losses.TripletSemiHardLoss(margin=0.5)(labels, embeddings)))
