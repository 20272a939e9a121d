"""What a run writes for TensorBoard: scalars, a training image, the HParams record."""

import json
import os

import tensorflow as tf
from tftriplet import metrics, triplet_loss

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


# TensorBoard's HParams table shows the first five hyper-parameters and the first five
# metrics of the experiment, each column 10em wide, and lists first the hyper-parameters
# marked as differing between runs. These are marked so, in every run's experiment
# config (the config says nothing else about the runs: TensorBoard uses the first one it
# finds), so that the columns shown are those that matter most for a triplet loss.
HPARAMS_FIRST = ("triplet_strategy", "margin", "distance", "learning_rate", "embedding_size")
_DISPLAY_NAMES = {"precision_at_1": "P@1", "r_precision": "R-precision", "map_at_r": "MAP@R",
                  **{f"recall_at_{k}": f"Recall@{k}" for k in metrics.RECALL_KS}}


def hparams_of(params):
    """The hyper-parameters recorded for the HParams dashboard: every params key, and the
    distance actually used. The dashboard takes numbers, booleans and strings: class
    lists are shown as JSON, an unset key (null) as "null"."""
    values = {**params.to_dict(), "distance": params.distance_metric}
    return {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in values.items()}


def metric_names():
    """The eval scalars as the HParams table lists them: P@1, R-precision, MAP@R first
    (what the README's results compare), then Recall@K, the loss and the rest."""
    strategy_summaries = dict.fromkeys(
        name for names in triplet_loss.SUMMARY_NAMES.values() for name in names)
    return (*metrics.METRIC_NAMES, "loss", *strategy_summaries, "embedding_mean_norm",
            "embedding_spread", "collapsed")


def _experiment(params):
    """The experiment config: every hyper-parameter, typed, :data:`HPARAMS_FIRST` marked
    as differing; the metrics of :func:`metric_names` in that order."""
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hparams_summary

    def info(name, value):
        kind = ("DATA_TYPE_BOOL" if isinstance(value, bool) else "DATA_TYPE_FLOAT64"
                if isinstance(value, (int, float)) else "DATA_TYPE_STRING")
        hparam = api_pb2.HParamInfo(name=name, type=kind, differs=name in HPARAMS_FIRST)
        if kind == "DATA_TYPE_BOOL":
            hparam.domain_discrete.extend([False, True])
        return hparam

    return hparams_summary.experiment_pb(
        hparam_infos=[info(name, value) for name, value in hparams_of(params).items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=name),
                                          display_name=_DISPLAY_NAMES.get(name, name))
                      for name in metric_names()])


# The Custom Scalars tab: the figures that say whether training works, in categories
# that start open (the Scalars tab sorts every tag into a category of its own by name and
# opens the first two only: collapsed and embedding_mean_norm).
_LAYOUT = (
    ("retrieval (eval)", (("P@1", r"^precision_at_1$"), ("R-precision", r"^r_precision$"),
                          ("MAP@R", r"^map_at_r$"), ("Recall@K", r"^recall_at_\d+$"))),
    ("loss and mining (train, eval)", (
        ("loss", r"^loss$"), ("fraction of positive triplets", r"^fraction_positive_triplets$"),
        ("hardest distances", r"^hardest_(positive|negative)_dist$"),
        ("fraction of positive pairs", r"^fraction_positive_pairs$"))),
    ("embeddings", (("mean norm", r"^embedding_mean_norm$"),
                    ("spread (eval)", r"^embedding_spread$"), ("collapsed (eval)", r"^collapsed$"))),
)


def _layout():
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary

    return custom_scalar_summary.pb(layout_pb2.Layout(category=[
        layout_pb2.Category(title=title, closed=False, chart=[
            layout_pb2.Chart(title=chart, multiline=layout_pb2.MultilineChartContent(tag=[tag]))
            for chart, tag in charts])
        for title, charts in _LAYOUT]))


def write_dashboards(eval_writer, params):
    """Record the run for TensorBoard's HParams dashboard (its hyper-parameters,
    :func:`hparams_of`, and the experiment config that orders the table's columns,
    :func:`_experiment`) and the Custom Scalars tab's layout (:data:`_LAYOUT`).

    The records go into the eval/ run, not the model_dir root: an event file there
    would make TensorBoard list a run named "." (or the folder's name) holding nothing
    else. No trial is named: the HParams dashboard then names each row by its run's path
    under the folder it was opened on (``search_a/margin_0.2/eval``), so two same-named
    runs (of two searches, or a copy) are never merged into one averaged row, and a moved
    run is named by where it is. Every run writes the same layout (TensorBoard merges
    them) and the same config apart from the values' types (it uses the first it finds).
    """
    from tensorboard.plugins.hparams import summary as hparams_summary

    with eval_writer.as_default():
        for record in (_experiment(params), hparams_summary.session_start_pb(hparams_of(params)),
                       _layout()):
            tf.summary.experimental.write_raw_pb(record.SerializeToString(), step=0)
