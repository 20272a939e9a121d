"""The training loop: resume, checkpoints, summaries, per-epoch evaluation, export.

Layout of a model_dir (``params.json`` is the user's; everything else is written here):

    params_resolved.json    params with defaults filled in, plus software versions
    train.log               one line per epoch
    checkpoints/            model, optimizer, counters, best score and params, every epoch
    best/                   the checkpoint with the best eval MAP@R
    train/, eval/           TensorBoard event files (eval/ also holds the HParams record)
    metrics_eval_untrained.json, metrics_eval_last.json, metrics_eval_best.json
    metrics_test_best.json  with a validation split: the test figures of the best checkpoint
    export/, verification.json   the final network and its same / different threshold
    dataset.json            the data the run reads (model.datasets); cache/ its decoded images
    .lock                   held by the process training in the folder

What a crash can leave half-done is completed by the next run of the same command
(docs/runs.md, "What survives what"): a rerun restores the newest checkpoint that reads,
writes the record of its epoch if that was lost, and re-exports and re-calibrates when
the export or ``verification.json`` is missing or belongs to another epoch.
"""

import contextlib
import json
import logging
import math
import os
import sys
import time

import keras
import tensorflow as tf

from . import checkpoints, datasets, evaluation, export, files, pipelines, test_hooks
from .checkpoints import CHECKPOINT_DIRS
from .distribute import is_chief, worker_checkpoint_dir
from .errors import UserError
from .network import (build_model, build_plain_model, make_embed_step, make_loss_step,
                       make_optimizer, make_train_step)
from .params import RESOLVED_PARAMS_FILENAME, Params, save_params

# The figure that picks the best checkpoint: retrieval quality is comparable across
# strategies and margins, the loss is not.
BEST_METRIC = "map_at_r"
# Keys that may change between a run and its resumption without changing what the
# checkpoints mean (e.g. train for more epochs). num_labels only bounds the labels and P
# (runs saved before it was taken from the data hold the old default, 10); a change of
# the classes themselves is caught by dataset.json.
RESUMABLE_CHANGES = ("num_epochs", "save_summary_steps", "keep_checkpoint_max", "cache",
                     "num_parallel_calls", "num_labels")
