"""The training loop, top to bottom (:func:`train_and_evaluate`).

Claim the run folder (:mod:`model.run_folder`), load and check the data, repair what a
crash left, build the state and restore the newest checkpoint (:mod:`model.state`);
then for each epoch: train, evaluate, checkpoint and choose the best; and at the end
test the chosen checkpoint, export the network and calibrate its threshold.

A rerun of the same command completes whatever a crash left half-done (docs/runs.md,
"What survives what"): it restores the newest checkpoint that reads, writes the record
of its epoch if that was lost, and re-exports and re-calibrates when the export or
``verification.json`` is missing or belongs to another epoch.
"""

import contextlib
import logging
import math
import os
import sys
import time

import keras
import tensorflow as tf

from . import (checkpoints, collapse, datasets, evaluation, export, files, memory,
               pipelines, progress, run_folder, state, summaries, test_hooks)
from .distribute import is_chief, worker_checkpoint_dir
from .errors import UserError
from .network import build_plain_model, make_embed_step, make_train_step
from .params import save_params
from .run_folder import metrics_path
from .state import Run

# The figure that picks the best checkpoint: retrieval quality is comparable across
# strategies and margins, the loss is not.
BEST_METRIC = "map_at_r"


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def seed_everything(seed):
    """Seed Python, NumPy, TensorFlow and Keras, and make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_and_evaluate(params, model_dir, data_dir, strategy=None):
    """Train ``params`` in ``model_dir``, resuming from its newest readable checkpoint.

    Only one process trains a model_dir at a time (:func:`model.run_folder.claimed`);
    a rerun completes whatever a crash left half-done.

    Returns:
        The eval results of the last epoch (dict of floats).
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    with run_folder.claimed(model_dir) if chief else contextlib.nullcontext():
        data = datasets.for_training(params, data_dir, model_dir)
        params = data.params
        memory.check_fits(params, min(params.eval_size, max(
            len(split[1]) for split in (data.validation, data.test) if split is not None)))
        run_folder.check_same_classes(model_dir, data.class_names)
        resume_from = state.resume_point(params, model_dir, strategy)
        logging.info("Training %s (%s, margin %s) on %s", model_dir, params.triplet_strategy,
                     params.margin, data_dir)
        seed_everything(params.seed)
        _repair(model_dir, strategy)
        run = Run(params, model_dir, strategy,
                  pipelines.steps_per_epoch(len(data.train[1]), params))
        if chief and resume_from is not None:
            _complete_untrained_records(run, data)
        restored = run.restore(resume_from)
        if chief:
            save_params(params, model_dir)
            datasets.save_record(data, model_dir)
        # Each worker of a multi-worker run caches into its own folder: no two write one file.
        data = datasets.cached(data, worker_checkpoint_dir(
            os.path.join(model_dir, run_folder.CACHE_DIR), strategy))
        return _train(run, data, restored)


def _repair(model_dir, strategy):
    """Undo what a crash can leave on disk before anything reads it: checkpoint state
    files that name missing checkpoints, the temporary folders of a checkpoint or an
    export that was being written."""
    for folder in run_folder.CHECKPOINT_DIRS.values():
        folder = worker_checkpoint_dir(os.path.join(model_dir, folder), strategy)
        checkpoints.remove_leftovers(folder)
        checkpoints.repair_state(folder)
    if is_chief(strategy):
        export.remove_leftovers(model_dir)
        _rebuild_best(model_dir)


def _rebuild_best(model_dir):
    """Put the best epoch's checkpoint back into ``best/`` when ``best/`` lost it or cannot
    read it (deleted by hand, damaged, a copy killed half-way) and ``checkpoints/`` still
    holds that epoch intact; else say what can be done."""
    best_dir = os.path.join(model_dir, run_folder.CHECKPOINT_DIRS["best"])
    record = files.read_json(metrics_path(model_dir, "best")) or {}
    if not isinstance(record.get("epoch"), int) or not run_folder.holds_checkpoints(model_dir):
        return
    try:
        kept = checkpoints.newest_readable(best_dir)
    except checkpoints.Unreadable:
        kept = None
    # best/ may be ahead of its metrics file (killed between the two), never behind it.
    if kept is not None and checkpoints.number(kept) >= record["epoch"]:
        return
    source = os.path.join(model_dir, run_folder.CHECKPOINT_DIRS["latest"],
                          f"{run_folder.CHECKPOINT_PREFIX}-{record['epoch']}")
    if os.path.isfile(source + ".index") and checkpoints.damage(source) is None:
        checkpoints.copy_checkpoint(source, best_dir)
        logging.warning("Rebuilt %s from %s (epoch %d)", best_dir, source, record["epoch"])
    else:
        logging.warning(
            "%s lost the checkpoint of the best epoch (%d, MAP@R %s) and %s no longer holds "
            "it: only an epoch that beats it will be saved there; meanwhile use --checkpoint "
            "latest", best_dir, record["epoch"], record.get("map_at_r", math.nan),
            os.path.dirname(source))


