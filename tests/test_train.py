"""End-to-end training on tiny synthetic IDX data (model/training.py, train.py, evaluate.py)."""

import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from model import (datasets, evaluation, network, pipelines, run_folder, search, state,
                   training)
from model.errors import UserError
from conftest import TINY, run_script, tiny_params, write_image_folders

# End to end: scripts in subprocesses and whole trainings (pytest -m "not e2e" skips them).
pytestmark = pytest.mark.e2e

SUMMARY_TAGS = {
    "batch_all": {"loss", "fraction_positive_triplets", "embedding_mean_norm"},
    "batch_hard": {"loss", "hardest_positive_dist", "hardest_negative_dist", "embedding_mean_norm"},
    "batch_semihard": {"loss", "embedding_mean_norm"},
}
RETRIEVAL = {"precision_at_1", "r_precision", "map_at_r", "recall_at_1", "recall_at_2", "recall_at_4",
             "recall_at_8"}


def event_tags(folder):
    tags = set()
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def scalars(folder, tag):
    """{step: value} of the scalar ``tag`` in the event files of ``folder``."""
    values = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def weights_of(model_dir, checkpoint="latest", params=None):
    model, _ = evaluation.restore_model(model_dir, params or tiny_params(), checkpoint)
    return [w.numpy() for w in model.weights]


@pytest.mark.parametrize("strategy", sorted(SUMMARY_TAGS))
def test_two_epochs_write_checkpoints_summaries_and_metrics(tmp_path, tiny_data_dir, strategy):
    model_dir = str(tmp_path / "run")
    params = tiny_params(triplet_strategy=strategy)
    results = training.train_and_evaluate(params, model_dir, tiny_data_dir)

    assert {"loss", "embedding_mean_norm"} | RETRIEVAL <= set(results)
    assert all(np.isfinite(v) for v in results.values())
    steps = pipelines.steps_per_epoch(240, params)
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-2")
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "best"))
    assert event_tags(os.path.join(model_dir, "train")) == SUMMARY_TAGS[strategy] | {"train_image"}
    # The HParams record lives in eval/: an event file in the model_dir root would make
    # TensorBoard list a phantom run.
    assert event_tags(os.path.join(model_dir, "eval")) == (
        SUMMARY_TAGS[strategy] | RETRIEVAL | {"embedding_spread", "collapsed",
                                              "_hparams_/session_start_info",
                                              "_hparams_/experiment", "custom_scalars__config__"})
    assert not glob.glob(os.path.join(model_dir, "events.out.tfevents.*"))
    last = json.load(open(os.path.join(model_dir, "metrics_eval_last.json")))
    assert last["epoch"] == 2 and last["step"] == 2 * steps
    assert last["train_minutes"] > 0
    best = json.load(open(os.path.join(model_dir, "metrics_eval_best.json")))
    assert best["map_at_r"] >= last["map_at_r"]
    untrained = json.load(open(os.path.join(model_dir, "metrics_eval_untrained.json")))
    assert untrained["epoch"] == 0 and RETRIEVAL <= set(untrained)
    saved = json.load(open(os.path.join(model_dir, "params_resolved.json")))
    assert saved["params"]["triplet_strategy"] == strategy
    assert saved["versions"]["tensorflow"] == tf.__version__


def test_angular_distance_trains_end_to_end(tmp_path, tiny_data_dir):
    from tftriplet import triplet_loss

    params = tiny_params(num_epochs=1, distance="angular", margin=0.2)
    labels = np.arange(12) % 3
    embeddings = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    loss, _ = network.compute_loss(params, labels, embeddings)
    want, _ = triplet_loss.batch_all_triplet_loss(labels, embeddings, 0.2, distance="angular")
    assert float(loss) == float(want) != float(network.compute_loss(
        params.replace(distance=None), labels, embeddings)[0])
    results = training.train_and_evaluate(params, str(tmp_path / "run"), tiny_data_dir)
    assert all(np.isfinite(v) for v in results.values())


def test_training_improves_retrieval(tmp_path, tiny_data_dir):
    model_dir = str(tmp_path / "run")
    training.train_and_evaluate(tiny_params(num_epochs=3), model_dir, tiny_data_dir)
    map_at_r = scalars(os.path.join(model_dir, "eval"), "map_at_r")
    assert 0 in map_at_r, "the untrained network is evaluated at step 0"
    assert map_at_r[max(map_at_r)] > map_at_r[0]
    # A run that learns is never reported as collapsed (model/collapse.py).
    assert list(scalars(os.path.join(model_dir, "eval"), "collapsed").values()) == [0.0] * 3


