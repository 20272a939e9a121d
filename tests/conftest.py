"""Shared fixtures: tiny synthetic IDX datasets written into a tmp dir."""

import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

# Two logical CPU devices for the tf.distribute tests; this must happen before TensorFlow
# initialises its runtime, hence at conftest import. Everything else runs on the first.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def write_idx(path, array, compress=False):
    """Write a uint8 array as an IDX file (images [N, rows, cols] or labels [N])."""
    array = np.asarray(array, dtype=np.uint8)
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    data = struct.pack(">I" + "I" * array.ndim, magic, *array.shape) + array.tobytes()
    path = str(path)
    if compress:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(data)
        return path + ".gz"
    with open(path, "wb") as f:
        f.write(data)
    return path


def synthetic_digits(num_examples, num_classes=10, size=28, seed=0):
    """Noisy images whose class is the row of a faint horizontal bar at a random column.

    Hard enough that an untrained network retrieves poorly (raw-pixel MAP@R ~0.1), easy
    enough that a tiny CNN learns it in a few epochs.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(num_examples) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 200, size=(num_examples, size, size))
    for i, label in enumerate(labels):
        row = 2 + (label * (size - 4)) // num_classes
        start = rng.integers(0, size // 2)
        images[i, row:row + 2, start:start + size // 2] += 120
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_dataset(data_dir, num_train=240, num_test=100, compress=True, size=28):
    data_dir.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", num_train, 1), ("t10k", num_test, 2)):
        images, labels = synthetic_digits(count, size=size, seed=seed)
        write_idx(data_dir / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(data_dir / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return str(data_dir)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """The one MirroredStrategy of the test session, over the 2 logical CPU devices.

    Every MirroredStrategy numbers its collective operations from the same start, so a
    second one in the process would reuse the first one's keys ("Shape mismatch in the
    collective instance"): every test that needs one shares this.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def tiny_data_dir(tmp_path):
    """A data_dir with 240 train and 100 test synthetic 28x28 images of 10 classes."""
    return write_dataset(tmp_path / "data")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The params of the tiny test runs: a network of a few thousand weights, two epochs of
# the 240 images of tiny_data_dir.
TINY = dict(batch_size=32, num_epochs=2, num_channels=4, embedding_size=8, train_size=240,
            eval_size=100, save_summary_steps=2)


def tiny_params(**changes):
    """:data:`TINY` with ``changes``, as a validated Params."""
    from model.params import Params

    return Params().replace(**{**TINY, **changes})


def run_script(*args, cwd=REPO):
    """Run ``python ARGS...`` (an entry script and its arguments) in ``cwd``."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(model_dir, data_dir) of a tiny run trained for one epoch, shared by the tests that read it.

    Tests must not modify it.
    """
    import json

    from model import training
    from model.params import params_from_dict

    root = tmp_path_factory.mktemp("trained")
    data_dir = write_dataset(root / "data")
    model_dir = root / "run"
    model_dir.mkdir()
    params = dict(TINY, num_epochs=1)
    (model_dir / "params.json").write_text(json.dumps(params))
    training.train_and_evaluate(params_from_dict(params), str(model_dir), data_dir)
    return str(model_dir), data_dir


def write_image_folders(root, num_train=120, num_test=50, num_classes=4, size=28,
                        formats=("png", "jpg"), colour=True, with_test=True, sizes=None):
    """Class folders ``root/train/class_<c>/`` (and ``root/test/``) of synthetic images.

    The images are :func:`synthetic_digits` (the class is a bar's row), tinted per class
    when ``colour`` (RGB; "mixed": every other image), saved alternately in ``formats``;
    ``sizes`` (a list of (height, width)) gives the images other sizes in turn, resized
    from the square ones.
    Returns the root as a string.
    """
    splits = (("train", num_train, 1), ("test", num_test, 2))[:2 if with_test else 1]
    for split, count, seed in splits:
        images, labels = synthetic_digits(count, num_classes=num_classes, size=size, seed=seed)
        for i, (image, label) in enumerate(zip(images, labels.tolist())):
            pixels = image[..., None]
            if colour is True or (colour == "mixed" and i % 2):
                tint = np.array([(label * 67) % 256, 255 - (label * 37) % 256, 128], np.float32)
                pixels = (pixels * (0.5 + tint / 512)).clip(0, 255).astype(np.uint8)
            if sizes:
                height, width = sizes[i % len(sizes)]
                pixels = tf.cast(tf.round(tf.image.resize(pixels, [height, width])),
                                 tf.uint8).numpy()
            folder = os.path.join(str(root), split, f"class_{label}")
            os.makedirs(folder, exist_ok=True)
            fmt = formats[i % len(formats)]
            encoded = (tf.io.encode_png(pixels) if fmt == "png"
                       else tf.io.encode_jpeg(pixels, quality=95))
            with open(os.path.join(folder, f"{split}_{i:04d}.{fmt}"), "wb") as f:
                f.write(encoded.numpy())
    return str(root)


def as_tensorboard_serves_it(plugin_class, logdir):
    """The TensorBoard plugin ``plugin_class`` of ``tensorboard --logdir logdir``, with its
    runs found the way TensorBoard finds them (folders holding event files)."""
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins import base_plugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return plugin_class(base_plugin.TBContext(
        logdir=str(logdir), multiplexer=multiplexer,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir))))
