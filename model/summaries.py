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


# Recorded for every run: what a reader compares first. Other keys are recorded only when
# they differ from their defaults, so that the dashboard (which lists the keys that
# differ between runs first, then all others by name) shows the metrics without
# scrolling rather than 33 columns of defaults.
HPARAMS_ALWAYS = ("triplet_strategy", "margin", "learning_rate", "embedding_size",
                  "batch_size", "num_epochs")


def hparams_of(params):
    """The hyper-parameters recorded for the HParams dashboard: :data:`HPARAMS_ALWAYS`, the
    distance actually used, and every other key set to other than its default. The
    dashboard takes numbers, booleans and strings: class lists are shown as JSON."""
    defaults = type(params)().to_dict()
    values = {key: value for key, value in params.to_dict().items()
              if key in HPARAMS_ALWAYS or value != defaults[key]}
    values["distance"] = params.distance_metric
    return {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in values.items() if value is not None}


def session_name(model_dir):
    """The run's name in the HParams dashboard: its folder and the folder above it
    (``search_a/margin_0.2``), so that same-named runs of two searches under one logdir
    stay apart (the dashboard averages sessions of one name into one row)."""
    path = os.path.abspath(model_dir)
    return f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"


def write_hparams(eval_writer, model_dir, params):
    """Record the run in TensorBoard's HParams dashboard (:func:`hparams_of`, under
    :func:`session_name`).

    The record goes into the eval/ run, not the model_dir root: an event file there
    would make TensorBoard list a run named "." (or the folder's name) holding nothing
    else. No experiment config is written: the dashboard then infers the metrics from
    the eval scalars of each run, so every run of a search shows up.
    """
    from tensorboard.plugins.hparams import api as hp

    with eval_writer.as_default():
        hp.hparams(hparams_of(params), trial_id=session_name(model_dir))