def test_resume_continues_and_finished_run_does_nothing(tmp_path, tiny_data_dir):
    model_dir = str(tmp_path / "run")
    training.train_and_evaluate(tiny_params(num_epochs=1), model_dir, tiny_data_dir)
    first = json.load(open(os.path.join(model_dir, "metrics_eval_last.json")))
    steps = pipelines.steps_per_epoch(240, tiny_params())
    results = training.train_and_evaluate(tiny_params(num_epochs=2), model_dir, tiny_data_dir)
    last = json.load(open(os.path.join(model_dir, "metrics_eval_last.json")))
    assert last["epoch"] == 2 and last["step"] == 2 * steps
    # The training time is carried in the checkpoint across the resume.
    assert last["train_minutes"] > first["train_minutes"] > 0
    mtime = os.path.getmtime(os.path.join(model_dir, "checkpoints", "checkpoint"))
    again = training.train_and_evaluate(tiny_params(num_epochs=2), model_dir, tiny_data_dir)
    assert os.path.getmtime(os.path.join(model_dir, "checkpoints", "checkpoint")) == mtime
    assert again["map_at_r"] == pytest.approx(results["map_at_r"])
    # A run killed while exporting exports when it is run again.
    shutil.rmtree(os.path.join(model_dir, "export"))
    training.train_and_evaluate(tiny_params(num_epochs=2), model_dir, tiny_data_dir)
    assert os.path.isfile(os.path.join(model_dir, "export", "saved_model.pb"))
    assert os.path.getmtime(os.path.join(model_dir, "checkpoints", "checkpoint")) == mtime


AUGMENTED = dict(augment_translate=2, augment_crop=0.8, augment_brightness=0.1,
                 augment_contrast=0.1)


@pytest.mark.parametrize("data", ["idx", "idx augmented", "idx cosine", "folders augmented",
                                  "folders grey cached"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, tiny_data_dir, monkeypatch,
                                                       data):
    params = tiny_params(**(AUGMENTED if "augmented" in data else {}))
    if "cosine" in data:
        params = params.replace(learning_rate_schedule="cosine")
    if data.startswith("folders"):
        tiny_data_dir = write_image_folders(tmp_path / "folders", sizes=[(28, 28), (30, 24)])
        params = params.replace(image_channels=1 if "grey" in data else 3, augment_flip=True,
                                cache="file" if "cached" in data else None)
    straight = str(tmp_path / "straight")
    training.train_and_evaluate(params, straight, tiny_data_dir)

    resumed = str(tmp_path / "resumed")
    real_train_dataset = pipelines.train_dataset

    def dies_in_second_epoch(images, labels, params, epoch):
        for batch_index, batch in enumerate(real_train_dataset(images, labels, params, epoch)):
            if epoch == 1 and batch_index == 3:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(pipelines, "train_dataset", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        training.train_and_evaluate(params, resumed, tiny_data_dir)
    assert tf.train.latest_checkpoint(os.path.join(resumed, "checkpoints")).endswith("ckpt-1")
    monkeypatch.setattr(pipelines, "train_dataset", real_train_dataset)
    training.train_and_evaluate(params, resumed, tiny_data_dir)

    for a, b in zip(weights_of(straight, params=params), weights_of(resumed, params=params)):
        np.testing.assert_array_equal(a, b)


def test_nan_guard_names_step_and_keeps_checkpoint(tmp_path, tiny_data_dir, monkeypatch):
    model_dir = str(tmp_path / "run")
    training.train_and_evaluate(tiny_params(num_epochs=1), model_dir, tiny_data_dir)
    before = weights_of(model_dir)
    real_compute_loss = network.compute_loss

    def diverging(params, labels, embeddings):
        loss, summaries = real_compute_loss(params, labels, embeddings)
        return loss + np.inf, summaries

    monkeypatch.setattr(network, "compute_loss", diverging)
    steps = pipelines.steps_per_epoch(240, tiny_params())
    with pytest.raises(training.TrainingDiverged, match=f"at step {steps + 1};"):
        training.train_and_evaluate(tiny_params(), model_dir, tiny_data_dir)
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-1")
    for a, b in zip(before, weights_of(model_dir)):
        np.testing.assert_array_equal(a, b)


def test_changed_params_refuse_to_resume(tmp_path, tiny_data_dir):
    model_dir = str(tmp_path / "run")
    training.train_and_evaluate(tiny_params(num_epochs=1), model_dir, tiny_data_dir)
    files = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    with pytest.raises(UserError, match=r"margin: 0.5 -> 0.3"):
        training.train_and_evaluate(tiny_params(margin=0.3), model_dir, tiny_data_dir)
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == files


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_cli_help(script):
    result = run_script(script, "--help")
    assert result.returncode == 0 and "--model_dir" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["train.py"], "--model_dir"),
    (["train.py", "--model_dir", "MISSING"], "no params file"),
    (["evaluate.py", "--model_dir", "MISSING"], "no params file"),
    (["evaluate.py", "--model_dir", "experiments/base_model", "--checkpoint", "first"],
     "invalid choice"),
])
def test_cli_bad_arguments_exit_2(tmp_path, args, fragment):
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    result = run_script(*args)
    assert result.returncode == 2
    assert fragment in result.stderr


