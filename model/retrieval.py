"""Search a gallery of images for the nearest neighbours of query images (faiss).

A gallery (:func:`load_gallery`) is IDX files (their test split), a dataset of class
folders (its ``test/`` split, else ``train/``), a folder of class folders
(``DIR/<class>/<image>``) or a flat folder of images (no classes). It is embedded with
the run's exported network, compared as the run's distance says (angular: between
L2-normalised embeddings, which orders neighbours as the cosine distance does), and
indexed with faiss: exactly (``IndexFlatL2``) up to :data:`EXACT_MAX_GALLERY` images,
approximately (HNSW) above (benchmarks/bench_retrieval.py measures both).

The index is cached in ``MODEL_DIR/retrieval/`` under a key made of the network's
exported files and the gallery's file names and contents: reused while both are
unchanged, rebuilt when either changes, written atomically.
"""

import hashlib
import importlib.util
import logging
import os

import numpy as np

from . import evaluation, export, files, image_folder, mnist_dataset, pipelines, run_folder
from .errors import UserError
from .images import IMAGE_SUFFIXES

# Above this many images the gallery gets an approximate index (HNSW). Exact search
# costs N x D multiply-adds per query: measured (benchmarks/bench_retrieval.py, 64-d,
# 2 cores) 3,006 queries/s at 10^5 and 197 at 10^6, against HNSW's 16,096 and 4,376.
EXACT_MAX_GALLERY = 200_000
# HNSW's graph degree and search breadth: recall@10 0.990 at 10^5 and 0.957 at 10^6
# 64-d vectors (same benchmark).
HNSW_NEIGHBOURS = 32
HNSW_SEARCH = 128
# Gallery images embedded per call of the network.
_EMBED_BATCH = 1000


def check_faiss():
    """Fail before any work when faiss is missing (the ``retrieve`` extra)."""
    if importlib.util.find_spec("faiss") is None:
        raise UserError("searching a gallery needs faiss, which is not installed: pip install "
                        "faiss-cpu (tftriplet's retrieve extra), or pip install -r "
                        "requirements_cpu.txt in a clone")


class Gallery:
    """The images of a gallery: ``paths`` (one per image: a file, or ``IDX_FILE[i]``),
    ``labels`` (int, -1 when unknown), ``class_names``, and the images themselves (a uint8
    array of IDX pixels or :class:`~model.image_folder.ImageFiles`)."""

    def __init__(self, paths, labels, class_names, images, params):
        self.paths, self.labels, self.class_names = paths, np.asarray(labels), class_names
        self._images, self._params = images, params

    def __len__(self):
        return len(self.paths)

    def images(self, index=None):
        """uint8 [n, S, S, C] pixels of the images at ``index`` (all if None)."""
        index = np.arange(len(self)) if index is None else np.asarray(index)
        return pipelines.decode_all(self._images[index], self._params)

    def class_of(self, i):
        return self.class_names[self.labels[i]] if self.labels[i] >= 0 else ""


def load_gallery(gallery_dir, params):
    """The :class:`Gallery` of ``gallery_dir`` (see the module docstring).

    Raises:
        UserError: a missing folder, or one without images.
    """
    if not os.path.isdir(gallery_dir):
        raise UserError(f"--gallery {gallery_dir} is not a folder; pass a folder of images, "
                        "of class folders, or of IDX files")
    if mnist_dataset.has_split(gallery_dir, "test"):
        images, labels = mnist_dataset.load_split(gallery_dir, "test")
        path = mnist_dataset.split_path(gallery_dir, "test", "images")
        names = [str(label) for label in range(int(labels.max()) + 1)]
        return Gallery([f"{path}[{i}]" for i in range(len(labels))], labels.astype(np.int64),
                       names, images, params)
    if image_folder.is_folder_dataset(gallery_dir):
        test_dir = os.path.join(gallery_dir, image_folder.TEST_DIR)
        gallery_dir = test_dir if os.path.isdir(test_dir) else os.path.join(
            gallery_dir, image_folder.TRAIN_DIR)
    loose = sorted(entry.path for entry in os.scandir(gallery_dir)
                   if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES))
    if loose:
        return Gallery(loose, np.full(len(loose), -1), [], _files(loose, params), params)
    classes = image_folder.scan_classes(gallery_dir)
    names = sorted(classes)
    paths = [path for name in names for path in classes[name]]
    labels = [label for label, name in enumerate(names) for _ in classes[name]]
    return Gallery(paths, labels, names, _files(paths, params), params)


def _files(paths, params):
    return image_folder.ImageFiles(paths, params.image_size, params.image_channels,
                                   params.resize)


def _digest(paths_and_bytes):
    digest = hashlib.sha256()
    for name, read in paths_and_bytes:
        digest.update(name.encode(errors="surrogateescape") + b"\0")
        digest.update(hashlib.sha256(read()).digest())
    return digest.hexdigest()


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def cache_key(model_dir, gallery):
    """A key that changes with the exported network and with the gallery's files."""
    export_dir = os.path.join(model_dir, run_folder.EXPORT_DIR)
    network = sorted(os.path.join(root, name) for root, _, names in os.walk(export_dir)
                     for name in names)
    sources = sorted({path.rsplit("[", 1)[0] for path in gallery.paths})
    return _digest([(os.path.relpath(path, export_dir), lambda path=path: _read(path))
                    for path in network] +
                   [(path, lambda path=path: _read(path)) for path in sources])[:24]