def _train(run, data, restored):
    """The loop over epochs on ``data`` (a :class:`model.datasets.Data`), evaluating
    every epoch on its validation split when it has one, else on its test split."""
    params, model_dir = run.params, run.model_dir
    watched = data.validation or data.test  # the split that chooses best/
    train_writer, eval_writer = summaries.writers(model_dir, run.chief)
    record = files.read_json(metrics_path(model_dir, "last")) or {}
    embeddings = None
    if restored:
        logging.info("Resuming from %s (epoch %d, step %d)", restored,
                     int(run.epoch.numpy()), int(run.step.numpy()))
        if run.chief:
            record, embeddings = _complete_records(run, record, watched, eval_writer)
    elif run.chief:
        _evaluate_untrained(run, watched, eval_writer)
        if data.validation is not None:
            _test_untrained(run, data.test)
    if run.epoch.numpy() >= params.num_epochs:
        logging.info("%s already finished %d epochs (step %d). Raise num_epochs to train "
                     "longer.", model_dir, int(run.epoch.numpy()), int(run.step.numpy()))

    _warn_if_few_summary_points(params, pipelines.steps_per_epoch(len(data.train[1]), params))
    train_step = make_train_step(run.model, run.optimizer, params, run.strategy)
    untrained = files.read_json(metrics_path(model_dir, "untrained")) or {}
    collapse_reported = False
    for epoch in range(int(run.epoch.numpy()), params.num_epochs):
        start = time.time()
        train_loss = _train_epoch(run, train_step, data.train, epoch, train_writer)
        train_time = time.time() - start
        run.epoch.assign(epoch + 1)
        train_writer.flush()  # the epoch's summaries reach the disk before its checkpoint
        results, embeddings = run.evaluate(watched)
        run.seconds.assign_add(time.time() - start)
        record = _epoch_record(run, results)
        _save_checkpoints(run, record)
        eval_time = time.time() - start - train_time
        collapsed = collapse.diagnose(train_loss, results, untrained, params)
        _record_epoch(run, record, eval_writer,
                      f"train_loss {train_loss:.4f} | eval {_format(results)} | "
                      f"{train_time:.1f}s (+{eval_time:.1f}s eval)",
                      {"collapsed": float(collapsed is not None)})
        if collapsed and not collapse_reported:  # once: a collapsed run tends to stay so
            logging.warning("Epoch %d: %s", epoch + 1, collapsed)
            collapse_reported = True

    if run.chief:
        if data.validation is not None:
            _test_the_best(run, data.test)
            embeddings = None  # of the validation images: calibration takes the test set's
        _export_and_calibrate(run, data.test, embeddings)
    return _figures(files.read_json(metrics_path(model_dir, "last")) or record)


# Fewer points than this make a training curve in TensorBoard hard to read.
MIN_SUMMARY_POINTS = 10


