"""Pictures of embeddings: TensorBoard projector files and a static PCA scatter plot.

Everything is drawn with numpy and encoded with ``tf.io.encode_png``; no plotting
or imaging library is needed.

Files :func:`write_projector` puts in ``log_dir`` (``tensorboard --logdir log_dir``,
Projector tab):

    <tensor_name>.ckpt.index, .data-*   the embeddings as a checkpointed tf.Variable
    metadata.tsv                        one label per row, in embedding order
    sprite.png                          the thumbnails in a square grid, same order
    projector_config.pbtxt              ties the three together
"""

import math
import os
import re

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

METADATA_FILENAME = "metadata.tsv"
SPRITE_FILENAME = "sprite.png"
# The largest sprite the projector accepts, per side (TensorBoard's projector guide).
MAX_SPRITE_SIDE = 8192
# Matplotlib's "tab10" colours: ten hues that stay distinct on white.
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
], dtype=np.uint8)
# A 3 x 5 pixel font for the legend's label numbers, so no font file is needed.
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", "-": "000000111000000",
}
_PLOT_SIDE = 720
_MARGIN = 20
_DOT_RADIUS = 2
_GLYPH_SCALE = 3
_BACKGROUND = 255
_FRAME_GREY = 160


def _as_images(images, name="images"):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty uint8 array [N, height, width], got "
            f"{images.dtype} {images.shape}; convert grey images to uint8 0-255")
    return images


def _as_matrix(values, name, columns=None):
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] == 0 or (columns and values.shape[1] != columns):
        wanted = f"[N, {columns}]" if columns else "[N, D]"
        raise ValueError(f"{name} must be a non-empty 2-D array {wanted}, got shape "
                         f"{values.shape}; pass one row per example")
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must hold finite real numbers; check for NaN or Inf")
    return values.astype(np.float64)


def _as_labels(labels, count):
    labels = np.asarray(labels)
    if labels.shape != (count,):
        raise ValueError(f"labels must have shape ({count},), one per row, got {labels.shape}")
    return labels


