"""Pictures of embeddings: TensorBoard projector files, and a t-SNE / PCA figure.

The projector's sprite is tiled with numpy and encoded with ``tf.io.encode_png``; the
static figure, :func:`plot_embeddings`, is drawn with matplotlib (its Agg canvas
directly, so no display and no global pyplot state) from openTSNE's t-SNE (2.5x faster
than scikit-learn's on 10,000 points for the same result, ``benchmarks/bench_tsne.py``)
and a PCA.

Files :func:`write_projector` puts in ``log_dir`` (``tensorboard --logdir log_dir``,
Projector tab):

    <tensor_name>.ckpt.index, .data-*   the embeddings as a checkpointed tf.Variable
    metadata.tsv                        one label per row, in embedding order
    sprite.png                          the thumbnails in a square grid, same order
    projector_config.pbtxt              ties the three together
"""

import importlib.util
import io
import math
import os
import re

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

from . import files
from .errors import UserError

METADATA_FILENAME = "metadata.tsv"
SPRITE_FILENAME = "sprite.png"
# The largest sprite the projector accepts, per side (TensorBoard's projector guide).
MAX_SPRITE_SIDE = 8192


def _as_images(images, name="images"):
    """uint8 [N, h, w] (grey) or [N, h, w, 3] (RGB); [N, h, w, 1] becomes [N, h, w]."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if (images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] == 0
            or (images.ndim == 4 and images.shape[-1] != 3)):
        raise ValueError(
            f"{name} must be a non-empty uint8 array [N, height, width] or [N, height, "
            f"width, 3], got {images.dtype} {images.shape}; convert images to uint8 0-255")
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
        images: uint8 [N, h, w] (grey) or [N, h, w, 3] (colour).

    Returns:
        uint8 [side * h, side * w] (or [side * h, side * w, 3]) with side =
        ceil(sqrt(N)): image i at row i // side, column i % side; the cells after the
        last image are 0 (black, the MNIST background).
    """
    images = _as_images(images)
    n, h, w = images.shape[:3]
    colours = images.shape[3:]
    side = math.ceil(math.sqrt(n))
    cells = np.zeros((side * side, h, w, *colours), np.uint8)
    cells[:n] = images
    return (cells.reshape(side, side, h, w, *colours).swapaxes(1, 2)
            .reshape(side * h, side * w, *colours))


_THUMBNAIL_CHUNK = 1000  # images shrunk at a time (float32 copies of a chunk only)