def test_cli_broken_params_exit_2_and_touch_nothing(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "params.json").write_text('{"batch_size": 32,}')
    result = run_script("train.py", "--model_dir", str(model_dir))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not valid JSON" in result.stderr
    assert sorted(os.listdir(model_dir)) == ["params.json"]


def test_cli_train_then_evaluate(tmp_path, tiny_data_dir):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps({**TINY, "num_epochs": 1}))
    result = run_script("train.py", "--model_dir", str(model_dir), "--data_dir", tiny_data_dir)
    assert result.returncode == 0, result.stderr
    log = (model_dir / "train.log").read_text()
    assert "epoch 1/1" in log and "map_at_r" in log
    result = run_script("evaluate.py", "--model_dir", str(model_dir), "--data_dir",
                        tiny_data_dir, "--checkpoint", "best")
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(model_dir / "metrics_eval.json"))
    assert RETRIEVAL <= set(metrics) and metrics["checkpoint"].endswith("ckpt-1")
    # What was evaluated, in the file and on the console.
    assert (metrics["epoch"], metrics["data_dir"], metrics["num_images"]) == (
        1, os.path.abspath(tiny_data_dir), 100)
    assert (f"Evaluating {metrics['checkpoint']} (epoch 1) on the first 100 test images of "
            f"{os.path.abspath(tiny_data_dir)}") in result.stderr
    # Only a label file of the user's own data: an error naming the missing file.
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(os.path.join(tiny_data_dir, "train-labels-idx1-ubyte.gz"), partial)
    missing = run_script("train.py", "--model_dir", str(model_dir), "--data_dir", str(partial))
    assert missing.returncode == 2 and "train-images-idx3-ubyte" in missing.stderr


