"""Training and evaluation loops: checkpoints, resume, summaries, metrics files.

Layout of a model_dir (``params.json`` is the user's; everything else is written here):

    params_resolved.json    params with defaults filled in, plus software versions
    train.log               one line per epoch
    checkpoints/            model + optimizer + step + epoch, every epoch
    best/                   the checkpoint with the best eval MAP@R
    train/, eval/           TensorBoard event files
    metrics_eval_last.json, metrics_eval_best.json
"""

import json
import logging
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from model import export, input_fn, metrics, mnist_dataset
from model.distribute import is_chief, worker_checkpoint_dir
from model.model_fn import (build_model, make_embed_step, make_loss_step, make_optimizer,
                            make_train_step)
from model.utils import RESOLVED_PARAMS_FILENAME, UserError, save_params, write_json

CHECKPOINT_DIRS = {"latest": "checkpoints", "best": "best"}
# Images per forward pass when only embeddings are needed: large enough to be quick,
# small enough for any machine (~100 MB of first-layer activations in float32).
EMBED_BATCH_SIZE = 1000
# The figure that picks the best checkpoint: retrieval quality is comparable across
# strategies and margins, the loss is not.
BEST_METRIC = "map_at_r"
# Keys that may change between a run and its resumption without changing what the
# checkpoints mean (e.g. train for more epochs).
RESUMABLE_CHANGES = ("num_epochs", "save_summary_steps", "keep_checkpoint_max")


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def seed_everything(seed):
    """Seed Python, NumPy, TensorFlow and Keras, and make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class Run:
    """The state of one training run in ``model_dir``: model, optimizer, counters, checkpoints.

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
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step, epoch=self.epoch)
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


