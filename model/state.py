"""What a run checkpoints, and restoring it: the network, the optimizer and the counters.

The checkpoint also holds ``seconds`` (training and evaluation time of the completed
epochs, so it survives a resume and excludes the downtime), ``best_score`` (the best
eval MAP@R so far: it cannot be lost separately from the weights) and ``params`` (as
JSON: the changed-params guard works from the checkpoint alone).
"""

import json
import logging
import math
import os

import tensorflow as tf

from . import checkpoints, evaluation, files, run_folder
from .distribute import is_chief, worker_checkpoint_dir
from .errors import UserError
from .network import build_model, make_embed_step, make_loss_step, make_optimizer
from .params import RESOLVED_PARAMS_FILENAME


def _params_json(params):
    return json.dumps(params.to_dict(), sort_keys=True)


class Run:
    """The state of one training run in ``model_dir``: model, optimizer, counters, checkpoints.

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
            # Adam's moments exist before a restore fills them: a checkpoint saved right
            # after restoring (see restore) then holds them, not only the weights.
            self.optimizer.build(self.model.trainable_variables)
        self.embed_step = make_embed_step(self.model, params)
        self.loss_step = make_loss_step(params)
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
        self.managers = {
            kind: tf.train.CheckpointManager(
                self.checkpoint, self._folder(kind),
                max_to_keep=params.keep_checkpoint_max if kind == "latest" else 1,
                checkpoint_name=run_folder.CHECKPOINT_PREFIX)
            for kind in run_folder.CHECKPOINT_DIRS}

    def _folder(self, kind):
        return worker_checkpoint_dir(
            os.path.join(self.model_dir, run_folder.CHECKPOINT_DIRS[kind]), self.strategy)

    def evaluate(self, split):
        """(results, float32 embeddings) of the current weights on ``split`` (images, labels)."""
        return evaluation.evaluate(self.embed_step, self.loss_step, self.params, *split)

    def restore(self, prefix):
        """Restore the checkpoint at ``prefix`` (from :func:`resume_point`; None: nothing).

        A checkpoint of ``best/`` that is newer than every one of ``checkpoints/`` is saved
        there too, so that ``checkpoints/`` holds the resume point again. The best score is
        the larger of the restored one and ``best/``'s: ``best/`` is never replaced by a
        worse epoch.
        """
        if prefix is None:
            return None
        self.checkpoint.restore(prefix).expect_partial()
        self.params_json.assign(_params_json(self.params))
        if os.path.dirname(prefix) != self._folder("latest"):
            logging.warning("Resumed from %s: %s holds no newer checkpoint that reads", prefix,
                            self._folder("latest"))
            self.save("latest")
        best_score = checkpoints.newest_value(self._folder("best"), "best_score")
        if best_score is not None and best_score > self.best_score.numpy():
            self.best_score.assign(best_score)
        return prefix

    def save(self, kind):
        """Save the state as the epoch's checkpoint in ``checkpoints/`` or ``best/``."""
        self.managers[kind].save(checkpoint_number=int(self.epoch.numpy()))


def resume_point(params, model_dir, strategy=None):
    """The checkpoint a run in ``model_dir`` resumes from: the newest one that reads,
    in ``checkpoints/`` or ``best/`` (a deleted or damaged ``checkpoints/`` never sends a
    run back to epoch 0 while ``best/`` holds a later epoch); None for a new run.

    Its params are checked before anything is restored or repaired: those stored in the
    checkpoint decide (``params_resolved.json`` is only a record, consulted for
    checkpoints saved before they carried their params).

    Raises:
        UserError: checkpoint files exist but none reads, or they were trained with
            other params.
    """
    strategy = strategy or tf.distribute.get_strategy()
    found, unreadable = [], []
    for kind in ("latest", "best"):
        folder = worker_checkpoint_dir(
            os.path.join(model_dir, run_folder.CHECKPOINT_DIRS[kind]), strategy)
        try:
            prefix = checkpoints.newest_readable(folder)
        except checkpoints.Unreadable as err:
            unreadable.append(err)
            continue
        if prefix is not None:
            found.append(prefix)
    if not found:
        if len(unreadable) > 1:
            details = "; ".join(f"{os.path.basename(err.folder)}/{err.details}"
                                for err in unreadable)
            raise UserError(f"{model_dir} holds checkpoint files but none of them can be read "
                            f"({details}); restore them from a backup, or move the folder "
                            "away to start over")
        if unreadable:
            raise unreadable[0]
        return None
    # Epoch numbers name the checkpoints; on a tie checkpoints/ (listed first) wins.
    prefix = max(found, key=checkpoints.number)
    saved = checkpoints.value(prefix, "params")
    if saved is not None:
        saved = json.loads(saved.decode())
    else:
        record = files.read_json(os.path.join(model_dir, RESOLVED_PARAMS_FILENAME)) or {}
        saved = record.get("params") if isinstance(record.get("params"), dict) else None
    if saved is not None:
        run_folder.check_same_params(saved, params, model_dir)
    return prefix
