"""Export the embedding network as a SavedModel, and same / different verification.

The SavedModel under ``model_dir/export`` has one function, ``embed(images)``, traced
for uint8 images (0-255) and for float32 images (0-1), each [N, S, S] or [N, S, S, 1];
``serving_default`` is the float32 [N, S, S, 1] version. ``model_dir/verification.json``
holds the distance threshold below which two images are called the same class.
"""

import json
import os

import numpy as np
import tensorflow as tf

from model.utils import UserError, write_json

EXPORT_DIR = "export"
VERIFICATION_FILE = "verification.json"


class EmbeddingModule(tf.Module):
    """A tf.Module that maps a batch of images of any of the supported layouts to embeddings."""

    def __init__(self, model, image_size):
        super().__init__()
        self.model = model
        self.image_size = image_size

    @tf.function
    def embed(self, images):
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        images = tf.reshape(tf.cast(images, tf.float32),
                            [-1, self.image_size, self.image_size, 1])
        return self.model(images, training=False)


def export_model(model, params, model_dir):
    """Write the SavedModel to ``model_dir/export`` (replacing an older export); returns its path."""
    module = EmbeddingModule(model, params.image_size)
    size = params.image_size
    signatures = {}
    for dtype in (tf.uint8, tf.float32):
        for shape in ([None, size, size], [None, size, size, 1]):
            concrete = module.embed.get_concrete_function(tf.TensorSpec(shape, dtype))
            if dtype == tf.float32 and len(shape) == 4:
                signatures["serving_default"] = concrete
    path = os.path.join(model_dir, EXPORT_DIR)
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def has_export(model_dir):
    return os.path.isfile(os.path.join(model_dir, EXPORT_DIR, "saved_model.pb"))


def load_exported(model_dir):
    """The exported module of ``model_dir``; call ``.embed(images)`` on it."""
    path = os.path.join(model_dir, EXPORT_DIR)
    if not has_export(model_dir):
        raise UserError(f"no exported model in {path}; finish training first (python train.py "
                        f"--model_dir {model_dir}) or run it again to export")
    return tf.saved_model.load(path)


def pair_distances(embeddings, labels, num_pairs, rng):
    """Distances of ``num_pairs`` random same-label pairs and as many different-label pairs.

    Returns:
        (distances float64 [2 * num_pairs], same bool [2 * num_pairs]).
    """
    labels = np.asarray(labels)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    by_class = [members for members in by_class if len(members) >= 2]
    if not by_class or len(np.unique(labels)) < 2:
        raise UserError("verification needs at least two classes and a class with two images")
    classes = rng.integers(len(by_class), size=num_pairs)
    same = np.array([rng.choice(by_class[c], 2, replace=False) for c in classes])
    first = rng.integers(len(labels), size=4 * num_pairs)
    second = rng.integers(len(labels), size=4 * num_pairs)
    keep = labels[first] != labels[second]
    different = np.stack([first[keep], second[keep]], axis=1)[:num_pairs]
    pairs = np.concatenate([same, different])
    diffs = embeddings[pairs[:, 0]].astype(np.float64) - embeddings[pairs[:, 1]]
    is_same = np.concatenate([np.ones(len(same), bool), np.zeros(len(different), bool)])
    return np.sqrt((diffs ** 2).sum(axis=1)), is_same


def best_threshold(distances, same):
    """The threshold t maximising the accuracy of "same iff distance <= t", and that accuracy."""
    order = np.argsort(distances, kind="stable")
    sorted_d, sorted_same = distances[order], same[order]
    # Calling the first i pairs "same": correct = same among them + different after them.
    correct = np.concatenate([[0], np.cumsum(sorted_same)]) + \
        (np.count_nonzero(~sorted_same) - np.concatenate([[0], np.cumsum(~sorted_same)]))
    i = int(np.argmax(correct))
    if i == 0:
        threshold = sorted_d[0] / 2
    elif i == len(sorted_d):
        threshold = sorted_d[-1]
    else:  # midway between the last "same" and the first "different"
        threshold = (sorted_d[i - 1] + sorted_d[i]) / 2
    return float(threshold), float(correct[i] / len(sorted_d))


def calibrate_verification(embeddings, labels, model_dir, num_pairs=20000, seed=0):
    """Pick the threshold on one half of the test set and measure its accuracy on the other.

    Writes ``model_dir/verification.json``; returns its contents.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    halves = order[: len(order) // 2], order[len(order) // 2:]
    fit = pair_distances(embeddings[halves[0]], labels[halves[0]], num_pairs, rng)
    threshold, fit_accuracy = best_threshold(*fit)
    held_d, held_same = pair_distances(embeddings[halves[1]], labels[halves[1]], num_pairs, rng)
    accuracy = float(np.mean((held_d <= threshold) == held_same))
    record = {"threshold": threshold, "calibration_accuracy": fit_accuracy,
              "held_out_accuracy": accuracy, "pairs_per_half": 2 * num_pairs}
    write_json(os.path.join(model_dir, VERIFICATION_FILE), record)
    return record


def read_verification(model_dir):
    path = os.path.join(model_dir, VERIFICATION_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise UserError(f"no calibrated threshold in {path}; train (or resume) the run to "
                        "write it") from None


def read_image(path, image_size, resize=False):
    """Read a PNG, JPEG, GIF or BMP file as a uint8 [image_size, image_size] grayscale image.

    Colour images are converted to grayscale (ITU-R 601 luma) and an alpha channel is
    dropped. Another size is an error unless ``resize`` (area-averaged, aspect not kept).
    MNIST digits are light on a dark background: invert dark-on-light images first.
    """
    try:
        data = tf.io.read_file(path)
        image = tf.io.decode_image(data, expand_animations=False)
    except tf.errors.NotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (tf.errors.InvalidArgumentError, ValueError):
        raise UserError(f"{path}: not a PNG, JPEG, GIF or BMP image") from None
    if image.dtype != tf.uint8:
        raise UserError(f"{path}: {image.dtype.name} pixels; save it as an 8-bit image")
    channels = image.shape[-1]
    if channels in (2, 4):  # grayscale + alpha, RGB + alpha
        image = image[..., :channels - 1]
    if image.shape[-1] == 3:
        image = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
    height, width = image.shape[:2]
    if (height, width) != (image_size, image_size):
        if not resize:
            raise UserError(f"{path}: image is {width}x{height}, the model expects "
                            f"{image_size}x{image_size}; resize it or pass --resize")
        image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size],
                                method="area")
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image.numpy()[..., 0]