def _write_png(path, image):
    """Write uint8 [H, W] (grey) or [H, W, 3] (RGB) as a PNG, creating the folder."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if image.ndim == 2:
        image = image[:, :, None]
    tf.io.write_file(path, tf.io.encode_png(image))


def make_sprite(images):
    """Tile thumbnails into the square grid TensorBoard's projector expects.

    Args:
        images: uint8 [N, h, w].

    Returns:
        uint8 [side * h, side * w] with side = ceil(sqrt(N)): image i at row
        i // side, column i % side; the cells after the last image are 0
        (black, the MNIST background).
    """
    images = _as_images(images)
    n, h, w = images.shape
    side = math.ceil(math.sqrt(n))
    cells = np.zeros((side * side, h, w), np.uint8)
    cells[:n] = images
    return cells.reshape(side, side, h, w).transpose(0, 2, 1, 3).reshape(side * h, side * w)


def projector_tensor_key(tensor_name):
    """The checkpoint key of a variable saved as ``tf.train.Checkpoint(tensor_name=var)``."""
    return f"{tensor_name}/.ATTRIBUTES/VARIABLE_VALUE"


def write_projector(log_dir, embeddings, labels, images, tensor_name="test_embeddings"):
    """Write the embeddings, labels and thumbnails for TensorBoard's projector.

    A previous projector config in ``log_dir`` is replaced. The config holds the
    checkpoint's absolute path: the projector opens that path as given (a relative
    one would depend on where TensorBoard is started) and, without one, would pick
    the folder's latest training checkpoint instead. Moving ``log_dir`` therefore
    needs the files written again.

    Args:
        log_dir: folder given to ``tensorboard --logdir`` (created if missing).
        embeddings: float [N, D].
        labels: [N] labels, written one per row to ``metadata.tsv``.
        images: uint8 [N, h, w] thumbnails of the same rows, in the same order.
        tensor_name: name of the variable in the checkpoint (a Python identifier).

    Returns:
        dict of the written paths: "checkpoint" (prefix), "metadata", "sprite", "config".

    Raises:
        ValueError: on inconsistent shapes, a bad tensor_name, or a sprite larger
            than the projector accepts.
    """
    embeddings = _as_matrix(embeddings, "embeddings")
    n = embeddings.shape[0]
    labels = _as_labels(labels, n)
    images = _as_images(images)
    if images.shape[0] != n:
        raise ValueError(f"got {images.shape[0]} images for {n} embeddings; pass the "
                         "thumbnail of every embedded row, in the same order")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tensor_name):
        raise ValueError(f"tensor_name {tensor_name!r} must be a Python identifier, "
                         "e.g. test_embeddings")
    label_text = [str(label) for label in labels.tolist()]
    if any(("\t" in text or "\n" in text) for text in label_text):
        raise ValueError("labels must not contain tabs or newlines; they are written "
                         "one per line to metadata.tsv")
    side = math.ceil(math.sqrt(n))
    if side * max(images.shape[1:]) > MAX_SPRITE_SIDE:
        raise ValueError(
            f"the sprite would be {side * images.shape[2]} x {side * images.shape[1]} pixels "
            f"but the projector accepts at most {MAX_SPRITE_SIDE} per side; use fewer or "
            "smaller images")

    os.makedirs(log_dir, exist_ok=True)
    paths = {name: os.path.abspath(os.path.join(log_dir, filename)) for name, filename in (
        ("checkpoint", f"{tensor_name}.ckpt"), ("metadata", METADATA_FILENAME),
        ("sprite", SPRITE_FILENAME), ("config", "projector_config.pbtxt"))}
    variable = tf.Variable(embeddings.astype(np.float32), trainable=False)
    # write(), not save(): save() would rewrite the folder's "checkpoint" index file,
    # which belongs to any training checkpoints kept there.
    tf.train.Checkpoint(**{tensor_name: variable}).write(paths["checkpoint"])
    # The projector takes a first line as a header only when it has a tab, so a
    # single-column file has no header: line i is the label of row i.
    with open(paths["metadata"], "w") as f:
        f.write("".join(text + "\n" for text in label_text))
    _write_png(paths["sprite"], make_sprite(images))

    config = projector.ProjectorConfig()
    config.model_checkpoint_path = paths["checkpoint"]
    embedding = config.embeddings.add()
    embedding.tensor_name = projector_tensor_key(tensor_name)
    # Relative paths: the projector resolves them against the config's folder.
    embedding.metadata_path = METADATA_FILENAME
    embedding.sprite.image_path = SPRITE_FILENAME
    embedding.sprite.single_image_dim.extend([images.shape[2], images.shape[1]])
    projector.visualize_embeddings(log_dir, config)
    return paths


def pca_2d(embeddings):
    """Project embeddings on their first two principal axes.

    Args:
        embeddings: float [N, D].

    Returns:
        float64 [N, 2], centred. Each axis's sign is fixed so that its largest
        loading is positive, so the same embeddings always give the same picture.
        Columns beyond the rank of the data (e.g. D = 1) are 0.
    """
    centred = _as_matrix(embeddings, "embeddings")
    centred = centred - centred.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    largest = axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)]
    axes = axes * np.where(largest < 0, -1.0, 1.0)[:, None]
    points = np.zeros((centred.shape[0], 2))
    points[:, :len(axes)] = centred @ axes.T
    return points


def label_mean_images(images, labels):
    """The mean image of each label, as legend thumbnails.

    Args:
        images: uint8 [N, h, w].
        labels: [N].

    Returns:
        dict label -> uint8 [h, w].
    """
    images = _as_images(images)
    labels = _as_labels(labels, images.shape[0])
    return {label: np.round(images[labels == label].mean(axis=0)).astype(np.uint8)
            for label in np.unique(labels).tolist()}


def _text_bitmap(text):
    """bool [5 * scale, (4 * len - 1) * scale] drawing ``text``; None if a glyph is missing."""
    if not text or any(char not in _GLYPHS for char in text):
        return None
    glyphs = [np.array(list(_GLYPHS[char]), dtype=int).reshape(5, 3) for char in text]
    spaced = [np.pad(glyph, ((0, 0), (0, 1))) for glyph in glyphs]
    bitmap = np.concatenate(spaced, axis=1)[:, :-1].astype(bool)
    return np.kron(bitmap, np.ones((_GLYPH_SCALE, _GLYPH_SCALE), bool))


def _to_pixels(points, side):
    """Map points [N, 2] to integer (row, col) in a side x side area, same scale on both axes."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = max(float((high - low).max()), 1e-12)
    # Keep every disc inside the frame drawn on the area's border.
    usable = side - 1 - 2 * (_DOT_RADIUS + 2)
    centred = (points - (low + high) / 2) / span * usable
    cols = np.rint((side - 1) / 2 + centred[:, 0]).astype(int)
    rows = np.rint((side - 1) / 2 - centred[:, 1]).astype(int)  # y grows upwards
    return rows, cols


