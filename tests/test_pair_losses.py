"""TensorFlow Addons' contrastive, N-pairs and lifted-structure losses (tftriplet/pair_losses.py
and their Keras names in tftriplet/losses.py) against plain numpy transcriptions of TFA
0.23's formulas, TFA's own test values, and every execution mode."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_losses import tiny_data, tiny_model

from tftriplet import losses, pair_losses

# ---------------------------------------------------------------- numpy references
# Written from TFA's published formulas, in float64 with plain loops.


def np_contrastive(same, distances, margin=1.0):
    same, distances = np.asarray(same, np.float64), np.asarray(distances, np.float64)
    return same * distances**2 + (1 - same) * np.maximum(margin - distances, 0.0) ** 2


def np_softmax_cross_entropy(targets, logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -(targets * log_softmax).sum(axis=1)


def np_npairs(labels, similarities):
    labels = np.asarray(labels).reshape(-1)
    targets = (labels[:, None] == labels[None, :]).astype(np.float64)
    targets /= targets.sum(axis=1, keepdims=True)
    return np_softmax_cross_entropy(targets, similarities).mean()


def np_npairs_multilabel(label_sets, similarities):
    label_sets = np.asarray(label_sets, np.float64)
    shared = label_sets @ label_sets.T
    rows = shared.sum(axis=1) > 0
    if not rows.any():
        return 0.0
    targets = shared[rows] / shared[rows].sum(axis=1, keepdims=True)
    return np_softmax_cross_entropy(targets, np.asarray(similarities)[rows]).mean()


def np_lifted(labels, embeddings, margin=1.0):
    labels = np.asarray(labels).reshape(-1)
    embeddings = np.asarray(embeddings, np.float64)
    batch = len(labels)
    distances = np.sqrt(((embeddings[:, None] - embeddings[None]) ** 2).sum(-1))
    total, pairs = 0.0, 0
    for i in range(batch):
        for j in range(batch):
            if i == j or labels[i] != labels[j]:
                continue
            terms = [margin - distances[i, k] for k in range(batch) if labels[k] != labels[i]]
            terms += [margin - distances[j, k] for k in range(batch) if labels[k] != labels[j]]
            if not terms:
                continue
            largest = max(terms)
            j_ij = largest + np.log(sum(np.exp(t - largest) for t in terms)) + distances[i, j]
            total += max(j_ij, 0.0) ** 2
            pairs += 1
    return 0.0 if pairs == 0 else total / pairs / 2.0


# ---------------------------------------------------------------- contrastive

TFA_PAIRS = (np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.3, 1.3, 0.7, 1.1, 0.5], np.float32))


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
def test_contrastive_matches_numpy(margin):
    rng = np.random.default_rng(31)
    same = rng.integers(0, 2, 50)
    distances = rng.uniform(0, 3, 50).astype(np.float32)
    got = losses.contrastive_loss(same, distances, margin)
    np.testing.assert_allclose(got, np_contrastive(same, distances, margin), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(losses.ContrastiveLoss(margin)(same, distances),
                               np_contrastive(same, distances, margin).mean(), rtol=1e-6)


def test_contrastive_gives_tensorflow_addons_test_values():
    same, distances = TFA_PAIRS
    np.testing.assert_allclose(losses.ContrastiveLoss()(same, distances), 0.621666, rtol=1e-6)
    np.testing.assert_allclose(losses.ContrastiveLoss(margin=2.0)(same, distances), 1.623333,
                               rtol=1e-6)
    weights = np.array([1.2, 0.8, 0.5, 0.4, 1.5, 1.0], np.float32)
    np.testing.assert_allclose(losses.ContrastiveLoss()(same, distances, sample_weight=weights),
                               0.4425, rtol=1e-6)
    np.testing.assert_allclose(losses.ContrastiveLoss()(same, distances, sample_weight=6.0),
                               3.73, rtol=1e-6)
    np.testing.assert_allclose(losses.ContrastiveLoss(reduction="none")(same, distances),
                               [0.81, 0.49, 1.69, 0.49, 0.0, 0.25], rtol=1e-5)
    np.testing.assert_allclose(losses.ContrastiveLoss(reduction="sum")(same, distances), 3.73,
                               rtol=1e-6)
    assert float(losses.ContrastiveLoss()(same, [1.0, 1, 0, 0, 1, 0])) == 0.0


def test_contrastive_is_finite_where_tensorflow_addons_was_not():
    # TFA: 0 x inf = NaN for a negative pair at a distance whose square overflows.
    got = losses.contrastive_loss([0, 1], tf.constant([1e30, 1e30]))
    assert got.numpy()[0] == 0.0 and got.numpy()[1] == np.inf
    # A float16 model: the class squares in float32 (TFA's float16 overflowed above 256).
    loss = losses.ContrastiveLoss()([1, 0], tf.constant([300.0, 0.5], tf.float16))
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss, (300.0**2 + 0.25) / 2, rtol=1e-6)


def test_contrastive_one_label_per_distance():
    same, distances = TFA_PAIRS
    column = losses.ContrastiveLoss(reduction="none")(same[:, None], distances)
    assert column.shape == (6,)  # TFA broadcast [B, 1] against [B] to [B, B]
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        losses.ContrastiveLoss()(same[:4], distances)


# ---------------------------------------------------------------- N-pairs

TFA_FEATURES = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
TFA_SIMILARITIES = TFA_FEATURES @ TFA_FEATURES.T


def test_npairs_gives_tensorflow_addons_test_values():
    np.testing.assert_allclose(losses.NpairsLoss()([0, 1, 2, 3], TFA_SIMILARITIES), 0.253856,
                               rtol=1e-6)
    multilabel = losses.NpairsMultilabelLoss()
    np.testing.assert_allclose(multilabel(np.eye(4), TFA_SIMILARITIES), 0.253856, rtol=1e-6)
    sets = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]], np.float32)
    np.testing.assert_allclose(multilabel(sets, TFA_SIMILARITIES), 1.420522, rtol=1e-6)
    np.testing.assert_allclose(multilabel(tf.sparse.from_dense(sets), TFA_SIMILARITIES),
                               1.420522, rtol=1e-6)


@pytest.mark.parametrize("seed", [32, 33])
def test_npairs_match_numpy(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 24)
    similarities = rng.normal(scale=3.0, size=(24, 24)).astype(np.float32)
    np.testing.assert_allclose(losses.npairs_loss(labels, similarities),
                               np_npairs(labels, similarities), rtol=1e-6)
    sets = rng.integers(0, 2, size=(24, 6))
    np.testing.assert_allclose(losses.npairs_multilabel_loss(sets, similarities),
                               np_npairs_multilabel(sets, similarities), rtol=1e-6)


def test_npairs_is_safe_where_tensorflow_addons_was_not():
    # Labels stay integers: in float16, TFA made ids 2048 and 2049 one class.
    similarities = tf.constant(TFA_SIMILARITIES, tf.float16)
    np.testing.assert_allclose(losses.npairs_loss([2048, 2049, 7, 8], similarities),
                               np_npairs([0, 1, 2, 3], TFA_SIMILARITIES), rtol=1e-3)
    # An example without a label has no positive: left out (TFA: NaN).
    sets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], np.float32)
    got = losses.npairs_multilabel_loss(sets, TFA_SIMILARITIES)
    assert np.isfinite(got.numpy())
    np.testing.assert_allclose(got, np_npairs_multilabel(sets, TFA_SIMILARITIES), rtol=1e-6)
    assert float(losses.npairs_multilabel_loss(np.zeros((4, 2)), TFA_SIMILARITIES)) == 0.0
    # Huge logits: the cross-entropy is computed stably.
    assert np.isfinite(float(losses.npairs_loss([0, 0, 1, 1], TFA_SIMILARITIES * 1e4)))


# ---------------------------------------------------------------- lifted structure


def tfa_lifted_batch():
    """TFA's lifted_test batch (its numpy reference: 5.631140514212394)."""
    np.random.seed(0)
    embeddings = np.random.rand(10, 6).astype(np.float32)
    labels = np.random.randint(0, 4, 10).astype(np.float32)
    return labels, embeddings


