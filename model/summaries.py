"""What a run writes for TensorBoard: scalars, a training image, the HParams record."""

import json
import os

import tensorflow as tf

from . import run_folder


def writers(model_dir, chief=True):
    """The (train, eval) summary writers of ``model_dir``; no-op writers on a non-chief
    worker of a multi-worker run (only the chief writes into ``model_dir``)."""
    return tuple(
        tf.summary.create_file_writer(os.path.join(model_dir, run_folder.SUMMARY_DIRS[name]))
        if chief else tf.summary.create_noop_writer() for name in ("train", "eval"))


def write_scalars(writer, values, step):
    """One scalar per ``name: value`` of ``values`` at ``step``."""
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)


def write_train_step(writer, step, loss, summaries, images):
    """The loss, the strategy's summaries and the batch's first image at ``step``."""
    write_scalars(writer, {"loss": loss, **summaries}, step)
    with writer.as_default(step=step):
        tf.summary.image("train_image", images[:1])


def write_hparams(eval_writer, model_dir, params):
    """Record the run in TensorBoard's HParams dashboard.

    The record goes into the eval/ run, not the model_dir root: an event file there
    would make TensorBoard list a run named "." (or the folder's name) holding nothing
    else. No experiment config is written: the dashboard then infers the metrics from
    the eval scalars of each run, so every run of a search shows up.
    """
    from tensorboard.plugins.hparams import api as hp

    # The dashboard takes numbers, booleans and strings: class lists are shown as JSON.
    values = {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
              for key, value in params.to_dict().items() if value is not None}
    with eval_writer.as_default():
        hp.hparams(values, trial_id=os.path.basename(os.path.abspath(model_dir)))