METRICS_FILES = {kind: f"metrics_eval_{kind}.json" for kind in ("untrained", "last", "best")}
# With a validation split: the test figures of the checkpoint chosen on it.
TEST_BEST_FILE = "metrics_test_best.json"


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def seed_everything(seed):
    """Seed Python, NumPy, TensorFlow and Keras, and make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _params_json(params):
    return json.dumps(params.to_dict(), sort_keys=True)


class Run:
    """The state of one training run in ``model_dir``: model, optimizer, counters, checkpoints.

    The checkpoint also holds ``seconds`` (training and evaluation time of the completed
    epochs, so it survives a resume and excludes the downtime), ``best_score`` (the best
    eval MAP@R so far: it cannot be lost separately from the weights) and ``params`` (as
    JSON: the changed-params guard works from the checkpoint alone).

    Under a multi-worker strategy every worker saves (saving is a collective operation),
    but only the chief writes into ``model_dir``; the others save into
    ``model_dir/.scratch/worker_N`` (bounded by keep_checkpoint_max like the chief's).
    """

    def __init__(self, params, model_dir, strategy=None, steps_per_epoch=None):
        self.params = params
        self.model_dir = model_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = is_chief(self.strategy)
        with self.strategy.scope():
            self.model = build_model(params)
            self.optimizer = make_optimizer(params, steps_per_epoch)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
        self.best_score = tf.Variable(-math.inf, dtype=tf.float64, trainable=False,
                                      name="best_score")
        self.params_json = tf.Variable(_params_json(params), dtype=tf.string, trainable=False,
                                       name="params")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step, epoch=self.epoch,
            seconds=self.seconds, best_score=self.best_score, params=self.params_json)
        self.managers = {}
        for kind, folder in CHECKPOINT_DIRS.items():
            directory = worker_checkpoint_dir(os.path.join(model_dir, folder), self.strategy)
            checkpoints.repair_state(directory)
            self.managers[kind] = tf.train.CheckpointManager(
                self.checkpoint, directory,
                max_to_keep=params.keep_checkpoint_max if kind == "latest" else 1,
                checkpoint_name=checkpoints.PREFIX)

    def restore_latest(self):
        """Restore the newest readable training checkpoint; returns its path or None.

        ``checkpoints/`` first; when it holds files but none reads (e.g. killed while the
        very first epoch's checkpoint was written), ``best/``, which holds a complete
        training checkpoint saved just before. The params stored in the checkpoint are
        checked before its tensors are loaded, and the best score is the larger of the
        restored one and ``best/``'s (``best/`` is never replaced by a worse epoch).

        Raises:
            UserError: no checkpoint reads although some exist, or they were trained
                with other params.
        """
        latest, best = (os.path.join(self.model_dir, CHECKPOINT_DIRS[kind])
                        for kind in ("latest", "best"))
        try:
            path = checkpoints.restore(self.checkpoint, latest, self._check_saved_params)
        except UserError as err:
            path = checkpoints.restore(self.checkpoint, best, self._check_saved_params)
            if path is None:
                raise err from None
            logging.warning("No checkpoint in %s reads; resumed from %s", latest, path)
            self.save("latest")  # so that checkpoints/ holds a readable one again
        if path:
            self.params_json.assign(_params_json(self.params))
            best_score = checkpoints.newest_value(best, "best_score")
            if best_score is not None and best_score > self.best_score.numpy():
                self.best_score.assign(best_score)
        return path

    def _check_saved_params(self, prefix):
        saved = checkpoints.value(prefix, "params")
        if saved is not None:
            _check_same_params(json.loads(saved.decode()), self.params, self.model_dir)

    def save(self, kind):
        self.managers[kind].save(checkpoint_number=int(self.epoch.numpy()))


def _check_same_params(saved, params, model_dir):
    current = params.to_dict()
    # Keys added since the run was saved held their (unchanged) defaults then.
    saved = {**Params().to_dict(), **saved}
    changed = sorted(k for k in set(saved) | set(current)
                     if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise UserError(
            f"{model_dir} already holds a run trained with other params ({diffs}); "
            "copy params.json to a new folder for a new experiment, or undo the change to resume")


def check_model_dir(params, model_dir, data):
    """Refuse to resume a run trained with other params (other than resumable keys), or
    on other classes than ``data``'s (a :class:`model.datasets.Data`).

    Checked before anything is written, against ``params_resolved.json`` and
    ``dataset.json``, whenever the folder holds any checkpoint file (the checkpoint's own
    copy of the params is checked again when it is restored).
    """
    if not any(checkpoints.checkpoint_files(os.path.join(model_dir, folder))
               for folder in CHECKPOINT_DIRS.values()):
        return
    datasets.check_same_classes(data, model_dir)
    path = os.path.join(model_dir, RESOLVED_PARAMS_FILENAME)
    record = files.read_json(path)
    if record is None:
        return  # the checkpoint's copy of the params decides (Run.restore_latest)
    if not isinstance(record.get("params"), dict):
        raise UserError(f"{path} holds no params but {model_dir} holds checkpoints; "
                        "delete the damaged file (the checkpoints keep their own copy) or "
                        "train in a new folder")
    _check_same_params(record["params"], params, model_dir)


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


def check_writable(model_dir):
    """Create ``model_dir`` if needed; refuse a path that is a file or a read-only folder."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise UserError(f"--model_dir {model_dir} is a file, not a folder; pass the experiment "
                        "folder that holds params.json")
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {model_dir} ({err.strerror}); choose a folder you can "
                        "write to") from None
    if not os.access(model_dir, os.W_OK | os.X_OK):
        raise UserError(f"{model_dir} is read-only; make it writable (chmod u+w) or copy the "
                        "experiment to a folder you can write to")


def train_and_evaluate(params, model_dir, data_dir, strategy=None):
    """Train ``params`` in ``model_dir``, resuming from its newest readable checkpoint.

    Only one process trains a model_dir at a time (an exclusive lock that a killed
    process releases); a rerun completes whatever a crash left half-done.

    Returns:
        The eval results of the last epoch (dict of floats).
    """
    chief = is_chief(strategy or tf.distribute.get_strategy())
    if chief:
        check_writable(model_dir)
    with files.exclusive_lock(model_dir) if chief else contextlib.nullcontext():
        data = datasets.for_training(params, data_dir, model_dir)
        params = data.params
        check_model_dir(params, model_dir, data)
        logging.info("Training %s (%s, margin %s) on %s", model_dir, params.triplet_strategy,
                     params.margin, data_dir)
        seed_everything(params.seed)
        run = Run(params, model_dir, strategy,
                  pipelines.steps_per_epoch(len(data.train[1]), params))
        restored = run.restore_latest()
        if run.chief:
            save_params(params, model_dir)
            datasets.save_record(data, model_dir)
        # Each worker of a multi-worker run caches into its own folder: no two write one file.
        data = datasets.cached(data, worker_checkpoint_dir(
            os.path.join(model_dir, datasets.CACHE_DIR), run.strategy))
        return _train(run, params, model_dir, data, restored)


