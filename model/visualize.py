"""The picture of embeddings: a t-SNE and a PCA side by side, coloured by class.

:func:`plot_embeddings` draws with matplotlib (its Agg canvas directly, so no display and
no global pyplot state) from openTSNE's t-SNE (2.5x faster than scikit-learn's on 10,000
points for the same result, ``benchmarks/bench_tsne.py``) and a PCA. The TensorBoard
projector files of the same embeddings are :mod:`model.projector`'s.
"""

import importlib.util
import io
import math
import os

import numpy as np

from . import files, progress
from .embedding_checks import checked_embeddings, checked_labels
from .errors import UserError

# The usual t-SNE perplexity (about the number of neighbours each point keeps close);
# lowered for small sets, where openTSNE needs 3 x perplexity neighbours per point.
PERPLEXITY = 30.0
# Legend entries beyond this many classes would no longer fit beside the panels.
LEGEND_MAX_ENTRIES = 30
_THREADED_FROM = 1000  # points
# openTSNE's default iterations: 250 with early exaggeration, then 500.
_TSNE_ITERATIONS = 750
_TSNE_REPORT_EVERY = 50
_LEGEND_ROWS = 10
_LEGEND_NAME_LENGTH = 24
_FIGURE_SIZE = (14, 6.6)  # inches, at 100 dpi: 1400 x 660 pixels
_DPI = 100


def pca_2d(embeddings):
    """Project embeddings on their first two principal axes.

    Args:
        embeddings: float [N, D].

    Returns:
        float64 [N, 2], centred. Each axis's sign is fixed so that its largest
        loading is positive, so the same embeddings always give the same picture.
        Columns beyond the rank of the data (e.g. D = 1) are 0.
    """
    centred = checked_embeddings(embeddings)
    centred = centred - centred.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    largest = axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)]
    axes = axes * np.where(largest < 0, -1.0, 1.0)[:, None]
    points = np.zeros((centred.shape[0], 2))
    points[:, :len(axes)] = centred @ axes.T
    return points


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

    embeddings = checked_embeddings(embeddings)
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
    with progress.step(f"t-SNE of {count:,} embeddings", _TSNE_ITERATIONS) as bar:
        done = []

        def report(*_):  # called every _TSNE_REPORT_EVERY iterations of either phase
            done.append(_TSNE_REPORT_EVERY)
            bar.update(min(sum(done), _TSNE_ITERATIONS))

        tsne = openTSNE.TSNE(n_components=2, perplexity=perplexity, initialization="pca",
                             random_state=seed, n_jobs=threads, verbose=False,
                             callbacks=report, callbacks_every_iters=_TSNE_REPORT_EVERY)
        return np.asarray(tsne.fit(embeddings), dtype=np.float64)


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

    embeddings = checked_embeddings(embeddings)
    count, dims = embeddings.shape
    labels = checked_labels(labels, count)
    if class_names is not None and not isinstance(class_names, dict):
        raise ValueError(f"class_names must be a dict label -> name, got "
                         f"{type(class_names).__name__}; e.g. dict(enumerate(names))")
    classes, class_of_point = np.unique(labels, return_inverse=True)
    colours = _class_colours(len(classes))

    # The constrained layout makes room for the legend outside the panels, whatever
    # the length of the class names.
    figure = Figure(figsize=_FIGURE_SIZE, dpi=_DPI, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    _draw_panels(figure, embeddings, colours[class_of_point], seed)
    _draw_legend(figure, colours, _legend_names(classes, class_names))
    figure.suptitle(title or f"Test embeddings ({count:,} point{'s' * (count != 1)}, "
                             f"{dims} dimension{'s' * (dims != 1)})")
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    _write_creating_folder(path, buffer.getvalue())
    return path


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


def _draw_panels(figure, embeddings, point_colours, seed):
    """The t-SNE (left) and PCA (right) scatter plots of :func:`plot_embeddings`."""
    count = embeddings.shape[0]
    order = np.random.default_rng(seed).permutation(count)
    # Small markers where points are many, so that clusters keep their shape.
    marker_size = 3.0 if count > 2000 else 12.0
    panels = (("t-SNE", tsne_2d(embeddings, seed), "t-SNE"),
              ("PCA", pca_2d(embeddings), "principal component"))
    for ax, (name, points, axis_name) in zip(figure.subplots(1, 2), panels):
        ax.scatter(points[order, 0], points[order, 1], c=point_colours[order],
                   s=marker_size, alpha=0.7, linewidths=0)
        ax.set_title(name)
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, linewidth=0.3, alpha=0.5)


def _legend_names(classes, class_names):
    """The legend's name of each class: its ``class_names`` entry or the label itself,
    cut to _LEGEND_NAME_LENGTH characters so that long names leave the panels room."""
    names = [str((class_names or {}).get(label, label)) for label in classes.tolist()]
    return [name if len(name) <= _LEGEND_NAME_LENGTH
            else name[:_LEGEND_NAME_LENGTH - 1] + "\u2026" for name in names]


def _draw_legend(figure, colours, names):
    """The legend right of the panels: the first LEGEND_MAX_ENTRIES classes, in columns
    of _LEGEND_ROWS; its title says how many are listed when not all of them are."""
    from matplotlib.lines import Line2D

    shown = min(len(names), LEGEND_MAX_ENTRIES)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=colours[i],
                      label=names[i]) for i in range(shown)]
    title = "class" if shown == len(names) else f"class ({shown} of {len(names)})"
    figure.legend(handles=handles, title=title, loc="outside right center",
                  ncol=math.ceil(shown / _LEGEND_ROWS), frameon=False)


def _write_creating_folder(path, data):
    """Write bytes atomically, creating the folder."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    files.write_bytes(path, data)
