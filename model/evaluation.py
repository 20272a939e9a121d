"""Evaluating a network: embed the test set, its loss and retrieval metrics, checkpoints.

* :func:`embed_images`: the one way images become embeddings (the tf.data pipeline of
  :func:`model.pipelines.image_batches`, batches of ``EMBED_BATCH_SIZE``, inference mode).
* :func:`evaluate`: the loss and summaries averaged over test batches of the training
  batch size, and the retrieval metrics of :mod:`tftriplet.metrics`.
* :func:`restore_model`, :func:`evaluate_checkpoint`: a saved checkpoint of a model_dir,
  on one device in float32 whatever trained it.
* ``verification.json``: the same / different threshold calibrated by
  :func:`tftriplet.verification.calibrate_verification`.
"""

import contextlib
import logging
import os

import numpy as np
import tensorflow as tf

from tftriplet import metrics, verification
from . import checkpoints, collapse, datasets, files, pipelines, progress
from .errors import UserError, command
from .network import build_plain_model, make_embed_step, make_loss_step
from .run_folder import CHECKPOINT_DIRS, VERIFICATION_FILE, holds_checkpoints

# Images per forward pass when only embeddings are needed: large enough to be quick,
# small enough for any machine (~100 MB of first-layer activations in float32).
EMBED_BATCH_SIZE = 1000


def _embed_with(embed_step, images, params, what=None):
    """Embeddings of ``images`` by batches, with progress reported as the step ``what``
    when given (one-off embeddings of a whole set; every epoch's evaluation is silent)."""
    batches = pipelines.image_batches(images, params, EMBED_BATCH_SIZE)
    total = -(-len(images) // EMBED_BATCH_SIZE)
    with progress.step(what, total) if what else contextlib.nullcontext(progress.SILENT) as bar:
        embedded = []
        for batch in pipelines.read_batches(batches):
            embedded.append(embed_step(batch))
            bar.update(len(embedded))
    return tf.concat(embedded, axis=0)


def embed_images(model, images, params, what=None):
    """Embed images (uint8 [N, S, S] or [N, S, S, C], or image files) with ``model`` in
    inference mode.

    Returns:
        float32 [N, D] numpy array.
    """
    return _embed_with(make_embed_step(model, params), images, params, what).numpy()


def comparable(embeddings, params):
    """Embeddings as the metrics compare them, by Euclidean distance: L2-normalised when the
    training distance is angular (between unit vectors, the Euclidean distance orders
    pairs exactly as the cosine distance does)."""
    embeddings = np.asarray(embeddings, np.float32)
    if params.distance_metric != "angular":
        return embeddings
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, np.float32(1e-12))


def evaluate(embed_step, loss_step, params, test_images, test_labels, what=None):
    """Loss and summaries averaged over the test batches, plus the retrieval metrics.

    The first ``params.eval_size`` test images are embedded in batches of
    ``EMBED_BATCH_SIZE`` (inference treats each image on its own, so only speed depends
    on it); the loss is averaged over consecutive batches of ``params.batch_size``, the
    batches it was trained on (batch-all and batch-hard depend on what a batch holds).

    Args:
        embed_step, loss_step: from :func:`model.network.make_embed_step` and
            :func:`model.network.make_loss_step`.
        params: :class:`model.params.Params`.
        test_images: uint8 [N, S, S] or [N, S, S, C], or
            :class:`~model.image_folder.ImageFiles`.
        test_labels: int [N].
        what: the step to report progress as (:mod:`model.progress`); None: silent.

    Returns:
        (results, embeddings): a dict of Python floats (``loss``, the strategy's
        summaries, ``embedding_mean_norm``, ``embedding_spread`` (see
        :func:`model.collapse.spread`), ``precision_at_1``, ``r_precision``, ``map_at_r``,
        ``recall_at_K``) and the float32 [n, D] embeddings of the evaluated test images.
    """
    datasets.check_shapes(test_images, test_labels, params, "test")
    count = min(params.eval_size, len(test_labels))
    embeddings = _embed_with(embed_step, test_images[:count], params, what)
    labels = tf.constant(test_labels[:count], tf.int64)
    totals = {}
    for start in range(0, count, params.batch_size):
        stop = min(start + params.batch_size, count)
        loss, summaries = loss_step(labels[start:stop], embeddings[start:stop])
        for name, value in {"loss": loss, **summaries}.items():
            totals[name] = totals.get(name, 0.0) + float(value) * (stop - start)
    results = {name: total / count for name, total in totals.items()}
    embeddings = embeddings.numpy()
    compared = comparable(embeddings, params)
    results["embedding_spread"] = collapse.spread(compared)
    results.update(metrics.retrieval_metrics(compared, test_labels[:count]))
    return results, embeddings


def restore_model(model_dir, params, checkpoint="latest"):
    """The network of ``model_dir`` with the weights of its latest or best checkpoint.

    The newest checkpoint of the folder that reads is used (a damaged one is skipped with
    a warning; one that a running trainer deletes meanwhile is replaced by the next).

    Returns:
        (model, path of the checkpoint restored).

    Raises:
        UserError: if the folder holds no readable checkpoint.
    """
    if checkpoint not in CHECKPOINT_DIRS:
        raise UserError(f"unknown checkpoint '{checkpoint}'; use latest or best")
    folder = os.path.join(model_dir, CHECKPOINT_DIRS[checkpoint])
    model = build_plain_model(params)
    path = checkpoints.restore(tf.train.Checkpoint(model=model), folder)
    if not path:
        if checkpoint == "best" and holds_checkpoints(model_dir):
            raise UserError(f"no checkpoint in {folder}; run {command('train')} --model_dir "
                            f"{model_dir} to rebuild it from {CHECKPOINT_DIRS['latest']}/ "
                            "(if they still hold the best epoch), or use --checkpoint latest")
        raise UserError(f"no checkpoint in {folder}; train first: {command('train')} "
                        f"--model_dir {model_dir}")
    return model, path


