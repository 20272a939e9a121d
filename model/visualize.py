"""Pictures of embeddings: TensorBoard projector files, and a t-SNE / PCA figure.

The projector's sprite is tiled with numpy and encoded with ``tf.io.encode_png``; the
static figure is drawn with matplotlib (its Agg canvas directly, so no display and no
global pyplot state) from openTSNE's t-SNE (2.7x faster than scikit-learn's on 10,000
points for the same result, ``benchmarks/bench_tsne.py``) and a PCA.

Files :func:`write_projector` puts in ``log_dir`` (``tensorboard --logdir log_dir``,
Projector tab):

    <tensor_name>.ckpt.index, .data-*   the embeddings as a checkpointed tf.Variable
    metadata.tsv                        one label per row, in embedding order
    sprite.png                          the thumbnails in a square grid, same order
    projector_config.pbtxt              ties the three together
"""

import io
import math
import os
import re

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

from model import files

METADATA_FILENAME = "metadata.tsv"
SPRITE_FILENAME = "sprite.png"
# The largest sprite the projector accepts, per side (TensorBoard's projector guide).
MAX_SPRITE_SIDE = 8192
# Matplotlib's "tab10" colours: ten hues that stay distinct on white.
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


def _write_file(path, data):
    """Write bytes atomically, creating the folder."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    files.write_bytes(path, data)


def _write_png(path, image):
    """Write uint8 [H, W] (grey) or [H, W, 3] (RGB) as a PNG, creating the folder."""
    if image.ndim == 2:
        image = image[:, :, None]
    _write_file(path, tf.io.encode_png(image).numpy())


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
    files.write_text(paths["metadata"], "".join(text + "\n" for text in label_text))
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


# Perplexity of the t-SNE (the usual default); lowered for tiny sets, where it must
# stay below the number of points.
PERPLEXITY = 30.0
# Colours: matplotlib's qualitative maps while they have a colour per class, then
# a continuous one (neighbouring classes get close hues beyond 20 classes).
_LEGEND_MAX_ENTRIES = 30


def tsne_2d(embeddings, seed=0):
    """A 2-D t-SNE of the embeddings (openTSNE: PCA initialisation, FFT-accelerated).

    Args:
        embeddings: float [N, D].
        seed: the t-SNE's random state: the same seed gives the same points.

    Returns:
        float64 [N, 2]. Fewer than 4 points have no neighbourhoods to keep: their PCA.
    """
    import openTSNE

    embeddings = _as_matrix(embeddings, "embeddings")
    count = embeddings.shape[0]
    if count < 4 or embeddings.shape[1] < 2:
        return pca_2d(embeddings)
    # openTSNE looks at 3 x perplexity neighbours, which must be fewer than the points.
    perplexity = min(PERPLEXITY, (count - 1) / 3)
    tsne = openTSNE.TSNE(n_components=2, perplexity=perplexity, initialization="pca",
                         random_state=seed, n_jobs=os.cpu_count() or 1, verbose=False)
    return np.asarray(tsne.fit(embeddings), dtype=np.float64)


def _colours(count):
    from matplotlib import colormaps

    if count <= 10:
        return colormaps["tab10"](np.arange(count))
    if count <= 20:
        return colormaps["tab20"](np.arange(count))
    return colormaps["turbo"](np.linspace(0.05, 0.95, count))


def plot_embeddings(path, embeddings, labels, class_names=None, seed=0, title=None):
    """Write a PNG of the embeddings as the original blog post shows them: a t-SNE (left)
    and a PCA (right), points coloured by class, with a legend, axes and a title.

    Points are drawn in a fixed shuffled order, so that no class always covers the others.
    The legend lists at most 30 classes (in several columns beyond 10); more are coloured
    but not listed. Written atomically (temporary file, then rename).

    Args:
        path: the PNG to write (its folder is created if missing).
        embeddings: float [N, D].
        labels: [N] class labels.
        class_names: optional dict label -> name shown in the legend (default str(label)).
        seed: seeds the t-SNE and the drawing order.
        title: the figure's title (default: "Test embeddings (N points, D dimensions)").

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    embeddings = _as_matrix(embeddings, "embeddings")
    count, dims = embeddings.shape
    labels = _as_labels(labels, count)
    classes, index = np.unique(labels, return_inverse=True)
    index = index.reshape(-1)
    colours = _colours(len(classes))
    names = [str((class_names or {}).get(label, label)) for label in classes.tolist()]
    order = np.random.default_rng(seed).permutation(count)
    marker_size = 4.0 if count > 2000 else 12.0

    figure = Figure(figsize=(14, 6.6), dpi=100)
    canvas = FigureCanvasAgg(figure)
    panels = (("t-SNE", tsne_2d(embeddings, seed), ("t-SNE 1", "t-SNE 2")),
              ("PCA", pca_2d(embeddings), ("principal component 1", "principal component 2")))
    axes = figure.subplots(1, 2)
    for ax, (name, points, (xlabel, ylabel)) in zip(axes, panels):
        ax.scatter(points[order, 0], points[order, 1], c=colours[index[order]], s=marker_size,
                   alpha=0.7, linewidths=0, rasterized=True)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    shown = min(len(classes), _LEGEND_MAX_ENTRIES)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=colours[i],
                      label=names[i]) for i in range(shown)]
    legend_title = "class" if shown == len(classes) else f"class ({shown} of {len(classes)})"
    figure.legend(handles=handles, title=legend_title, loc="center right",
                  ncol=1 + (shown - 1) // 10, frameon=False)
    figure.suptitle(title or f"Test embeddings ({count:,} points, {dims} dimensions)")
    figure.tight_layout(rect=(0, 0, 1 - 0.07 * (1 + (shown - 1) // 10), 0.95))
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    _write_file(path, buffer.getvalue())
    return path