def largest_thumbnail(count, side):
    """The largest side of ``count`` square thumbnails whose sprite fits the projector's
    :data:`MAX_SPRITE_SIDE` (``side`` when the images fit as they are)."""
    return min(side, MAX_SPRITE_SIDE // math.ceil(math.sqrt(count)))


def thumbnails(images):
    """The images shrunk (area-averaged) just enough for their sprite to fit the
    projector's :data:`MAX_SPRITE_SIDE`; unchanged when it already fits.

    Args:
        images: uint8 [N, h, w] or [N, h, w, C].
    """
    images = _as_images(images)
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
    from . import pipelines
    from .image_folder import ImageFiles

    if isinstance(images, ImageFiles):
        images = images.resized(largest_thumbnail(len(images), params.image_size))
    return thumbnails(pipelines.decode_all(images, params))


def one_line_names(names):
    """Class names as the projector's metadata.tsv can hold them: whitespace runs (tabs,
    newlines, which folder names may contain) become one space."""
    return [" ".join(str(name).split()) for name in names]


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
        images: uint8 [N, h, w] or [N, h, w, 3] thumbnails of the same rows, in the same
            order (see :func:`thumbnails` for images too large for one sprite).
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
    if side * max(images.shape[1:3]) > MAX_SPRITE_SIDE:
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


# The usual t-SNE perplexity (about the number of neighbours each point keeps close);
# lowered for small sets, where openTSNE needs 3 x perplexity neighbours per point.
PERPLEXITY = 30.0
# Legend entries beyond this many classes would no longer fit beside the panels.
LEGEND_MAX_ENTRIES = 30
_THREADED_FROM = 1000  # points
_LEGEND_ROWS = 10
_LEGEND_NAME_LENGTH = 24
_FIGURE_SIZE = (14, 6.6)  # inches, at 100 dpi: 1400 x 660 pixels
_DPI = 100


def _cores():
    """The cores this process may use (a container or taskset may allow fewer than exist)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def tsne_2d(embeddings, seed=0):
    """A 2-D t-SNE of the embeddings, with openTSNE.

    openTSNE rather than scikit-learn's TSNE: faster for the same picture
    (``benchmarks/bench_tsne.py``). PCA initialisation, perplexity 30 (lower below 91
    points), openTSNE's default iterations; from 1,000 points on every core this
    process may use.

    Args:
        embeddings: float [N, D].
        seed: the random state of the t-SNE: the same seed and embeddings give the
            same points (on a machine with the same number of cores).

    Returns:
        float64 [N, 2]. Sets that have no neighbourhoods to keep (fewer than 4 points,
        or all points equal) and 1-D embeddings get their PCA (:func:`pca_2d`) instead.
    """
    import openTSNE

    embeddings = _as_matrix(embeddings, "embeddings")
    count = embeddings.shape[0]
    if count < 4 or embeddings.shape[1] < 2 or np.ptp(embeddings, axis=0).max() == 0:
        # Under 4 points there are no neighbourhoods to keep (openTSNE puts 2 points
        # on top of each other); 1-D embeddings break openTSNE's PCA start, and equal
        # points make it NaN (the start is scaled by their zero spread).
        return pca_2d(embeddings)
    perplexity = min(PERPLEXITY, (count - 1) / 3)
    # One thread for small sets: they take a second or two on one core, and threads
    # waiting on each other make them several times slower on a busy machine.
    threads = _cores() if count >= _THREADED_FROM else 1
    tsne = openTSNE.TSNE(n_components=2, perplexity=perplexity, initialization="pca",
                         random_state=seed, n_jobs=threads, verbose=False)
    return np.asarray(tsne.fit(embeddings), dtype=np.float64)


def _class_colours(count):
    """RGBA [count, 4]: a colour per class, as :func:`plot_embeddings` describes.

    The qualitative maps while they have enough colours: their hues are the most
    distinct; a continuous map beyond, rather than repeating colours.
    """
    from matplotlib import colormaps

    if count <= 10:
        return colormaps["tab10"](np.arange(count))
    if count <= 20:
        return colormaps["tab20"](np.arange(count))
    return colormaps["turbo"](np.linspace(0.05, 0.95, count))


def _shorten(name):
    """``name`` cut to _LEGEND_NAME_LENGTH characters, so that long names leave the panels room."""
    if len(name) <= _LEGEND_NAME_LENGTH:
        return name
    return name[:_LEGEND_NAME_LENGTH - 1] + "\u2026"


def check_picture_libraries():
    """Fail before any work when :func:`plot_embeddings` could not run: matplotlib and
    openTSNE come with the ``viz`` extra, not with the library."""
    missing = [name for name in ("matplotlib", "openTSNE")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"the embeddings picture needs {' and '.join(missing)}, which is not "
                        "installed: pip install matplotlib openTSNE (tftriplet's viz extra), "
                        "or pip install -r requirements_cpu.txt in a clone")


def plot_embeddings(path, embeddings, labels, class_names=None, seed=0, title=None):
    """Write the picture of the embeddings shown in the original blog post, as a PNG.

    Left a t-SNE (:func:`tsne_2d`), right a PCA (:func:`pca_2d`), points coloured by
    class, with axis labels, a legend and a title: 1400 x 660 pixels. Points are drawn
    in a fixed shuffled order, so that no class always covers the others. Colours:
    matplotlib's tab10 up to 10 classes, tab20 up to 20, beyond that evenly spaced
    colours of the continuous "turbo" map (each class keeps a colour of its own, but
    neighbouring classes get close hues). The legend, right of the panels, lists the
    first 30 classes (in sorted order, columns of 10, names cut to 24 characters);
    further classes are coloured but not listed, and the legend's title says so.

    Drawn on matplotlib's Agg canvas directly (no pyplot), so that it needs no display
    and leaves the caller's pyplot state alone. The same arguments give the same bytes.
    The file is written atomically (a temporary file in the same folder, then
    ``os.replace``): a crash leaves the previous file or none, never half a PNG.

    Args:
        path: the PNG to write (its folder is created if missing).
        embeddings: float [N, D].
        labels: [N] class labels (numbers or strings).
        class_names: optional dict label -> name shown in the legend (default
            ``str(label)``; labels missing from it keep that default).
        seed: seeds the t-SNE and the drawing order.
        title: the figure's title (default "Test embeddings (N points, D dimensions)").

    Returns:
        ``path``.

    Raises:
        ValueError: on embeddings that are not a finite [N, D] array, labels that are
            not one per row, or class_names that is not a dict.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    embeddings = _as_matrix(embeddings, "embeddings")
    count, dims = embeddings.shape
    labels = _as_labels(labels, count)
    if class_names is not None and not isinstance(class_names, dict):
        raise ValueError(f"class_names must be a dict label -> name, got "
                         f"{type(class_names).__name__}; e.g. dict(enumerate(names))")
    classes, index = np.unique(labels, return_inverse=True)
    index = index.reshape(-1)
    colours = _class_colours(len(classes))
    names = [_shorten(str((class_names or {}).get(label, label)))
             for label in classes.tolist()]
    order = np.random.default_rng(seed).permutation(count)
    # Small markers where points are many, so that clusters keep their shape.
    marker_size = 3.0 if count > 2000 else 12.0

    # The constrained layout makes room for the legend outside the panels, whatever
    # the length of the class names.
    figure = Figure(figsize=_FIGURE_SIZE, dpi=_DPI, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    panels = (("t-SNE", tsne_2d(embeddings, seed), "t-SNE"),
              ("PCA", pca_2d(embeddings), "principal component"))
    for ax, (name, points, axis_name) in zip(figure.subplots(1, 2), panels):
        ax.scatter(points[order, 0], points[order, 1], c=colours[index[order]],
                   s=marker_size, alpha=0.7, linewidths=0)
        ax.set_title(name)
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    shown = min(len(classes), LEGEND_MAX_ENTRIES)
    columns = -(-shown // _LEGEND_ROWS)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=colours[i],
                      label=names[i]) for i in range(shown)]
    legend_title = "class" if shown == len(classes) else f"class ({shown} of {len(classes)})"
    figure.legend(handles=handles, title=legend_title, loc="outside right center",
                  ncol=columns, frameon=False)
    figure.suptitle(title or f"Test embeddings ({count:,} point{'s' * (count != 1)}, "
                             f"{dims} dimension{'s' * (dims != 1)})")
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    _write_file(path, buffer.getvalue())
    return path