def load_test_split(params, model_dir, data_dir):
    """The test split of ``data_dir`` as the run in ``model_dir`` reads it, and the class
    names: (images, labels, class_names); see :func:`model.datasets.load`."""
    data = datasets.load(params, data_dir, model_dir, splits=("test",))
    return (*data.test, data.class_names)


def evaluate_checkpoint(params, model_dir, data_dir, checkpoint="latest", knn_k=None):
    """Evaluate a saved checkpoint on the test set; writes ``model_dir/metrics_eval.json``
    with what was evaluated: the checkpoint's path and epoch, the data folder and the
    number of test images.

    With ``knn_k``, also ``knn_accuracy``: the evaluated test images classified by the
    vote of their ``knn_k`` nearest training images (:func:`tftriplet.metrics.knn_accuracy`).
    """
    if knn_k is None:
        test_images, test_labels, _ = load_test_split(params, model_dir, data_dir)
    else:
        data = datasets.load(params, data_dir, model_dir)
        (train_images, train_labels), (test_images, test_labels) = data.train, data.test
        _check_knn_reference(train_labels, test_labels, knn_k)
    model, path = restore_model(model_dir, params, checkpoint)
    context = {"checkpoint": path, "epoch": int(path.rsplit("-", 1)[1]),
               "data_dir": os.path.abspath(data_dir),
               "num_images": min(params.eval_size, len(test_labels))}
    logging.info("Evaluating %s (epoch %d) on the first %d test images of %s",
                 context["checkpoint"], context["epoch"], context["num_images"],
                 context["data_dir"])
    embed_step = make_embed_step(model, params)
    results, embeddings = evaluate(embed_step, make_loss_step(params), params, test_images,
                                   test_labels,
                                   what=f"Embedding {context['num_images']:,} test images")
    if knn_k is not None:
        references = _embed_with(embed_step, train_images, params,
                                 f"Embedding {len(train_labels):,} training images").numpy()
        results["knn_accuracy"] = metrics.knn_accuracy(
            comparable(embeddings, params), test_labels[:len(embeddings)],
            comparable(references, params), train_labels, knn_k)
        context["knn_reference"] = {"split": "train", "num_images": len(train_labels),
                                    "k": knn_k}
    files.write_json(os.path.join(model_dir, "metrics_eval.json"), {**context, **results})
    return results


def _check_knn_reference(train_labels, test_labels, k):
    unseen = sorted(set(np.unique(test_labels).tolist()) - set(np.unique(train_labels).tolist()))
    if unseen:
        raise UserError(
            f"test class{'es' if len(unseen) > 1 else ''} {', '.join(map(str, unseen[:5]))} "
            f"never appear{'' if len(unseen) > 1 else 's'} among the training images, so a "
            "vote of training images cannot name them (an open-set split): drop --reference; "
            "the retrieval metrics score such runs")
    if k > len(train_labels):
        raise UserError(f"--k is {k} but the training split holds {len(train_labels)} "
                        "images; lower --k")


def write_verification(model_dir, embeddings, labels, params, epoch):
    """Calibrate the same / different threshold on ``embeddings`` (of the network of
    ``epoch``) and write verification.json.

    Returns:
        the record written (see
        :func:`tftriplet.verification.calibrate_verification`), with ``epoch``.
    """
    try:
        record = verification.calibrate_verification(comparable(embeddings, params),
                                                np.asarray(labels), seed=params.seed)
    except verification.CalibrationError as err:
        raise UserError(f"{err}: these {len(labels)} test images cannot calibrate the "
                        "verification threshold; use a test set with more classes") from None
    record["epoch"] = epoch
    files.write_json(os.path.join(model_dir, VERIFICATION_FILE), record)
    return record


def describe_accuracy(record):
    """The held-out accuracy of a verification record with its 95 % interval and the
    images behind it (records written before 1.1 have neither)."""
    text = f"{record['held_out_accuracy']:.4f}"
    if "held_out_accuracy_interval" in record:
        low, high = record["held_out_accuracy_interval"]
        text += f" (95% interval {low:.4f}-{high:.4f}, {record['held_out_images']} images)"
    return text


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def load_verification(model_dir):
    """The record of ``model_dir/verification.json``; None when it is missing, unreadable or
    damaged (a threshold or an accuracy that is not a finite number, no epoch)."""
    record = files.read_json(os.path.join(model_dir, VERIFICATION_FILE))
    if (record is None or not _number(record.get("threshold"))
            or not _number(record.get("held_out_accuracy"))
            or not isinstance(record.get("epoch"), int) or isinstance(record["epoch"], bool)):
        return None
    return record


def read_verification(model_dir):
    """:func:`load_verification`, required.

    Raises:
        UserError: when it is missing, unreadable or damaged.
    """
    record = load_verification(model_dir)
    if record is None:
        raise UserError(f"no valid calibrated threshold in "
                        f"{os.path.join(model_dir, VERIFICATION_FILE)}; run "
                        f"{command('train')} --model_dir {model_dir} again to (re)write it")
    return record