def _warn_if_few_summary_points(params, steps_per_epoch):
    points = params.num_epochs * steps_per_epoch // params.save_summary_steps
    if points < MIN_SUMMARY_POINTS:
        logging.warning(
            "TensorBoard's training curves will have %d point%s (%d steps, a summary every "
            "save_summary_steps = %d); lower save_summary_steps to %d for a readable curve",
            points, "" if points == 1 else "s", params.num_epochs * steps_per_epoch,
            params.save_summary_steps,
            max(1, params.num_epochs * steps_per_epoch // (4 * MIN_SUMMARY_POINTS)))


def _train_epoch(run, train_step, train, epoch, writer):
    """One epoch of optimizer steps on ``train`` (images, labels); the mean loss."""
    params = run.params
    progress = _progress_bar(pipelines.steps_per_epoch(len(train[1]), params))
    loss_sum = 0.0
    dataset = pipelines.train_dataset(*train, params, epoch)
    for done, (images, labels) in enumerate(pipelines.read_batches(dataset), 1):
        loss, step_summaries = train_step(images, labels)
        step = int(run.step.assign_add(1).numpy())
        loss = float(loss)
        _check_finite(loss, step, params)
        loss_sum += loss
        if step % params.save_summary_steps == 0:
            summaries.write_train_step(writer, step, loss, step_summaries, images)
        progress.update(done, [("loss", loss)])
    return loss_sum / max(done, 1)


def _epoch_record(run, results):
    return {"epoch": int(run.epoch.numpy()), "step": int(run.step.numpy()),
            "train_minutes": float(run.seconds.numpy()) / 60, **results}


def _save_checkpoints(run, record):
    """Save the epoch: ``best/`` (when it beats the best so far) before ``checkpoints/``.

    A run killed in between redoes the epoch, reaches the same figures by determinism
    and finds the best already saved. Every worker holds the same weights, hence the
    same results: all agree on saving.
    """
    if record[BEST_METRIC] > run.best_score.numpy():
        run.best_score.assign(record[BEST_METRIC])
        run.save("best")
        if run.chief:
            files.write_json(metrics_path(run.model_dir, "best"), record)
    run.save("latest")
    test_hooks.reached("after_checkpoint")


def _record_epoch(run, record, eval_writer, summary, diagnostics=None):
    """The eval summaries (and ``diagnostics``, scalars for TensorBoard only), the log line,
    then ``metrics_eval_last.json``: written last, as the mark that the epoch is complete
    (a rerun completes an epoch without it)."""
    if run.chief:
        summaries.write_scalars(eval_writer, {**_figures(record), **(diagnostics or {})},
                                record["step"])
        eval_writer.flush()
    logging.info("epoch %d/%d step %d %s", record["epoch"], run.params.num_epochs,
                 record["step"], summary)
    if run.chief:
        files.write_json(metrics_path(run.model_dir, "last"), record)


def _complete_records(run, record, watched, eval_writer):
    """Write the records of the restored epoch that a crash lost: its
    ``metrics_eval_last.json`` (killed after the checkpoint, before the record: the
    weights are those that were evaluated, so the record comes out the same) and
    ``metrics_eval_best.json``.

    Returns:
        (the epoch's record, its embeddings when they were computed here, else None).
    """
    embeddings = None
    if record.get("epoch") != int(run.epoch.numpy()):
        results, embeddings = run.evaluate(watched)
        record = _epoch_record(run, results)
        _record_epoch(run, record, eval_writer,
                      f"| eval {_format(results)} | record completed after a restart")
    if files.read_json(metrics_path(run.model_dir, "best")) is None:
        best = _evaluate_best(run, watched)
        if best is not None:
            path = best.pop("checkpoint")
            files.write_json(metrics_path(run.model_dir, "best"), best)
            logging.info("Rewrote %s from %s", run_folder.METRICS_FILES["best"], path)
    return record, embeddings


def _evaluate_untrained(run, watched, eval_writer):
    summaries.write_dashboards(eval_writer, run.params)
    results = _write_untrained(run, watched)
    logging.info("Untrained network: %s", _format(results))
    summaries.write_scalars(eval_writer, results, 0)


def _write_untrained(run, watched):
    """Evaluate the untrained network on ``watched``, write ``metrics_eval_untrained.json``."""
    results, _ = run.evaluate(watched)
    files.write_json(metrics_path(run.model_dir, "untrained"),
                     {"epoch": 0, "step": 0, **results})
    return results


def _complete_untrained_records(run, data):
    """Rewrite the untrained network's records of a resumed run when they were deleted.
    Called before the restore: the network then holds the seeded initial weights, those
    the run started from, so the records come out as they were."""
    if files.read_json(metrics_path(run.model_dir, "untrained")) is None:
        _write_untrained(run, data.validation or data.test)
        logging.info("Rewrote %s (the network's initial weights, evaluated again)",
                     run_folder.METRICS_FILES["untrained"])
    if (data.validation is not None and files.read_json(
            os.path.join(run.model_dir, run_folder.TEST_UNTRAINED_FILE)) is None):
        _test_untrained(run, data.test)


def _test_untrained(run, test):
    """Write ``metrics_test_untrained.json``: the untrained network on the test set, the
    baseline of ``metrics_test_best.json`` when a validation split chooses the epoch."""
    results, _ = run.evaluate(test)
    files.write_json(os.path.join(run.model_dir, run_folder.TEST_UNTRAINED_FILE),
                     {"epoch": 0, "step": 0, **results})
    logging.info("Untrained network on the test set: %s", _format(_figures(results)))


def _evaluate_best(run, split):
    """The record of the best checkpoint evaluated on ``split`` (images, labels), with the
    checkpoint's path, epoch, step and training time; None if there is no best checkpoint."""
    best_run = tf.train.Checkpoint(model=build_plain_model(run.params), epoch=tf.Variable(
        0, dtype=tf.int64), step=tf.Variable(0, dtype=tf.int64),
        seconds=tf.Variable(0.0, dtype=tf.float64))
    path = checkpoints.restore(
        best_run, os.path.join(run.model_dir, run_folder.CHECKPOINT_DIRS["best"]))
    if path is None:
        return None
    results, _ = evaluation.evaluate(make_embed_step(best_run.model, run.params),
                                     run.loss_step, run.params, *split)
    return {"epoch": int(best_run.epoch.numpy()), "step": int(best_run.step.numpy()),
            "train_minutes": float(best_run.seconds.numpy()) / 60, "checkpoint": path,
            **results}


def _test_the_best(run, test):
    """Write ``metrics_test_best.json``: the test figures of the checkpoint chosen on the
    validation split (the test set plays no part in choosing it). Rewritten when missing,
    damaged or of another epoch than ``metrics_eval_best.json`` (a rerun repairs it)."""
    path = os.path.join(run.model_dir, run_folder.TEST_BEST_FILE)
    chosen = files.read_json(metrics_path(run.model_dir, "best")) or {}
    tested = files.read_json(path) or {}
    if "epoch" in tested and tested.get("epoch") == chosen.get("epoch"):
        return
    record = _evaluate_best(run, test)
    if record is None:
        return
    files.write_json(path, {**record, "selected_on": "validation"})
    logging.info("Test set, checkpoint of epoch %d chosen on the validation split: %s",
                 record["epoch"], _format(_figures(record)))


def _export_and_calibrate(run, test, embeddings):
    """Export the final network and calibrate its threshold, unless both already belong
    to this epoch (a rerun repairs an export or verification.json that is missing,
    partial or from an earlier epoch)."""
    params, model_dir = run.params, run.model_dir
    epoch = int(run.epoch.numpy())
    exported = export.exported_epoch(model_dir) == epoch
    verification = evaluation.load_verification(model_dir)
    calibrated = verification is not None and verification["epoch"] == epoch
    if exported and calibrated:
        return
    if not exported:
        # The export must not depend on the strategy or precision the run was trained with.
        model = build_plain_model(params)
        model.set_weights(run.model.get_weights())
        with progress.step(f"Exporting the network of epoch {epoch}"):
            export.export_model(model, params, model_dir, epoch)
        test_hooks.reached("after_export")
    if not calibrated:
        if embeddings is None:
            _, embeddings = run.evaluate(test)
        with progress.step(f"Calibrating the verification threshold on {len(embeddings):,} "
                           "test images"):
            verification = evaluation.write_verification(
                model_dir, embeddings, test[1][:len(embeddings)], params, epoch)
    logging.info("Exported the embedding network of epoch %d to %s; verification threshold "
                 "%.4f, held-out accuracy %s", epoch,
                 os.path.join(model_dir, run_folder.EXPORT_DIR),
                 verification["threshold"], evaluation.describe_accuracy(verification))


def _figures(record):
    return {name: value for name, value in record.items()
            if name not in ("epoch", "step", "train_minutes", "checkpoint")}


def _format(results):
    return " ".join(f"{name} {value:.4f}" for name, value in results.items())


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
