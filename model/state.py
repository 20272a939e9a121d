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

from . import checkpoints, evaluation, run_folder
from .distribute import is_chief, worker_checkpoint_dir
from .errors import UserError
from .network import build_model, make_embed_step, make_loss_step, make_optimizer


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
        latest, best = (os.path.join(self.model_dir, run_folder.CHECKPOINT_DIRS[kind])
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
            run_folder.check_same_params(json.loads(saved.decode()), self.params,
                                         self.model_dir)

    def save(self, kind):
        """Save the state as the epoch's checkpoint in ``checkpoints/`` or ``best/``."""
        self.managers[kind].save(checkpoint_number=int(self.epoch.numpy()))
