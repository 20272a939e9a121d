"""Embedding, evaluation and checkpoint restore (model/evaluation.py)."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_params
from model import evaluation, network
from model.errors import UserError

STRATEGIES = ("batch_all", "batch_hard", "batch_semihard")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_evaluate_averages_the_loss_over_training_sized_batches(monkeypatch, strategy):
    from conftest import synthetic_digits
    from tftriplet import metrics, triplet_loss

    params = tiny_params(triplet_strategy=strategy, eval_size=90)  # batches 32, 32, 26
    images, labels = synthetic_digits(100, seed=3)
    model = network.build_model(params)
    # Embedding batches that do not line up with the loss batches.
    monkeypatch.setattr(evaluation, "EMBED_BATCH_SIZE", 40)
    results, embeddings = evaluation.evaluate(
        network.make_embed_step(model, params), network.make_loss_step(params), params,
        images, labels)

    want_embeddings = model(images[:90, :, :, None].astype(np.float32) / 255.0).numpy()
    np.testing.assert_allclose(embeddings, want_embeddings, rtol=1e-5, atol=1e-6)
    loss_fn = {"batch_all": triplet_loss.batch_all_triplet_loss,
               "batch_hard": triplet_loss.batch_hard_triplet_loss,
               "batch_semihard": triplet_loss.batch_semihard_triplet_loss}[strategy]
    batch_losses = [tf.nest.flatten(loss_fn(labels[:90][i:i + 32], want_embeddings[i:i + 32], 0.5))[0]
                    for i in (0, 32, 64)]
    np.testing.assert_allclose(results["loss"], np.average(batch_losses, weights=[32, 32, 26]),
                               rtol=1e-4)
    want_retrieval = metrics.retrieval_metrics(want_embeddings, labels[:90])
    for name, value in want_retrieval.items():
        assert results[name] == pytest.approx(value, abs=1e-6)


def test_restore_without_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        evaluation.restore_model(str(tmp_path), tiny_params())


def test_verification_file_round_trip_and_missing(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    embeddings = (labels[:, None] * 3.0 + rng.normal(size=(100, 2))).astype(np.float32)
    record = evaluation.write_verification(str(tmp_path), embeddings, labels,
                                           tiny_params(seed=1), epoch=3)
    assert evaluation.read_verification(str(tmp_path)) == record
    assert record["held_out_accuracy"] > 0.9 and record["epoch"] == 3
    with pytest.raises(UserError, match="no valid calibrated threshold"):
        evaluation.read_verification(str(tmp_path / "elsewhere"))


def test_embed_images_in_batches_equals_one_pass(monkeypatch):
    from conftest import synthetic_digits

    params = tiny_params()
    images, _ = synthetic_digits(25, seed=4)
    model = network.build_model(params)
    monkeypatch.setattr(evaluation, "EMBED_BATCH_SIZE", 7)
    embeddings = evaluation.embed_images(model, images, params)
    assert embeddings.dtype == np.float32 and embeddings.shape == (25, 8)
    want = model(images[..., None].astype(np.float32) / 255.0).numpy()
    np.testing.assert_allclose(embeddings, want, rtol=1e-5, atol=1e-6)


def test_angular_runs_compare_normalised_embeddings():
    embeddings = np.array([[3.0, 4.0], [0.0, 0.5], [0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(evaluation.comparable(embeddings, tiny_params()), embeddings)
    unit = evaluation.comparable(embeddings, tiny_params(distance="angular"))
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 1.0], [0.0, 0.0]], rtol=1e-6)


@pytest.mark.e2e
def test_evaluate_with_the_training_set_as_reference_reports_knn_accuracy(trained_run, tmp_path):
    import json
    import shutil

    from sklearn.neighbors import KNeighborsClassifier

    from model import datasets
    from model.params import load_params

    source, data_dir = trained_run
    model_dir = str(tmp_path / "run")
    shutil.copytree(source, model_dir)
    params = load_params(model_dir)
    results = evaluation.evaluate_checkpoint(params, model_dir, data_dir, knn_k=3)
    with open(tmp_path / "run" / "metrics_eval.json") as f:
        record = json.load(f)
    assert record["knn_accuracy"] == results["knn_accuracy"]
    assert record["knn_reference"] == {"split": "train", "num_images": 240, "k": 3}
    # The same vote by scikit-learn on the same embeddings.
    data = datasets.load(params, data_dir, model_dir)
    model, _ = evaluation.restore_model(model_dir, params)
    test = evaluation.embed_images(model, data.test[0][:params.eval_size], params)
    train = evaluation.embed_images(model, data.train[0], params)
    classifier = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(train, data.train[1])
    want = np.mean(classifier.predict(test) == data.test[1][:params.eval_size])
    assert results["knn_accuracy"] == pytest.approx(want, abs=1e-12)


def test_knn_arguments_are_checked_before_anything_loads(tmp_path):
    from model.commands import evaluate as command

    args = command.parse_args(["--model_dir", str(tmp_path), "--reference", "train", "--k", "5"])
    assert (args.reference, args.k) == ("train", 5)
    assert command.parse_args(["--model_dir", str(tmp_path)]).reference == "none"
    with pytest.raises(UserError, match="add --reference train"):
        command.parse_args(["--model_dir", str(tmp_path), "--k", "5"])
    with pytest.raises(UserError, match="not at least 1"):
        command.parse_args(["--model_dir", str(tmp_path), "--reference", "train", "--k", "0"])


def test_knn_is_refused_on_an_open_set_split_and_for_too_many_neighbours():
    with pytest.raises(UserError, match="test classes 3, 4 never appear among the training"):
        evaluation._check_knn_reference(np.array([0, 1, 2]), np.array([3, 4, 0]), 1)
    with pytest.raises(UserError, match="--k is 4 but the training split holds 3"):
        evaluation._check_knn_reference(np.array([0, 1, 2]), np.array([0, 1]), 4)