def _embed(module, images):
    return np.concatenate([module.embed(images[start:start + _EMBED_BATCH]).numpy()
                           for start in range(0, len(images), _EMBED_BATCH)])


def build_index(vectors):
    """A faiss index of ``vectors`` (float32 [N, D]): exact up to EXACT_MAX_GALLERY, HNSW
    above."""
    import faiss

    if len(vectors) <= EXACT_MAX_GALLERY:
        index = faiss.IndexFlatL2(vectors.shape[1])
    else:
        index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_NEIGHBOURS)
        index.hnsw.efSearch = HNSW_SEARCH
    index.add(vectors)
    return index


def gallery_index(model_dir, gallery_dir, gallery, params, module):
    """The faiss index of ``gallery`` (of ``gallery_dir``), from the run's cache when the
    network and the gallery are unchanged, else built and cached."""
    import faiss

    folder = os.path.join(model_dir, run_folder.RETRIEVAL_DIR)
    key = cache_key(model_dir, gallery)
    index_path = os.path.join(folder, f"{key}.faiss")
    record = files.read_json(os.path.join(folder, f"{key}.json"))
    # The key covers the gallery's names and bytes; the record, written after the index,
    # marks the entry complete.
    if record is not None:
        try:
            index = faiss.deserialize_index(np.fromfile(index_path, np.uint8))
            if index.ntotal == len(gallery):
                logging.info("Reused the index of %d gallery images in %s", len(gallery),
                             index_path)
                return index
        except (OSError, RuntimeError, ValueError):
            pass
    logging.info("Embedding %d gallery images of %s", len(gallery), gallery_dir)
    vectors = evaluation.comparable(_embed(module, gallery.images()), params)
    index = build_index(vectors)
    os.makedirs(folder, exist_ok=True)
    _remove_entries_of(folder, os.path.abspath(gallery_dir))
    files.write_bytes(index_path, faiss.serialize_index(index).tobytes())
    files.write_json(os.path.join(folder, f"{key}.json"), {
        "gallery": os.path.abspath(gallery_dir), "images": len(gallery),
        "kind": "exact" if len(gallery) <= EXACT_MAX_GALLERY else "hnsw"})
    logging.info("Indexed them (%s) in %s", "exact" if len(gallery) <= EXACT_MAX_GALLERY
                 else "approximate, HNSW", index_path)
    return index


def _remove_entries_of(folder, gallery_dir):
    """Drop the cached indexes of ``gallery_dir`` made for an older network or file set."""
    for name in os.listdir(folder):
        if name.endswith(".json") and (files.read_json(os.path.join(folder, name)) or {}).get(
                "gallery") == gallery_dir:
            for suffix in (".json", ".faiss"):
                try:
                    os.remove(os.path.join(folder, name[:-len(".json")] + suffix))
                except FileNotFoundError:
                    pass


def search(model_dir, gallery_dir, query_images, params, k):
    """The k nearest gallery images of each query.

    Args:
        query_images: uint8 [Q, S, S, C].

    Returns:
        (gallery, distances float [Q, k] in the run's comparison, indices int [Q, k]).
    """
    module = export.load_exported(model_dir)
    gallery = load_gallery(gallery_dir, params)
    if k > len(gallery):
        raise UserError(f"--k is {k} but the gallery holds {len(gallery)} images; lower --k")
    index = gallery_index(model_dir, gallery_dir, gallery, params, module)
    queries = evaluation.comparable(_embed(module, query_images), params)
    squared, indices = index.search(queries, k)
    return gallery, np.sqrt(np.maximum(squared, 0)), indices


def describe(gallery, distances, indices, threshold):
    """One line per neighbour: rank, distance, same / different, class, path."""
    lines = []
    for rank, (distance, i) in enumerate(zip(distances, indices), 1):
        verdict = "same" if distance <= threshold else "different"
        lines.append(f"  {rank}. {distance:.4f} {verdict:9} {gallery.class_of(i) or '-':>10} "
                     f"{gallery.paths[i]}")
    return lines


def draw_neighbours(path, query_images, query_names, gallery, distances, indices, threshold):
    """A PNG: one row per query, its image then its k nearest gallery images, each with
    its distance, same / different verdict and class name."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows, k = indices.shape
    figure, axes = pyplot.subplots(rows, k + 1, figsize=(1.6 * (k + 1), 1.9 * rows),
                                   squeeze=False)
    try:
        for row in range(rows):
            neighbours = gallery.images(indices[row])
            cells = [(query_images[row], f"query\n{os.path.basename(query_names[row])[:14]}",
                      "black")]
            for rank, i in enumerate(indices[row]):
                same = distances[row, rank] <= threshold
                cells.append((neighbours[rank], f"{distances[row, rank]:.3f} "
                              f"{'same' if same else 'diff.'}\n{gallery.class_of(i)[:14]}",
                              "tab:green" if same else "tab:red"))
            for axis, (image, title, colour) in zip(axes[row], cells):
                axis.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None,
                            vmin=0, vmax=255)
                axis.set_title(title, fontsize=8, color=colour)
                axis.set_xticks([])
                axis.set_yticks([])
        figure.tight_layout()
        with files.replaced_atomically(path) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    finally:
        pyplot.close(figure)
    return path
