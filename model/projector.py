"""TensorBoard projector files of embeddings, and the sprite of thumbnails they show.

The sprite is tiled with numpy and encoded with ``tf.io.encode_png``. Files
:func:`write_projector` puts in ``log_dir``:

    embeddings.tsv            the embeddings, one row per line (float32, exactly)
    metadata.tsv              one label per row, in embedding order
    sprite.png                the thumbnails in a square grid, same order
    projector_config.pbtxt    ties the three together, by paths relative to it
    events.out.tfevents.*     an empty event file

TensorBoard's projector only looks for a config in folders it lists as runs, and it
lists only folders that hold event files: the empty one makes ``log_dir`` a run, so the
projector shows it under ``tensorboard --logdir log_dir`` or any folder above it, and
relative paths keep it working after the folder is moved or copied. The embeddings are
a TSV file rather than a checkpoint: the projector then names the tensor as the config
says (``embeddings``), not ``<name>/.ATTRIBUTES/VARIABLE_VALUE``.

The t-SNE / PCA picture of the same embeddings is :mod:`model.visualize`'s.
"""

import glob
import io
import math
import os
import re

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector as tensorboard_projector

from . import files, pipelines
from .embedding_checks import checked_embeddings, checked_labels
from .image_folder import ImageFiles

TENSOR_FILENAME = "embeddings.tsv"
METADATA_FILENAME = "metadata.tsv"
SPRITE_FILENAME = "sprite.png"
# The name tensorboard_projector.visualize_embeddings gives the config it writes.
CONFIG_FILENAME = "projector_config.pbtxt"
# The largest sprite the projector accepts, per side (TensorBoard's projector guide).
MAX_SPRITE_SIDE = 8192
_THUMBNAIL_CHUNK = 1000  # images shrunk at a time (float32 copies of a chunk only)


