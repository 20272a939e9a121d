"""The training loop: checkpoints, resume, summaries, per-epoch evaluation, export.

Layout of a model_dir (``params.json`` is the user's; everything else is written here):

    params_resolved.json    params with defaults filled in, plus software versions
    train.log               one line per epoch
    checkpoints/            model + optimizer + step + epoch + seconds, every epoch
    best/                   the checkpoint with the best eval MAP@R
    train/, eval/           TensorBoard event files (eval/ also holds the HParams record)
    metrics_eval_untrained.json, metrics_eval_last.json, metrics_eval_best.json
    export/, verification.json
"""

import json
import logging
import math
import os
import sys
import time

import keras
import tensorflow as tf

from model import evaluation, export, files, input_fn, mnist_dataset
from model.distribute import is_chief, worker_checkpoint_dir
from model.errors import UserError
from model.evaluation import CHECKPOINT_DIRS
from model.model_fn import (build_model, build_plain_model, make_embed_step, make_loss_step,
                            make_optimizer, make_train_step)
from model.params import RESOLVED_PARAMS_FILENAME, save_params

# The figure that picks the best checkpoint: retrieval quality is comparable across
# strategies and margins, the loss is not.
BEST_METRIC = "map_at_r"
# Keys that may change between a run and its resumption without changing what the
# checkpoints mean (e.g. train for more epochs).
RESUMABLE_CHANGES = ("num_epochs", "save_summary_steps", "keep_checkpoint_max")
METRICS_FILES = {kind: f"metrics_eval_{kind}.json" for kind in ("untrained", "last", "best")}


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def seed_everything(seed):
    """Seed Python, NumPy, TensorFlow and Keras, and make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class Run:
    """The state of one training run in ``model_dir``: model, optimizer, counters, checkpoints.

    ``seconds`` counts the training and evaluation time of the completed epochs; kept in
    the checkpoint, it survives a resume (and excludes the downtime).

    Under a multi-worker strategy every worker saves (saving is a collective operation),
    but only the chief writes into ``model_dir``; the others save into
    ``model_dir/.scratch/worker_N`` (bounded by keep_checkpoint_max like the chief's).
    """

    def __init__(self, params, model_dir, strategy=None):
        self.params = params
        self.model_dir = model_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = is_chief(self.strategy)
        with self.strategy.scope():
            self.model = build_model(params)
            self.optimizer = make_optimizer(params)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step, epoch=self.epoch,
            seconds=self.seconds)
        self.managers = {
            kind: tf.train.CheckpointManager(
                self.checkpoint,
                worker_checkpoint_dir(os.path.join(model_dir, folder), self.strategy),
                max_to_keep=params.keep_checkpoint_max if kind == "latest" else 1,
                checkpoint_name="ckpt")
            for kind, folder in CHECKPOINT_DIRS.items()}

    def restore_latest(self):
        """Restore the chief's latest checkpoint if there is one; returns its path or None."""
        path = tf.train.latest_checkpoint(os.path.join(self.model_dir, CHECKPOINT_DIRS["latest"]))
        if path:
            self.checkpoint.restore(path).expect_partial()
        return path

    def save(self, kind):
        self.managers[kind].save(checkpoint_number=int(self.epoch.numpy()))


def check_model_dir(params, model_dir):
    """Refuse to resume a run whose saved params differ from ``params`` (other than resumable keys)."""
    path = os.path.join(model_dir, RESOLVED_PARAMS_FILENAME)
    has_checkpoint = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if not (os.path.exists(path) and has_checkpoint):
        return
    try:
        with open(path) as f:
            saved = json.load(f)["params"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{path} is unreadable but {model_dir} holds checkpoints; restore the file "
            "or train in a new folder") from None
    current = params.to_dict()
    changed = sorted(k for k in set(saved) | set(current)
                     if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise UserError(
            f"{model_dir} already holds a run trained with other params ({diffs}); "
            "copy params.json to a new folder for a new experiment, or undo the change to resume")


def _format(results):
    return " ".join(f"{name} {value:.4f}" for name, value in results.items())


def _write_scalars(writer, values, step):
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)


def _progress_bar(steps):
    """A progress bar over an epoch's steps, drawn only on an interactive terminal (a log
    file or a pipe gets the one line per epoch, not the bar's redraws)."""
    return keras.utils.Progbar(steps, verbose=1 if sys.stdout.isatty() else 0,
                               stateful_metrics=["loss"])


def _check_finite(loss, step, params):
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the loss became {loss} at step {step}; the last good checkpoint is kept. "
            f"Lower learning_rate (now {params.learning_rate}), or set l2_normalize "
            "true or use_batch_norm true, then run again")


def _metrics_path(model_dir, kind):
    return os.path.join(model_dir, METRICS_FILES[kind])


