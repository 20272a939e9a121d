"""tf.distribute with global triplet mining, multi-worker training and mixed precision."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, tiny_params
from model import distribute, evaluation, training
from model.network import (build_model, compute_loss, make_optimizer, make_train_step,
                           precision_policy)
from model.errors import UserError
from model.params import Params

# End to end: scripts in subprocesses and whole trainings (pytest -m "not e2e" skips them).
pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 31  # odd: the replicas get 15 and 16 examples


def one_step(params, strategy, initial_weights, images, labels):
    # Plain SGD: the update is proportional to the gradient, so a gradient counted twice
    # (or a replica's share missing) shows; Adam's first step would hide the scale.
    with strategy.scope():
        model = build_model(params)
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
    model.set_weights(initial_weights)
    loss, summaries = make_train_step(model, optimizer, params, strategy)(images, labels)
    return float(loss), {k: float(v) for k, v in summaries.items()}, model.get_weights()


@pytest.mark.parametrize("changes", [
    dict(triplet_strategy="batch_all"),
    dict(triplet_strategy="batch_all", soft_margin=True, squared=True),
    dict(triplet_strategy="batch_hard"),
    dict(triplet_strategy="batch_semihard", use_batch_norm=True),
    dict(triplet_strategy="batch_hard", l2_normalize=True, use_batch_norm=True),
])
def test_mirrored_step_equals_single_device_step(changes, mirrored_strategy):
    single = tiny_params(**changes)
    mirrored = single.replace(distribution="mirrored")
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((BATCH, 28, 28, 1), dtype=np.float32))
    labels = tf.constant(rng.integers(0, 4, BATCH), tf.int64)
    keras.utils.set_random_seed(1)
    initial = build_model(single).get_weights()

    loss_1, summaries_1, weights_1 = one_step(
        single, tf.distribute.get_strategy(), initial, images, labels)
    loss_2, summaries_2, weights_2 = one_step(
        mirrored, mirrored_strategy, initial, images, labels)

    assert loss_2 == pytest.approx(loss_1, rel=1e-5)
    assert summaries_2 == pytest.approx(summaries_1, rel=1e-5)
    changed = False
    for before, a, b in zip(initial, weights_1, weights_2):
        np.testing.assert_allclose(b - before, a - before, rtol=1e-3, atol=1e-6)
        changed |= not np.array_equal(a, before)
    assert changed, "the step must update the weights"


def test_mirrored_training_resumes_like_an_uninterrupted_run(tmp_path, tiny_data_dir,
                                                            mirrored_strategy):
    # Weights are compared run against run under the same strategy: Adam turns the
    # round-off of a different summation order (one device vs two) into visibly
    # different updates of near-zero gradients, so a single-device run is no reference
    # over many steps (test_mirrored_step_equals_single_device_step covers one step).
    params = tiny_params(distribution="mirrored")
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    training.train_and_evaluate(params, straight, tiny_data_dir, mirrored_strategy)
    training.train_and_evaluate(params.replace(num_epochs=1), resumed, tiny_data_dir,
                                mirrored_strategy)
    results = training.train_and_evaluate(params, resumed, tiny_data_dir, mirrored_strategy)
    last = json.load(open(os.path.join(resumed, "metrics_eval_last.json")))
    assert last["epoch"] == 2 and results["map_at_r"] == last["map_at_r"]
    for a, b in zip(evaluation.restore_model(straight, params)[0].get_weights(),
                    evaluation.restore_model(resumed, params)[0].get_weights()):
        np.testing.assert_array_equal(a, b)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_training_gives_identical_weights(tmp_path, tiny_data_dir):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps(
        dict(TINY, num_epochs=1, distribution="multi_worker")))
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "train.py", "--model_dir", str(model_dir), "--data_dir",
             tiny_data_dir], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=420)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    params = tiny_params(num_epochs=1)
    chief = evaluation.restore_model(str(model_dir), params)[0].get_weights()
    scratch = model_dir / ".scratch" / "worker_1" / "checkpoints"
    other = build_model(params)
    tf.train.Checkpoint(model=other).restore(tf.train.latest_checkpoint(str(scratch))
                                             ).expect_partial()
    for a, b in zip(chief, other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (model_dir / "metrics_eval_best.json").exists()
    assert "epoch 1/1" in (model_dir / "train.log").read_text()


def test_multi_worker_without_tf_config_is_a_user_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG is not set"):
        distribute.make_strategy(Params().replace(distribution="multi_worker"))


def test_mixed_precision_loss_close_to_float32():
    params = tiny_params()
    rng = np.random.default_rng(3)
    images = tf.constant(rng.random((32, 28, 28, 1), dtype=np.float32))
    labels = tf.constant(rng.integers(0, 4, 32), tf.int64)
    keras.utils.set_random_seed(2)
    reference = build_model(params)
    mixed_params = params.replace(mixed_precision=True)
    assert precision_policy(mixed_params) == "mixed_bfloat16"  # no GPU here
    mixed = build_model(mixed_params)
    assert mixed.get_layer("block_1_conv").compute_dtype == "bfloat16"
    make_optimizer(mixed_params)
    distribute.make_strategy(mixed_params)
    # Set on the layers, never globally: the caller's own Keras models stay float32.
    assert keras.mixed_precision.global_policy().name == "float32"
    mixed.set_weights(reference.get_weights())
    embeddings_32, embeddings_16 = reference(images), mixed(images)
    assert embeddings_16.dtype == tf.float32
    for strategy in ("batch_all", "batch_hard", "batch_semihard"):
        p = params.replace(triplet_strategy=strategy)
        loss_32, _ = compute_loss(p, labels, embeddings_32)
        loss_16, _ = compute_loss(p, labels, embeddings_16)
        assert float(loss_16) == pytest.approx(float(loss_32), rel=2e-2, abs=1e-3)