def embed_images(model, images, batch_size=EMBED_BATCH_SIZE):
    """Embed uint8 images [N, S, S] (or float in [0, 1]) with ``model``; returns float32 [N, D]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.reshape(images.shape[:3] + (1,)).astype(np.float32)
    chunks = [model(images[i:i + batch_size], training=False).numpy()
              for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks).astype(np.float32)


def evaluate(embed_step, loss_step, params, test_images, test_labels):
    """Loss and figures averaged over the test batches, plus the retrieval metrics.

    The network embeds the images in batches of ``EMBED_BATCH_SIZE`` (inference treats
    each image on its own, so only speed depends on it); the loss is averaged over
    consecutive batches of ``params.batch_size``, the batches it was trained on
    (batch-all and batch-hard depend on what a batch holds).

    Args:
        embed_step, loss_step: from :func:`model.model_fn.make_embed_step` and
            :func:`model.model_fn.make_loss_step`.

    Returns:
        (results, embeddings): a dict of Python floats (``loss``, the strategy's figures,
        ``embedding_mean_norm``, ``precision_at_1``, ``r_precision``, ``map_at_r``) and
        the float32 [N, D] embeddings of the evaluated test images.
    """
    dataset = input_fn.test_dataset(test_images, test_labels, params, EMBED_BATCH_SIZE)
    embeddings = tf.concat([embed_step(images) for images, _ in dataset], axis=0)
    count = int(embeddings.shape[0])
    labels = tf.constant(test_labels[:count], tf.int64)
    totals = {}
    for start in range(0, count, params.batch_size):
        stop = min(start + params.batch_size, count)
        loss, figures = loss_step(labels[start:stop], embeddings[start:stop])
        for name, value in {"loss": loss, **figures}.items():
            totals[name] = totals.get(name, 0.0) + float(value) * (stop - start)
    results = {name: total / count for name, total in totals.items()}
    embeddings = embeddings.numpy()
    results.update(metrics.retrieval_metrics(embeddings, test_labels[:count]))
    return results, embeddings


def _format(results):
    return " ".join(f"{name} {value:.4f}" for name, value in results.items())


def _write_scalars(writer, values, step):
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)


class _Progress:
    """A progress bar within an epoch, shown only on an interactive terminal."""

    def __init__(self, total, epoch, num_epochs):
        self.enabled = sys.stderr.isatty()
        self.total, self.prefix = total, f"epoch {epoch}/{num_epochs}"

    def update(self, done, loss):
        if self.enabled and (done % 10 == 0 or done == self.total):
            width = 30
            filled = width * done // self.total
            sys.stderr.write(f"\r{self.prefix} [{'=' * filled}{'.' * (width - filled)}] "
                             f"{done}/{self.total} loss {loss:.4f}")
            if done == self.total:
                sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def _check_finite(loss, step, params):
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the loss became {loss} at step {step}; the last good checkpoint is kept. "
            f"Lower learning_rate (now {params.learning_rate}), or set l2_normalize "
            "true or use_batch_norm true, then run again")


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

    seed_everything(params.seed)
    run = Run(params, model_dir, strategy)
    restored = run.restore_latest()
    last_metrics_path = os.path.join(model_dir, "metrics_eval_last.json")
    if run.epoch.numpy() >= params.num_epochs:
        logging.info("%s already finished %d epochs (step %d); nothing to do. Raise "
                     "num_epochs to train longer.", model_dir, int(run.epoch.numpy()),
                     int(run.step.numpy()))
        if run.chief and not export.has_export(model_dir):  # killed while exporting
            _, embeddings = evaluate(make_embed_step(run.model, params),
                                     make_loss_step(params), params, test_images, test_labels)
            _export(run, params, model_dir, embeddings, test_labels)
        return _read_json(last_metrics_path)
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
    best_path = os.path.join(model_dir, "metrics_eval_best.json")
    best = _read_json(best_path).get(BEST_METRIC, -math.inf) if restored else -math.inf

    if not restored and run.chief:
        _write_hparams(model_dir, params)
        results, _ = evaluate(*eval_steps, params, test_images, test_labels)
        _write_scalars(eval_writer, results, 0)
        logging.info("Untrained network: %s", _format(results))

    steps = input_fn.steps_per_epoch(len(train_labels), params)
    results = {}
    for epoch in range(int(run.epoch.numpy()), params.num_epochs):
        start = time.time()
        progress = _Progress(steps, epoch + 1, params.num_epochs)
        loss_sum = 0.0
        dataset = input_fn.train_dataset(train_images, train_labels, params, epoch)
        for done, (images, labels) in enumerate(dataset, 1):
            loss, figures = train_step(images, labels)
            step = int(run.step.assign_add(1).numpy())
            loss = float(loss)
            _check_finite(loss, step, params)
            loss_sum += loss
            if step % params.save_summary_steps == 0:
                _write_scalars(train_writer, {"loss": loss, **figures}, step)
                with train_writer.as_default(step=step):
                    tf.summary.image("train_image", images[:1])
            progress.update(done, loss)
        train_time = time.time() - start
        results, embeddings = evaluate(*eval_steps, params, test_images, test_labels)
        run.epoch.assign(epoch + 1)
        record = {"epoch": epoch + 1, "step": step, **results}
        # "best" is saved before "latest": a run killed in between redoes this epoch,
        # reaches the same figures (determinism) and finds the best already saved.
        # Every worker holds the same weights, hence the same results: all agree on it.
        if results[BEST_METRIC] > best:
            best = results[BEST_METRIC]
            run.save("best")
            if run.chief:
                write_json(best_path, record)
        run.save("latest")
        if run.chief:
            write_json(last_metrics_path, record)
        _write_scalars(eval_writer, results, step)
        train_writer.flush()
        eval_writer.flush()
        logging.info("epoch %d/%d step %d train_loss %.4f | eval %s | %.1fs (+%.1fs eval)",
                     epoch + 1, params.num_epochs, step, loss_sum / max(done, 1),
                     _format(results), train_time, time.time() - start - train_time)
    if run.chief:
        _export(run, params, model_dir, embeddings, test_labels)
    return results


def _plain_model(params):
    """The network on one device in float32, whatever strategy and precision trained it."""
    return build_model(params.replace(distribution="none"), dtype_policy="float32")


def _export(run, params, model_dir, embeddings, test_labels):
    """Export the final network and calibrate its same / different threshold."""
    # The export must not depend on the strategy or precision the run was trained with.
    model = _plain_model(params)
    model.set_weights(run.model.get_weights())
    export.export_model(model, params, model_dir)
    verification = export.calibrate_verification(
        embeddings, test_labels[:len(embeddings)], model_dir, seed=params.seed)
    logging.info("Exported the embedding network to %s; verification threshold %.4f, "
                 "held-out accuracy %.4f", os.path.join(model_dir, export.EXPORT_DIR),
                 verification["threshold"], verification["held_out_accuracy"])


def _write_hparams(model_dir, params):
    """Record the run in TensorBoard's HParams dashboard.

    No experiment config is written: the dashboard then infers the metrics from the
    scalars of the run's train/ and eval/ folders, so every run of a search shows up.
    """
    from tensorboard.plugins.hparams import api as hp

    values = {key: value for key, value in params.to_dict().items() if value is not None}
    with tf.summary.create_file_writer(model_dir).as_default():
        hp.hparams(values, trial_id=os.path.basename(os.path.abspath(model_dir)))


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def restore_model(model_dir, params, checkpoint="latest"):
    """The network of ``model_dir`` with the weights of its latest or best checkpoint.

    Raises:
        UserError: if the folder holds no such checkpoint.
    """
    if checkpoint not in CHECKPOINT_DIRS:
        raise UserError(f"unknown checkpoint '{checkpoint}'; use latest or best")
    folder = os.path.join(model_dir, CHECKPOINT_DIRS[checkpoint])
    path = tf.train.latest_checkpoint(folder)
    if not path:
        raise UserError(f"no checkpoint in {folder}; train first: python train.py "
                        f"--model_dir {model_dir}")
    model = _plain_model(params)
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return model


def evaluate_checkpoint(params, model_dir, data_dir, checkpoint="latest"):
    """Evaluate a saved checkpoint on the test set; writes ``model_dir/metrics_eval.json``."""
    model = restore_model(model_dir, params, checkpoint)
    test_images, test_labels = mnist_dataset.load_split(data_dir, "test")
    results, _ = evaluate(make_embed_step(model, params), make_loss_step(params), params,
                          test_images, test_labels)
    write_json(os.path.join(model_dir, "metrics_eval.json"),
               {"checkpoint": tf.train.latest_checkpoint(
                   os.path.join(model_dir, CHECKPOINT_DIRS[checkpoint])), **results})
    return results