def _checked_images(images):
    """uint8 [N, h, w] (grey) or [N, h, w, 3] (RGB); [N, h, w, 1] becomes [N, h, w]."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if (images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] == 0
            or (images.ndim == 4 and images.shape[-1] != 3)):
        raise ValueError(
            f"images must be a non-empty uint8 array [N, height, width] or [N, height, "
            f"width, 3], got {images.dtype} {images.shape}; convert images to uint8 0-255")
    return images


def _sprite_side(count):
    """How many cells each side of the square sprite grid of ``count`` images has."""
    return math.ceil(math.sqrt(count))


def make_sprite(images):
    """Tile thumbnails into the square grid TensorBoard's projector expects.

    Args:
        images: uint8 [N, h, w] (grey) or [N, h, w, 3] (colour).

    Returns:
        uint8 [side * h, side * w] (or [side * h, side * w, 3]) with side =
        ceil(sqrt(N)): image i at row i // side, column i % side; the cells after the
        last image are 0 (black, the MNIST background).
    """
    images = _checked_images(images)
    n, h, w = images.shape[:3]
    colours = images.shape[3:]
    side = _sprite_side(n)
    cells = np.zeros((side * side, h, w, *colours), np.uint8)
    cells[:n] = images
    return (cells.reshape(side, side, h, w, *colours).swapaxes(1, 2)
            .reshape(side * h, side * w, *colours))


def largest_thumbnail(count, side):
    """The largest side of ``count`` square thumbnails whose sprite fits the projector's
    :data:`MAX_SPRITE_SIDE` (``side`` when the images fit as they are)."""
    return min(side, MAX_SPRITE_SIDE // _sprite_side(count))


def thumbnails(images):
    """The images shrunk (area-averaged) just enough for their sprite to fit the
    projector's :data:`MAX_SPRITE_SIDE`; unchanged when it already fits.

    Args:
        images: uint8 [N, h, w] or [N, h, w, C].
    """
    images = _checked_images(images)
    largest = max(images.shape[1:3])
    scale = largest_thumbnail(len(images), largest) / largest
    if scale == 1:
        return images
    height, width = (max(1, int(dim * scale)) for dim in images.shape[1:3])
    pixels = images if images.ndim == 4 else images[..., None]
    chunks = []
    for start in range(0, len(pixels), _THUMBNAIL_CHUNK):
        chunk = tf.cast(pixels[start:start + _THUMBNAIL_CHUNK], tf.float32)
        small = tf.image.resize(chunk, [height, width], method="area")
        chunks.append(tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8).numpy())
    small = np.concatenate(chunks)
    return small if images.ndim == 4 else small[..., 0]


def sprite_thumbnails(images, params):
    """uint8 thumbnails of a split's images (an array or image files), as small as the
    projector's sprite needs: files are decoded straight to that size, so a large test
    set of large images is never held at full size."""
    if isinstance(images, ImageFiles):
        images = images.resized(largest_thumbnail(len(images), params.image_size))
    return thumbnails(pipelines.decode_all(images, params))


def one_line_names(names):
    """Class names as the projector's metadata.tsv can hold them: whitespace runs (tabs,
    newlines, which folder names may contain) become one space."""
    return [" ".join(str(name).split()) for name in names]


def write_projector(log_dir, embeddings, labels, images, tensor_name="embeddings"):
    """Write the embeddings, labels and thumbnails for TensorBoard's projector into
    ``log_dir``, a folder TensorBoard lists as a run (see the module's docstring).

    A previous projector in ``log_dir`` is replaced; every file is written atomically.

    Args:
        log_dir: the folder (created if missing), e.g. ``MODEL_DIR/projector``.
        embeddings: float [N, D].
        labels: [N] labels, written one per row to ``metadata.tsv``.
        images: uint8 [N, h, w] or [N, h, w, 3] thumbnails of the same rows, in the same
            order (see :func:`thumbnails` for images too large for one sprite).
        tensor_name: the name the projector shows for the embeddings.

    Returns:
        dict of the written paths: "tensor", "metadata", "sprite", "config".

    Raises:
        ValueError: on inconsistent shapes, a bad tensor_name, or a sprite larger
            than the projector accepts.
    """
    embeddings, label_lines, images = _checked_projector_input(embeddings, labels, images,
                                                               tensor_name)
    os.makedirs(log_dir, exist_ok=True)
    paths = {name: os.path.join(log_dir, filename) for name, filename in (
        ("tensor", TENSOR_FILENAME), ("metadata", METADATA_FILENAME),
        ("sprite", SPRITE_FILENAME), ("config", CONFIG_FILENAME))}
    text = io.StringIO()
    # 9 significant digits give back every float32 exactly.
    np.savetxt(text, embeddings.astype(np.float32), fmt="%.9g", delimiter="\t")
    files.write_text(paths["tensor"], text.getvalue())
    # The projector takes a first line as a header only when it has a tab, so a
    # single-column file has no header: line i is the label of row i.
    files.write_text(paths["metadata"], "".join(line + "\n" for line in label_lines))
    files.write_bytes(paths["sprite"], _png_bytes(make_sprite(images)))
    _write_projector_config(paths["config"], tensor_name, embeddings.shape, images.shape[1:3])
    if not glob.glob(os.path.join(glob.escape(log_dir), "events.out.tfevents.*")):
        writer = tf.summary.create_file_writer(log_dir)
        writer.flush()
        writer.close()
    return paths


def _checked_projector_input(embeddings, labels, images, tensor_name):
    """The embeddings (float64), the labels as the lines of metadata.tsv and the
    thumbnails (uint8) of :func:`write_projector`, or a ValueError before any file is
    written."""
    embeddings = checked_embeddings(embeddings)
    count = embeddings.shape[0]
    labels = checked_labels(labels, count)
    images = _checked_images(images)
    if images.shape[0] != count:
        raise ValueError(f"got {images.shape[0]} images for {count} embeddings; pass the "
                         "thumbnail of every embedded row, in the same order")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tensor_name):
        raise ValueError(f"tensor_name {tensor_name!r} must be a Python identifier, "
                         "e.g. embeddings")
    label_lines = [str(label) for label in labels.tolist()]
    if any(("\t" in line or "\n" in line) for line in label_lines):
        raise ValueError("labels must not contain tabs or newlines; they are written "
                         "one per line to metadata.tsv")
    side = _sprite_side(count)
    if side * max(images.shape[1:3]) > MAX_SPRITE_SIDE:
        raise ValueError(
            f"the sprite would be {side * images.shape[2]} x {side * images.shape[1]} pixels "
            f"but the projector accepts at most {MAX_SPRITE_SIDE} per side; use fewer or "
            "smaller images")
    return embeddings, label_lines, images


def _png_bytes(image):
    """uint8 [H, W] (grey) or [H, W, 3] (RGB) encoded as a PNG."""
    if image.ndim == 2:
        image = image[:, :, None]
    return tf.io.encode_png(image).numpy()


def _write_projector_config(path, tensor_name, shape, thumbnail_shape):
    """The projector_config.pbtxt that points the projector at the other files, by paths
    relative to its own folder (the projector resolves them against it)."""
    from google.protobuf import text_format

    config = tensorboard_projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = tensor_name
    embedding.tensor_path = TENSOR_FILENAME
    embedding.tensor_shape.extend(shape)
    embedding.metadata_path = METADATA_FILENAME
    embedding.sprite.image_path = SPRITE_FILENAME
    height, width = thumbnail_shape
    embedding.sprite.single_image_dim.extend([width, height])
    files.write_text(path, text_format.MessageToString(config))