@pytest.mark.parametrize("dtype,rtol", [(tf.float32, 1e-6), (tf.float16, 1e-3),
                                        (tf.bfloat16, 1e-2)])
def test_lifted_gives_tensorflow_addons_test_value(dtype, rtol):
    labels, embeddings = tfa_lifted_batch()
    embeddings = tf.cast(embeddings, dtype)
    got = losses.lifted_struct_loss(labels, embeddings)
    assert got.dtype == dtype
    np.testing.assert_allclose(float(got), 5.631140514212394, rtol=rtol)
    np.testing.assert_allclose(float(losses.LiftedStructLoss()(labels, embeddings)),
                               5.631140514212394, rtol=rtol)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize("seed,batch,classes", [(34, 16, 3), (35, 30, 6), (36, 9, 2)])
def test_lifted_matches_numpy(seed, batch, classes, scale):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, batch)
    embeddings = (scale * rng.normal(size=(batch, 5))).astype(np.float32)
    for margin in (0.5, 1.0):
        np.testing.assert_allclose(losses.lifted_struct_loss(labels, embeddings, margin),
                                   np_lifted(labels, embeddings, margin), rtol=2e-6)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4], [2, 2, 2, 2, 2]],
                         ids=["no positive pair", "one class"])
def test_lifted_is_zero_with_finite_gradients_where_tensorflow_addons_gave_nan(labels):
    embeddings = tf.constant(np.random.default_rng(37).normal(size=(5, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = losses.lifted_struct_loss(labels, embeddings)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(tape.gradient(loss, embeddings), 0.0)


def test_lifted_with_identical_embeddings_has_finite_gradients():
    labels = [0, 0, 1, 1]
    embeddings = tf.ones((4, 3))
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = losses.lifted_struct_loss(labels, embeddings)
    # d = 0 everywhere: J = log(4 exp(margin - 0)) + 0 for every positive pair (two
    # negatives per row, margin 1).
    np.testing.assert_allclose(float(loss), (np.log(4.0) + 1.0) ** 2 / 2, rtol=1e-6)
    assert np.all(np.isfinite(tape.gradient(loss, embeddings)))


@pytest.mark.parametrize("name", ["contrastive", "npairs", "lifted"])
def test_gradients_match_numerical_differentiation(name):
    rng = np.random.default_rng(38)
    labels = np.array([0, 1, 0, 1, 2, 0])
    if name == "contrastive":
        x = rng.uniform(0.2, 1.5, 6).astype(np.float32)
        function = lambda x: tf.reduce_sum(losses.contrastive_loss(labels % 2, x))  # noqa: E731
    elif name == "npairs":
        x = rng.normal(size=(6, 6)).astype(np.float32)
        function = lambda x: losses.npairs_loss(labels, x)  # noqa: E731
    else:
        x = rng.normal(size=(6, 3)).astype(np.float32)
        function = lambda x: losses.lifted_struct_loss(labels, x)  # noqa: E731
    theoretical, numerical = tf.test.compute_gradient(function, [tf.constant(x)], delta=1e-3)
    assert np.abs(theoretical[0]).max() > 0.01
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-2, atol=2e-3)


# ---------------------------------------------------------------- execution modes

def mode_inputs():
    rng = np.random.default_rng(39)
    labels = rng.integers(0, 3, 12)
    embeddings = rng.normal(size=(12, 4)).astype(np.float32)
    return {"contrastive": (labels % 2, np.abs(embeddings[:, 0])),
            "npairs": (labels, embeddings @ embeddings.T),
            "npairs_multilabel": (np.eye(3)[labels], embeddings @ embeddings.T),
            "lifted": (labels, embeddings)}


FUNCTIONS = {"contrastive": lambda y, x: tf.reduce_mean(losses.contrastive_loss(y, x)),
             "npairs": losses.npairs_loss, "npairs_multilabel": losses.npairs_multilabel_loss,
             "lifted": losses.lifted_struct_loss}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_execution_mode_gives_the_same_value_and_gradient(name):
    y, x = mode_inputs()[name]
    function = FUNCTIONS[name]

    def value_and_gradient(y, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = function(y, x)
        return value, tape.gradient(value, x)

    want = [t.numpy() for t in value_and_gradient(tf.constant(y), tf.constant(x))]
    for jit_compile in (False, True):
        got = tf.function(value_and_gradient, jit_compile=jit_compile)(tf.constant(y),
                                                                        tf.constant(x))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    with tf.Graph().as_default():
        y_input = tf.compat.v1.placeholder(tf.as_dtype(y.dtype), [None, *y.shape[1:]])
        x_input = tf.compat.v1.placeholder(tf.float32, [None, *x.shape[1:]])
        graph = value_and_gradient(y_input, x_input)
        with tf.compat.v1.Session() as session:
            got = session.run(graph, {y_input: y, x_input: x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def pair_model(dim=8):
    """Pairs [B, 2, dim] -> the distance of their two embeddings [B]."""
    keras.utils.set_random_seed(0)
    pairs = keras.Input((2, dim))
    embed = keras.layers.Dense(4)
    first, second = embed(pairs[:, 0]), embed(pairs[:, 1])
    distance = keras.ops.sqrt(keras.ops.sum(keras.ops.square(first - second), axis=1) + 1e-12)
    return keras.Model(pairs, distance)


def similarity_model(dim=8):
    """Examples [B, dim] -> the [B, B] dot products of their embeddings."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((dim,))
    embeddings = keras.layers.Dense(4)(inputs)
    return keras.Model(inputs, keras.ops.matmul(embeddings, keras.ops.transpose(embeddings)))


FIT_CASES = {
    "ContrastiveLoss": (losses.ContrastiveLoss, pair_model,
                        lambda: (np.random.RandomState(0).rand(16, 2, 8).astype(np.float32),
                                 np.arange(16) % 2)),
    "NpairsLoss": (losses.NpairsLoss, similarity_model,
                   lambda: (tiny_data(count=16), np.arange(16) % 4)),
    "LiftedStructLoss": (losses.LiftedStructLoss, tiny_model,
                         lambda: (tiny_data(count=16), np.arange(16) % 4)),
}
REFERENCES = {"ContrastiveLoss": lambda y, out: np_contrastive(y, out).mean(),
              "NpairsLoss": np_npairs, "LiftedStructLoss": np_lifted}


@pytest.mark.parametrize("name", sorted(FIT_CASES))
def test_a_model_compiled_with_the_tfa_class_trains_with_tfa_values(name, tmp_path):
    cls, make_model, make_data = FIT_CASES[name]
    x, y = make_data()
    model = make_model()
    want = REFERENCES[name](y, model(x).numpy())
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=cls())
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], want, rtol=1e-6)
    assert history["loss"][-1] < history["loss"][0]
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is cls and loaded.loss.get_config() == model.loss.get_config()
    assert loaded.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(
        model.evaluate(x, y, batch_size=16, verbose=0), rel=1e-6)


@pytest.mark.e2e
def test_a_mirrored_step_mines_the_global_batch_for_lifted_and_each_replica_for_npairs(
        mirrored_strategy):
    x, y = tiny_data(seed=5, count=16), np.random.RandomState(5).randint(0, 3, size=16)
    for cls, make_model, global_batch in ((losses.LiftedStructLoss, tiny_model, True),
                                          (losses.NpairsLoss, similarity_model, False)):
        outputs = make_model()(x).numpy()
        if global_batch:
            want = np_lifted(y, outputs)
        else:  # each replica's half, its own similarity matrix; the mean of the two
            want = np.mean([np_npairs(y[s], make_model()(x[s]).numpy())
                            for s in (slice(0, 8), slice(8, 16))])
        with mirrored_strategy.scope():
            model = make_model()
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss=cls())
        history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        np.testing.assert_allclose(history["loss"][0], want, rtol=1e-5)


TFA_CONFIGS = {
    # The loss entries of models compiled with TFA 0.23's classes (its get_config, saved by
    # Keras 2 under TFA's registered names).
    "Addons>ContrastiveLoss": (losses.ContrastiveLoss,
                               {"reduction": "auto", "name": "contrastive_loss", "margin": 2.0}),
    "Addons>NpairsLoss": (losses.NpairsLoss, {"reduction": "none", "name": "npairs_loss"}),
    "Addons>NpairsMultilabelLoss": (losses.NpairsMultilabelLoss,
                                    {"reduction": "none", "name": "npairs_multilabel_loss"}),
    "Addons>LiftedStructLoss": (losses.LiftedStructLoss,
                                {"reduction": "none", "name": None, "margin": 0.5}),
}


@pytest.mark.parametrize("name", sorted(TFA_CONFIGS))
def test_a_tensorflow_addons_config_loads_with_custom_objects(name):
    cls, config = TFA_CONFIGS[name]
    loss = keras.losses.deserialize({"class_name": name, "config": config},
                                    custom_objects={name: cls})
    assert isinstance(loss, cls)
    assert keras.saving.get_registered_name(cls) == f"TripletLoss>{cls.__name__}"
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is cls and again.get_config() == loss.get_config()
    if "margin" in config:
        assert loss.get_config()["margin"] == config["margin"]
    if name == "Addons>ContrastiveLoss":
        np.testing.assert_allclose(loss(*TFA_PAIRS), 1.623333, rtol=1e-6)


def test_unknown_keyword_arguments_are_refused():
    with pytest.raises(TypeError, match="margin"):
        losses.NpairsLoss(margin=1.0)
    with pytest.raises(TypeError, match="distance_metric"):
        losses.LiftedStructLoss(distance_metric="angular")


def test_the_pure_functions_return_float32():
    labels, embeddings = tfa_lifted_batch()
    half = tf.cast(embeddings, tf.float16)
    assert pair_losses.lifted_struct(labels, half).dtype == tf.float32
    assert pair_losses.npairs([0, 1], tf.constant([[1.0, 0.0], [0.0, 1.0]], tf.float16)).dtype \
        == tf.float32


# ---------------------------------------------------------------- contrastive strategy


def np_batch_contrastive(labels, embeddings, margin, squared=False):
    labels = np.asarray(labels)
    embeddings = np.asarray(embeddings, np.float64)
    total, positive, pairs = 0.0, 0, 0
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            d2 = np.sum((embeddings[i] - embeddings[j]) ** 2)
            d = d2 if squared else np.sqrt(d2)
            loss = d**2 if labels[i] == labels[j] else max(margin - d, 0.0) ** 2
            pairs += 1
            if loss > 1e-16:
                total += loss
                positive += 1
    return (total / positive if positive else 0.0), (positive / pairs if pairs else 0.0)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", [0.5, 1.0, 3.0])
def test_batch_contrastive_matches_numpy(margin, squared):
    rng = np.random.default_rng(43)
    labels = rng.integers(0, 4, 20)
    embeddings = rng.normal(size=(20, 3)).astype(np.float32)
    embeddings[5] = embeddings[6]  # a pair at distance 0: loss 0 whatever its labels
    got = pair_losses.batch_contrastive_loss(labels, embeddings, margin, squared)
    np.testing.assert_allclose(got, np_batch_contrastive(labels, embeddings, margin, squared),
                               rtol=1e-5)


@pytest.mark.parametrize("labels,embeddings,want", [
    ([3], [[1.0, 2.0]], (0.0, 0.0)),
    ([0, 0, 0], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], (0.0, 0.0)),
    ([0, 1], [[0.0, 0.0], [0.0, 0.0]], (1.0, 1.0)),
    ([0, 1], [[0.0, 0.0], [3.0, 0.0]], (0.0, 0.0)),
])
def test_batch_contrastive_edge_cases(labels, embeddings, want):
    embeddings = tf.constant(embeddings)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss, fraction = pair_losses.batch_contrastive_loss(labels, embeddings, 1.0)
    np.testing.assert_allclose([loss, fraction], want)
    assert np.all(np.isfinite(tape.gradient(loss, embeddings)))


def test_batch_contrastive_is_a_strategy_with_its_summary():
    from tftriplet import triplet_loss

    labels, embeddings = np.array([0, 0, 1, 1]), np.eye(4, 3, dtype=np.float32)
    loss, summaries = triplet_loss.STRATEGIES["contrastive"](labels, embeddings, 1.0)
    want = np_batch_contrastive(labels, embeddings, 1.0)
    np.testing.assert_allclose([loss, summaries["fraction_positive_pairs"]], want, rtol=1e-6)
    with pytest.raises(ValueError, match="no soft margin"):
        triplet_loss.STRATEGIES["contrastive"](labels, embeddings, 1.0, soft_margin=True)


# ---------------------------------------------------------------- offline triplets


def np_offline(anchors, positives, negatives, margin, metric, soft):
    def distance(x, y):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if metric == "angular":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
            y = y / np.linalg.norm(y, axis=1, keepdims=True)
            return np.maximum(1.0 - np.sum(x * y, axis=1), 0.0)
        squared = np.sum((x - y) ** 2, axis=1)
        return squared if metric == "squared-L2" else np.sqrt(squared)

    differences = distance(anchors, positives) - distance(anchors, negatives)
    return np.logaddexp(0.0, differences) if soft else np.maximum(differences + margin, 0.0)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("metric", ["squared-L2", "L2", "angular"])
def test_offline_triplet_loss_matches_numpy(metric, soft):
    triplets = np.random.default_rng(44).normal(size=(30, 3, 4)).astype(np.float32)
    want = np_offline(triplets[:, 0], triplets[:, 1], triplets[:, 2], 0.7, metric, soft)
    got = pair_losses.offline_triplet_losses(triplets[:, 0], triplets[:, 1], triplets[:, 2],
                                             0.7, metric, soft)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    loss = losses.TripletLoss(0.7, distance_metric=metric, soft=soft)
    np.testing.assert_allclose(loss(np.zeros(30), triplets), want.mean(), rtol=1e-5)


def test_offline_triplets_at_distance_zero_have_finite_gradients():
    triplets = tf.constant(np.ones((2, 3, 4), np.float32))
    with tf.GradientTape() as tape:
        tape.watch(triplets)
        loss = losses.TripletLoss(1.0, distance_metric="L2")(np.zeros(2), triplets)
    assert float(loss) == 1.0
    np.testing.assert_array_equal(tape.gradient(loss, triplets), 0.0)


def test_offline_triplet_loss_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match=r"\[batch, 3, embedding_size\]"):
        losses.TripletLoss()(np.zeros(4), np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="unknown distance_metric 'L1'"):
        losses.TripletLoss(distance_metric="L1")


def test_a_three_branch_model_trains_on_offline_triplets_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    embed = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    inputs = keras.Input((3, 8))
    model = keras.Model(inputs, keras.ops.stack([embed(inputs[:, i]) for i in range(3)], axis=1))
    triplets = np.random.RandomState(1).rand(32, 3, 8).astype(np.float32)
    want = np_offline(*(model(triplets).numpy().transpose(1, 0, 2)), 1.0, "squared-L2",
                      False).mean()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.TripletLoss())
    history = model.fit(triplets, np.zeros(32), batch_size=32, epochs=3, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], want, rtol=1e-6)
    assert history["loss"][-1] < history["loss"][0]
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.loss.get_config() == model.loss.get_config()