def train_and_evaluate(params, model_dir, data_dir, strategy=None):
    """Train ``params`` in ``model_dir``, resuming from its latest checkpoint.

    Returns:
        The eval results of the last epoch (dict of floats), or those saved by a run
        that had already finished.
    """
    os.makedirs(model_dir, exist_ok=True)
    check_model_dir(params, model_dir)
    train_images, train_labels = mnist_dataset.load_split(data_dir, "train")
    test_images, test_labels = mnist_dataset.load_split(data_dir, "test")
    input_fn.check_data(train_images, train_labels, params)
    input_fn.check_shapes(test_images, test_labels, params)

    seed_everything(params.seed)
    run = Run(params, model_dir, strategy)
    restored = run.restore_latest()
    if run.epoch.numpy() >= params.num_epochs:
        logging.info("%s already finished %d epochs (step %d); nothing to do. Raise "
                     "num_epochs to train longer.", model_dir, int(run.epoch.numpy()),
                     int(run.step.numpy()))
        if run.chief and not export.has_export(model_dir):  # killed while exporting
            _, embeddings = evaluation.evaluate(make_embed_step(run.model, params),
                                                make_loss_step(params), params, test_images,
                                                test_labels)
            _export(run, params, model_dir, embeddings, test_labels)
        return files.read_json(_metrics_path(model_dir, "last")) or {}
    if run.chief:
        save_params(params, model_dir)
    if restored:
        logging.info("Resuming from %s (epoch %d, step %d)", restored,
                     int(run.epoch.numpy()), int(run.step.numpy()))

    train_step = make_train_step(run.model, run.optimizer, params, run.strategy)
    eval_steps = make_embed_step(run.model, params), make_loss_step(params)
    train_writer, eval_writer = (
        tf.summary.create_file_writer(os.path.join(model_dir, name)) if run.chief
        else tf.summary.create_noop_writer() for name in ("train", "eval"))
    best = -math.inf
    if restored:
        best = (files.read_json(_metrics_path(model_dir, "best")) or {}).get(BEST_METRIC, best)

    if not restored and run.chief:
        _write_hparams(eval_writer, model_dir, params)
        results, _ = evaluation.evaluate(*eval_steps, params, test_images, test_labels)
        _write_scalars(eval_writer, results, 0)
        files.write_json(_metrics_path(model_dir, "untrained"), {"epoch": 0, "step": 0,
                                                                 **results})
        logging.info("Untrained network: %s", _format(results))

    steps = input_fn.steps_per_epoch(len(train_labels), params)
    results = {}
    for epoch in range(int(run.epoch.numpy()), params.num_epochs):
        start = time.time()
        progress = _progress_bar(steps)
        loss_sum = 0.0
        dataset = input_fn.train_dataset(train_images, train_labels, params, epoch)
        for done, (images, labels) in enumerate(dataset, 1):
            loss, summaries = train_step(images, labels)
            step = int(run.step.assign_add(1).numpy())
            loss = float(loss)
            _check_finite(loss, step, params)
            loss_sum += loss
            if step % params.save_summary_steps == 0:
                _write_scalars(train_writer, {"loss": loss, **summaries}, step)
                with train_writer.as_default(step=step):
                    tf.summary.image("train_image", images[:1])
            progress.update(done, [("loss", loss)])
        train_time = time.time() - start
        results, embeddings = evaluation.evaluate(*eval_steps, params, test_images, test_labels)
        run.epoch.assign(epoch + 1)
        run.seconds.assign_add(time.time() - start)
        record = {"epoch": epoch + 1, "step": step,
                  "train_minutes": float(run.seconds.numpy()) / 60, **results}
        # "best" is saved before "latest": a run killed in between redoes this epoch,
        # reaches the same figures (determinism) and finds the best already saved.
        # Every worker holds the same weights, hence the same results: all agree on it.
        if results[BEST_METRIC] > best:
            best = results[BEST_METRIC]
            run.save("best")
            if run.chief:
                files.write_json(_metrics_path(model_dir, "best"), record)
        run.save("latest")
        if run.chief:
            files.write_json(_metrics_path(model_dir, "last"), record)
        _write_scalars(eval_writer, results, step)
        train_writer.flush()
        eval_writer.flush()
        logging.info("epoch %d/%d step %d train_loss %.4f | eval %s | %.1fs (+%.1fs eval)",
                     epoch + 1, params.num_epochs, step, loss_sum / max(done, 1),
                     _format(results), train_time, time.time() - start - train_time)
    if run.chief:
        _export(run, params, model_dir, embeddings, test_labels)
    return results


def _export(run, params, model_dir, embeddings, test_labels):
    """Export the final network and calibrate its same / different threshold."""
    # The export must not depend on the strategy or precision the run was trained with.
    model = build_plain_model(params)
    model.set_weights(run.model.get_weights())
    export.export_model(model, params, model_dir)
    verification = evaluation.write_verification(
        model_dir, embeddings, test_labels[:len(embeddings)], params)
    logging.info("Exported the embedding network to %s; verification threshold %.4f, "
                 "held-out accuracy %.4f", os.path.join(model_dir, export.EXPORT_DIR),
                 verification["threshold"], verification["held_out_accuracy"])


def _write_hparams(eval_writer, model_dir, params):
    """Record the run in TensorBoard's HParams dashboard.

    The record goes into the eval/ run, not the model_dir root: an event file there
    would make TensorBoard list a run named "." (or the folder's name) holding nothing
    else. No experiment config is written: the dashboard then infers the metrics from
    the eval scalars of each run, so every run of a search shows up.
    """
    from tensorboard.plugins.hparams import api as hp

    values = {key: value for key, value in params.to_dict().items() if value is not None}
    with eval_writer.as_default():
        hp.hparams(values, trial_id=os.path.basename(os.path.abspath(model_dir)))