def test_cli_on_image_folders_trains_evaluates_visualizes_and_embeds(tmp_path):
    """PNG and JPEG, grey and RGB, several sizes, a class only in test/: the whole app."""
    data_dir = write_image_folders(tmp_path / "data", num_train=120, num_test=48, num_classes=4,
                                   colour="mixed", sizes=[(28, 28), (36, 28), (20, 24)])
    unseen = os.path.join(data_dir, "test", "unseen class")
    shutil.copytree(os.path.join(data_dir, "test", "class_0"), unseen)
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps({
        **TINY, "num_epochs": 1, "image_size": 24, "image_channels": 3, "num_conv_blocks": 3,
        "eval_size": 1000, "augment_translate": 2, "augment_flip": True, "cache": "file"}))
    result = run_script("train.py", "--model_dir", str(model_dir), "--data_dir", data_dir)
    assert result.returncode == 0, result.stderr
    assert "3 sizes" in result.stderr and "1 test class(es) are not in" in result.stderr
    record = json.load(open(model_dir / "dataset.json"))
    assert record["class_names"] == ["class_0", "class_1", "class_2", "class_3", "unseen class"]
    assert json.load(open(model_dir / "params_resolved.json"))["params"]["num_labels"] == 4
    assert os.listdir(model_dir / "cache")

    result = run_script("evaluate.py", "--model_dir", str(model_dir), "--data_dir", data_dir)
    assert result.returncode == 0, result.stderr
    evaluated = json.load(open(model_dir / "metrics_eval.json"))
    last = json.load(open(model_dir / "metrics_eval_last.json"))
    assert evaluated["map_at_r"] == pytest.approx(last["map_at_r"])

    result = run_script("visualize_embeddings.py", "--model_dir", str(model_dir), "--data_dir",
                        data_dir)
    assert result.returncode == 0, result.stderr
    names = (model_dir / "projector" / "metadata.tsv").read_text().splitlines()
    assert len(names) == 60 and set(names) == set(record["class_names"])
    sprite = tf.io.decode_png(tf.io.read_file(str(model_dir / "projector" / "sprite.png"))).numpy()
    assert sprite.shape == (8 * 24, 8 * 24, 3)  # ceil(sqrt(60)) = 8 colour cells of 24 px
    assert os.path.getsize(model_dir / "embeddings.png") > 0

    first, second = (os.path.join(data_dir, "test", name, sorted(os.listdir(
        os.path.join(data_dir, "test", name)))[0]) for name in ("class_0", "class_1"))
    result = run_script("embed.py", "--model_dir", str(model_dir), "--resize", first, second)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[") == 2 and "threshold" in result.stdout
    module = tf.saved_model.load(str(model_dir / "export"))
    assert module.signatures["serving_default"].structured_input_signature[1][
        "images"].shape.as_list() == [None, 24, 24, 3]


def test_a_folder_run_whose_file_disappeared_stops_with_one_line_and_keeps_its_epochs(tmp_path):
    data_dir = write_image_folders(tmp_path / "data", num_train=64, num_test=24, num_classes=4)
    model_dir = str(tmp_path / "run")
    params = tiny_params(num_epochs=1, image_channels=3, train_size=64)
    training.train_and_evaluate(params, model_dir, data_dir)
    gone = json.load(open(os.path.join(model_dir, "dataset.json")))["train"]["files"][5]
    os.remove(os.path.join(data_dir, gone))
    with pytest.raises(UserError, match="cannot be read or decoded any more .*" + re.escape(gone)):
        training.train_and_evaluate(params.replace(num_epochs=2), model_dir, data_dir)
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-1")


def test_a_folder_run_resumed_on_other_classes_is_refused_untouched(tmp_path):
    first = write_image_folders(tmp_path / "first", num_train=64, num_test=24, num_classes=4)
    other = write_image_folders(tmp_path / "other", num_train=64, num_test=24, num_classes=3)
    model_dir = str(tmp_path / "run")
    params = tiny_params(num_epochs=1, train_size=64)
    training.train_and_evaluate(params, model_dir, first)
    def written():  # (the lock file is the refused run's own)
        return {name: os.path.getmtime(os.path.join(model_dir, name))
                for name in os.listdir(model_dir) if name != ".lock"}

    before = written()
    with pytest.raises(UserError, match="was trained on 4 classes .* but the data now has 3"):
        training.train_and_evaluate(params.replace(num_epochs=2), model_dir, other)
    assert written() == before


@pytest.mark.parametrize("layout, message", [
    ({"train/loose.png"}, "holds images outside class folders"),
    ({"train/a/broken.png", "train/b/broken.png"}, "holds no image that decodes"),
])
def test_cli_unusable_folders_exit_2_and_write_nothing(tmp_path, layout, message):
    for relative in layout:
        path = tmp_path / "data" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not an image")
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps({**TINY, "image_channels": 3}))
    result = run_script("train.py", "--model_dir", str(model_dir), "--data_dir",
                        str(tmp_path / "data"))
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    # Only the log of what was skipped on the way, if anything was.
    assert set(os.listdir(model_dir)) <= {".lock", "params.json", "train.log"}