def _train(run, params, model_dir, data, restored):
    """Train ``data`` (a :class:`model.datasets.Data`), evaluating every epoch on its
    validation split when it has one, else on its test split."""
    train_images, train_labels = data.train
    # The split every epoch is evaluated on and best/ is chosen by.
    watched = data.validation or data.test
    eval_steps = make_embed_step(run.model, params), make_loss_step(params)
    train_writer, eval_writer = (
        tf.summary.create_file_writer(os.path.join(model_dir, name)) if run.chief
        else tf.summary.create_noop_writer() for name in ("train", "eval"))
    record = files.read_json(_metrics_path(model_dir, "last")) or {}
    embeddings = None
    if restored:
        logging.info("Resuming from %s (epoch %d, step %d)", restored,
                     int(run.epoch.numpy()), int(run.step.numpy()))
        if run.chief:
            if record.get("epoch") != int(run.epoch.numpy()):
                # Killed after the epoch's checkpoint, before its record: the weights are
                # those that were evaluated, so the record comes out the same.
                record, embeddings = _evaluate_epoch(run, params, model_dir, eval_steps,
                                                     watched, eval_writer)
            if files.read_json(_metrics_path(model_dir, "best")) is None:
                best = _evaluate_best(params, model_dir, eval_steps, watched)
                if best is not None:
                    path = best.pop("checkpoint")
                    files.write_json(_metrics_path(model_dir, "best"), best)
                    logging.info("Rewrote %s from %s", METRICS_FILES["best"], path)
    elif run.chief:
        _write_hparams(eval_writer, model_dir, params)
        results, _ = evaluation.evaluate(*eval_steps, params, *watched)
        _write_scalars(eval_writer, results, 0)
        files.write_json(_metrics_path(model_dir, "untrained"), {"epoch": 0, "step": 0,
                                                                 **results})
        logging.info("Untrained network: %s", _format(results))

    if run.epoch.numpy() >= params.num_epochs:
        logging.info("%s already finished %d epochs (step %d). Raise num_epochs to train "
                     "longer.", model_dir, int(run.epoch.numpy()), int(run.step.numpy()))
    train_step = make_train_step(run.model, run.optimizer, params, run.strategy)
    steps = pipelines.steps_per_epoch(len(train_labels), params)
    for epoch in range(int(run.epoch.numpy()), params.num_epochs):
        start = time.time()
        progress = _progress_bar(steps)
        loss_sum = 0.0
        dataset = pipelines.train_dataset(train_images, train_labels, params, epoch)
        for done, (images, labels) in enumerate(pipelines.read_batches(dataset), 1):
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
        run.epoch.assign(epoch + 1)
        train_writer.flush()
        record, embeddings = _evaluate_epoch(run, params, model_dir, eval_steps, watched,
                                             eval_writer, start, loss_sum / max(done, 1),
                                             train_time)
    if run.chief:
        if data.validation is not None:
            _test_the_best(params, model_dir, eval_steps, data.test)
            embeddings = None  # of the validation images: calibration takes the test set's
        _finish(run, params, model_dir, eval_steps, data.test, embeddings)
    return _figures(files.read_json(_metrics_path(model_dir, "last")) or record)


def _figures(record):
    return {name: value for name, value in record.items()
            if name not in ("epoch", "step", "train_minutes", "checkpoint")}