def _draw_dots(area, rows, cols, colours):
    """Draw a disc per point on ``area`` [S, S, 3]; a later point covers an earlier one."""
    side = area.shape[0]
    owner = np.full((side, side), -1)
    order = np.arange(len(rows))
    r = _DOT_RADIUS
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r + 1:
                # maximum.at is defined for repeated pixels, unlike plain fancy assignment.
                np.maximum.at(owner, (rows + dy, cols + dx), order)
    drawn = owner >= 0
    area[drawn] = colours[owner[drawn]]


def _thumbnail(image):
    """A legend image, uint8 [h, w], at twice its size: uint8 [2h, 2w]."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"legend images must be uint8 [height, width], got {image.dtype} "
                         f"{image.shape}; e.g. use label_mean_images")
    return np.kron(image, np.ones((2, 2), np.uint8))


def _legend(distinct_labels, legend_images):
    """One row per label: colour swatch, label number, thumbnail. uint8 [H, W, 3]."""
    legend_images = legend_images or {}
    thumbs = [_thumbnail(legend_images[label]) if label in legend_images else None
              for label in distinct_labels]
    texts = [_text_bitmap(str(label)) for label in distinct_labels]
    swatch, gap = 16, 8
    text_width = max([t.shape[1] for t in texts if t is not None], default=0)
    thumb_h = max([t.shape[0] for t in thumbs if t is not None], default=0)
    thumb_w = max([t.shape[1] for t in thumbs if t is not None], default=0)
    row_h = max(swatch, 5 * _GLYPH_SCALE, thumb_h) + gap
    width = _MARGIN + swatch + gap + text_width + gap + thumb_w + _MARGIN
    legend = np.full((2 * _MARGIN + row_h * len(distinct_labels), width, 3),
                     _BACKGROUND, np.uint8)
    for i, (text, thumb) in enumerate(zip(texts, thumbs)):
        top, x = _MARGIN + i * row_h, _MARGIN
        mid = top + row_h // 2
        legend[mid - swatch // 2:mid + swatch // 2, x:x + swatch] = PALETTE[i % len(PALETTE)]
        x += swatch + gap
        if text is not None:
            y = mid - text.shape[0] // 2
            legend[y:y + text.shape[0], x:x + text.shape[1]][text] = 0
        x += text_width + gap
        if thumb is not None:
            y = mid - thumb.shape[0] // 2
            legend[y:y + thumb.shape[0], x:x + thumb.shape[1]] = thumb[:, :, None]
    return legend


def scatter_png(path, points, labels, legend_images=None):
    """Draw a scatter plot of 2-D points coloured by label and write it as a PNG.

    The i-th distinct label (in sorted order) gets PALETTE[i % 10]; colours repeat
    beyond ten labels. Points are drawn in a fixed shuffled order so that no class
    is always painted over the others. The legend shows, per label, its colour, its
    number (integer labels) and its thumbnail from ``legend_images`` if given.

    Args:
        path: the PNG file to write (its folder is created if missing).
        points: float [N, 2], e.g. from :func:`pca_2d`.
        labels: [N] labels.
        legend_images: optional dict label -> uint8 [h, w] (e.g. from
            :func:`label_mean_images`), shown at twice their size.

    Returns:
        the image written, uint8 [H, W, 3].
    """
    points = _as_matrix(points, "points", columns=2)
    labels = _as_labels(labels, points.shape[0])
    distinct, label_index = np.unique(labels, return_inverse=True)
    side = _PLOT_SIDE
    plot = np.full((side, side, 3), _BACKGROUND, np.uint8)
    draw_order = np.random.default_rng(0).permutation(len(points))
    rows, cols = _to_pixels(points[draw_order], side)
    colours = PALETTE[label_index.reshape(-1)[draw_order] % len(PALETTE)]
    _draw_dots(plot, rows, cols, colours)
    plot[[0, -1], :] = _FRAME_GREY
    plot[:, [0, -1]] = _FRAME_GREY

    legend = _legend(distinct.tolist(), legend_images)
    height = max(side + 2 * _MARGIN, legend.shape[0])
    canvas = np.full((height, _MARGIN + side + legend.shape[1], 3), _BACKGROUND, np.uint8)
    canvas[_MARGIN:_MARGIN + side, _MARGIN:_MARGIN + side] = plot
    canvas[:legend.shape[0], _MARGIN + side:] = legend
    _write_png(path, canvas)
    return canvas