def test_a_validation_split_chooses_the_best_and_the_test_set_only_scores_it(tmp_path,
                                                                              tiny_data_dir):
    model_dir = str(tmp_path / "run")
    params = tiny_params(validation_size=40)
    training.train_and_evaluate(params, model_dir, tiny_data_dir)
    last = json.load(open(os.path.join(model_dir, "metrics_eval_last.json")))
    assert last["step"] == 2 * pipelines.steps_per_epoch(200, params)  # 40 images held out
    data = datasets.hold_out_validation(datasets.load(params, tiny_data_dir))
    model, _ = evaluation.restore_model(model_dir, params, "latest")
    steps = network.make_embed_step(model, params), network.make_loss_step(params)
    on_validation, _ = evaluation.evaluate(*steps, params, *data.validation)
    assert last["map_at_r"] == pytest.approx(on_validation["map_at_r"])
    best = json.load(open(os.path.join(model_dir, "metrics_eval_best.json")))
    tested_path = os.path.join(model_dir, run_folder.TEST_BEST_FILE)
    tested = json.load(open(tested_path))
    assert tested["epoch"] == best["epoch"] and tested["selected_on"] == "validation"
    on_test = evaluation.evaluate_checkpoint(params, model_dir, tiny_data_dir, "best")
    assert tested["map_at_r"] == pytest.approx(on_test["map_at_r"])
    assert tested["map_at_r"] != pytest.approx(best["map_at_r"])
    # A rerun of the finished run rewrites a lost test record, the same.
    os.remove(tested_path)
    training.train_and_evaluate(params, model_dir, tiny_data_dir)
    assert json.load(open(tested_path)) == pytest.approx(tested)


def test_an_open_set_run_chooses_on_held_out_classes_and_tests_on_unseen_ones(tmp_path,
                                                                              tiny_data_dir):
    model_dir = str(tmp_path / "run")
    params = tiny_params(num_epochs=1, train_classes=[0, 1, 2, 3, 4, 5, 6],
                         test_classes=[7, 8, 9], validation_classes=2)
    training.train_and_evaluate(params, model_dir, tiny_data_dir)
    held_out = datasets.for_training(params, tiny_data_dir, None).validation
    model, _ = evaluation.restore_model(model_dir, params, "latest")
    steps = network.make_embed_step(model, params), network.make_loss_step(params)
    last = json.load(open(os.path.join(model_dir, "metrics_eval_last.json")))
    assert last["map_at_r"] == pytest.approx(
        evaluation.evaluate(*steps, params, *held_out)[0]["map_at_r"])
    assert last["step"] == pipelines.steps_per_epoch(5 * 24, params)  # 5 classes train
    tested = json.load(open(os.path.join(model_dir, run_folder.TEST_BEST_FILE)))
    on_unseen = evaluation.evaluate_checkpoint(params, model_dir, tiny_data_dir, "best")
    assert tested["selected_on"] == "validation"
    for name in ("map_at_r", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8"):
        assert tested[name] == pytest.approx(on_unseen[name]), name
    assert tested["recall_at_1"] == tested["precision_at_1"]
    # The untrained network on the unseen classes: the baseline of the tested figures.
    untrained = json.load(open(os.path.join(model_dir, run_folder.TEST_UNTRAINED_FILE)))
    data = datasets.for_training(params, tiny_data_dir, None)
    training.seed_everything(params.seed)
    fresh = state.Run(params, str(tmp_path / "fresh"),
                      steps_per_epoch=pipelines.steps_per_epoch(len(data.train[1]), params))
    assert untrained["map_at_r"] == pytest.approx(fresh.evaluate(data.test)[0]["map_at_r"])
    (row_name, row), = search.collect_results(str(tmp_path))
    assert row["untrained_map_at_r"] == untrained["map_at_r"]


def test_the_cosine_schedule_decays_from_the_learning_rate_to_zero_over_the_run():
    params = tiny_params(num_epochs=4, learning_rate=0.01, learning_rate_schedule="cosine")
    optimizer = network.make_optimizer(params, steps_per_epoch=25)
    rates = []
    for step in (0, 50, 100):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates == pytest.approx([0.01, 0.005, 0.0], abs=1e-7)
    assert float(network.make_optimizer(tiny_params(), 25).learning_rate) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        network.make_optimizer(params)


def test_a_run_too_short_for_its_summary_steps_says_so(tmp_path, tiny_data_dir, caplog):
    training.train_and_evaluate(tiny_params(num_epochs=1, save_summary_steps=50),
                                str(tmp_path / "run"), tiny_data_dir)
    assert any("training curves will have 0 points (8 steps, a summary every "
               "save_summary_steps = 50); lower save_summary_steps to 1" in r.getMessage()
               for r in caplog.records)
