"""Devices: the tf.distribute strategy of a run, and which worker writes its files."""

import json
import os

import tensorflow as tf

from .errors import UserError


def make_strategy(params):
    """The ``tf.distribute`` strategy named by ``params.distribution``.

    ``none`` is TensorFlow's default (single-device) strategy; ``mirrored`` uses every local
    GPU (or every logical CPU device); ``multi_worker`` reads the cluster from ``TF_CONFIG``.
    """
    if params.distribution == "none":
        return tf.distribute.get_strategy()
    if params.distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise UserError(
            "distribution is multi_worker but TF_CONFIG is not set; set it to the cluster "
            "spec and this worker's task (see docs/runs.md), or use distribution none/mirrored")
    try:
        json.loads(config)
    except ValueError:
        raise UserError("TF_CONFIG is not valid JSON; fix the environment variable") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy):
    """Whether this process writes the run's files (always, unless multi-worker and not chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_checkpoint_dir(directory, strategy):
    """Where this worker saves: ``directory`` for the chief, a scratch folder beside it otherwise."""
    if is_chief(strategy):
        return directory
    resolver = strategy.cluster_resolver
    return os.path.join(os.path.dirname(directory), ".scratch",
                        f"{resolver.task_type}_{resolver.task_id}", os.path.basename(directory))