def _evaluate_epoch(run, params, model_dir, eval_steps, test, eval_writer, start=None,
                    train_loss=None, train_time=None):
    """Evaluate the weights of the epoch just trained (or restored), save and record them.

    The order makes every crash recoverable: the training summaries are flushed before
    the checkpoint; "best" is saved before "latest" (a run killed in between redoes the
    epoch, reaches the same figures by determinism and finds the best already saved);
    the eval summaries and the log line come next and ``metrics_eval_last.json`` last,
    as the mark that the epoch is complete (a rerun completes an epoch without it, see
    :func:`_train`). Every worker holds the same weights, hence the same results: all
    agree on saving.

    Returns:
        (record dict, the float32 test embeddings).
    """
    results, embeddings = evaluation.evaluate(*eval_steps, params, *test)
    if start is not None:
        run.seconds.assign_add(time.time() - start)
    record = {"epoch": int(run.epoch.numpy()), "step": int(run.step.numpy()),
              "train_minutes": float(run.seconds.numpy()) / 60, **results}
    if start is not None:
        if results[BEST_METRIC] > run.best_score.numpy():
            run.best_score.assign(results[BEST_METRIC])
            run.save("best")
            if run.chief:
                files.write_json(_metrics_path(model_dir, "best"), record)
        run.save("latest")
        test_hooks.reached("after_checkpoint")
    if run.chief:
        _write_scalars(eval_writer, results, record["step"])
        eval_writer.flush()
    if start is None:
        logging.info("epoch %d/%d step %d | eval %s | record completed after a restart",
                     record["epoch"], params.num_epochs, record["step"], _format(results))
    else:
        logging.info("epoch %d/%d step %d train_loss %.4f | eval %s | %.1fs (+%.1fs eval)",
                     record["epoch"], params.num_epochs, record["step"], train_loss,
                     _format(results), train_time, time.time() - start - train_time)
    if run.chief:
        files.write_json(_metrics_path(model_dir, "last"), record)
    return record, embeddings


def _evaluate_best(params, model_dir, eval_steps, split):
    """The record of the best checkpoint evaluated on ``split`` (images, labels), with the
    checkpoint's path, epoch, step and training time; None if there is no best checkpoint."""
    best_run = tf.train.Checkpoint(model=build_plain_model(params), epoch=tf.Variable(
        0, dtype=tf.int64), step=tf.Variable(0, dtype=tf.int64),
        seconds=tf.Variable(0.0, dtype=tf.float64))
    path = checkpoints.restore(best_run, os.path.join(model_dir, CHECKPOINT_DIRS["best"]))
    if path is None:
        return None
    results, _ = evaluation.evaluate(make_embed_step(best_run.model, params), eval_steps[1],
                                     params, *split)
    return {"epoch": int(best_run.epoch.numpy()), "step": int(best_run.step.numpy()),
            "train_minutes": float(best_run.seconds.numpy()) / 60, "checkpoint": path,
            **results}


def _test_the_best(params, model_dir, eval_steps, test):
    """Write ``metrics_test_best.json``: the test figures of the checkpoint chosen on the
    validation split (the test set plays no part in choosing it). Rewritten when missing,
    damaged or of another epoch than ``metrics_eval_best.json`` (a rerun repairs it)."""
    chosen = files.read_json(_metrics_path(model_dir, "best")) or {}
    tested = files.read_json(os.path.join(model_dir, TEST_BEST_FILE)) or {}
    if "epoch" in tested and tested.get("epoch") == chosen.get("epoch"):
        return
    record = _evaluate_best(params, model_dir, eval_steps, test)
    if record is None:
        return
    files.write_json(os.path.join(model_dir, TEST_BEST_FILE), {**record,
                                                              "selected_on": "validation"})
    logging.info("Test set, checkpoint of epoch %d chosen on the validation split: %s",
                 record["epoch"], _format(_figures(record)))


def _finish(run, params, model_dir, eval_steps, test, embeddings):
    """Export the final network and calibrate its threshold, unless both already belong
    to this epoch (a rerun repairs an export or verification.json that is missing,
    partial or from an earlier epoch)."""
    epoch = int(run.epoch.numpy())
    export.remove_leftovers(model_dir)
    exported = export.exported_epoch(model_dir) == epoch
    verification = files.read_json(os.path.join(model_dir, evaluation.VERIFICATION_FILE))
    calibrated = verification is not None and verification.get("epoch") == epoch
    if exported and calibrated:
        return
    if not exported:
        # The export must not depend on the strategy or precision the run was trained with.
        model = build_plain_model(params)
        model.set_weights(run.model.get_weights())
        export.export_model(model, params, model_dir, epoch)
        test_hooks.reached("after_export")
    if not calibrated:
        if embeddings is None:
            _, embeddings = evaluation.evaluate(*eval_steps, params, *test)
        verification = evaluation.write_verification(
            model_dir, embeddings, test[1][:len(embeddings)], params, epoch)
    logging.info("Exported the embedding network of epoch %d to %s; verification threshold "
                 "%.4f, held-out accuracy %.4f", epoch, os.path.join(model_dir, export.EXPORT_DIR),
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
