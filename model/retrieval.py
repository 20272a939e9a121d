"""Search a gallery of images for the nearest neighbours of query images (faiss).

A gallery (:func:`load_gallery`) is IDX files (their test split), a dataset of class
folders (its ``test/`` split, else ``train/``), a folder of class folders
(``DIR/<class>/<image>``) or a flat folder of images (no classes). It is embedded with
the run's exported network, compared as the run's distance says (angular: between
L2-normalised embeddings, which orders neighbours as the cosine distance does), and
indexed with faiss: exactly (``IndexFlatL2``) up to :data:`EXACT_MAX_GALLERY` images,
approximately (HNSW) above (benchmarks/bench_retrieval.py measures both).

A gallery's files are filtered as a class-folder dataset's are (:mod:`model.image_folder`):
files that are not regular (a FIFO would block), whose paths are not UTF-8, above
:data:`model.images.MAX_PIXELS` or that do not decode are left out with a count and the
first names; the check of decoding is recorded with the index and not repeated.

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
from . import images as image_ops
from .errors import UserError, check_utf8, first_names, is_utf8, printable

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
    ``labels`` (int, -1 when unknown), ``class_names``, the ``folder`` its files were
    found in, and the images themselves (a uint8 array of IDX pixels or
    :class:`~model.image_folder.ImageFiles`)."""

    def __init__(self, paths, labels, class_names, images, params, folder):
        self.paths, self.labels, self.class_names = list(paths), np.asarray(labels), class_names
        self.folder, self._images, self._params = folder, images, params

    def __len__(self):
        return len(self.paths)

    @property
    def sources(self):
        """The files the images are read from: the image files, or the IDX file."""
        if isinstance(self._images, image_folder.ImageFiles):
            return list(self.paths)
        return sorted({path.rsplit("[", 1)[0] for path in self.paths})

    def images(self, index=None):
        """uint8 [n, S, S, C] pixels of the images at ``index`` (all if None)."""
        index = np.arange(len(self)) if index is None else np.asarray(index)
        return pipelines.decode_all(self._images[index], self._params)

    def class_of(self, i):
        return self.class_names[self.labels[i]] if self.labels[i] >= 0 else ""

    def checked(self):
        """(this gallery without its files above MAX_PIXELS or that do not decode, their
        names relative to ``folder``: {"too_large": [...], "undecodable": [...]}), the
        skipped ones reported (:func:`model.image_folder.decodable`)."""
        if not isinstance(self._images, image_folder.ImageFiles):
            return self, {}
        ok, _, too_large = image_folder.decodable(self.paths, self._params.num_parallel_calls)
        skipped = {"too_large": [path for path, large in zip(self.paths, too_large) if large],
                   "undecodable": [path for path, good, large in zip(self.paths, ok, too_large)
                                   if not (good or large)]}
        skipped = {reason: [os.path.relpath(path, self.folder) for path in paths]
                   for reason, paths in skipped.items() if paths}
        names = [name for reason in skipped.values() for name in reason]
        if len(names) == len(self):
            raise UserError(f"--gallery {printable(self.folder)} holds no image that "
                            f"decodes: {len(names)} file(s) that are not images or are larger "
                            f"than {image_ops.MAX_PIXELS:,} pixels ({first_names(names)}); add "
                            "PNG, JPEG, GIF or BMP images")
        _report_skipped(skipped, len(self), self.folder)
        return self.without({name for names in skipped.values() for name in names}), skipped

    def without(self, names):
        """This gallery without the files named in ``names`` (paths relative to ``folder``)."""
        keep = np.array([os.path.relpath(path, self.folder) not in names for path in self.paths],
                        bool)
        return Gallery([path for path, kept in zip(self.paths, keep) if kept], self.labels[keep],
                       self.class_names, self._images[keep], self._params, self.folder)


def load_gallery(gallery_dir, params):
    """The :class:`Gallery` of ``gallery_dir`` (see the module docstring), before the check
    of which of its files decode (:func:`gallery_index`).

    Raises:
        UserError: a missing folder, one without images, or a path that is not UTF-8.
    """
    if not os.path.isdir(gallery_dir):
        raise UserError(f"--gallery {printable(gallery_dir)} is not a folder; pass a "
                        "folder of images, of class folders, or of IDX files")
    if mnist_dataset.has_split(gallery_dir, "test"):
        images, labels = mnist_dataset.load_split(gallery_dir, "test")
        path = mnist_dataset.split_path(gallery_dir, "test", "images")
        names = [str(label) for label in range(int(labels.max()) + 1)]
        return Gallery([f"{path}[{i}]" for i in range(len(labels))], labels.astype(np.int64),
                       names, images, params, gallery_dir)
    if image_folder.is_folder_dataset(gallery_dir):
        test_dir = os.path.join(gallery_dir, image_folder.TEST_DIR)
        gallery_dir = test_dir if os.path.isdir(test_dir) else os.path.join(
            gallery_dir, image_folder.TRAIN_DIR)
    loose = _loose_images(gallery_dir)
    if loose is not None:
        return Gallery(loose, np.full(len(loose), -1), [], _files(loose, params), params,
                       gallery_dir)
    classes = image_folder.scan_classes(gallery_dir)
    names = sorted(classes)
    paths = [path for name in names for path in classes[name]]
    labels = [label for label, name in enumerate(names) for _ in classes[name]]
    return Gallery(paths, labels, names, _files(paths, params), params, gallery_dir)


def _loose_images(folder):
    """The image files directly in ``folder``, or None when it holds none (a folder of
    class folders).

    Filtered as :func:`model.image_folder.scan_classes` filters a class folder: hidden
    names (``.*``) are left out; files that are not regular and paths that are not UTF-8
    are reported and left out.
    """
    named = sorted((entry for entry in os.scandir(folder)
                    if not entry.name.startswith(".") and not entry.is_dir()
                    and entry.name.lower().endswith(image_ops.IMAGE_SUFFIXES)),
                   key=lambda entry: entry.name)
    if not named:
        return None
    check_utf8(folder)
    special, not_utf8, paths = [], [], []
    for entry in named:
        if image_folder.is_special(entry):
            special.append(entry.path)
        elif not is_utf8(entry.name):
            not_utf8.append(entry.path)
        else:
            paths.append(entry.path)
    if not paths:
        unusable = special + not_utf8
        raise UserError(f"--gallery {printable(folder)} holds no image that can be "
                        f"read: {len(unusable)} file(s) that are not regular files (FIFOs, "
                        "devices, sockets) or whose names are not UTF-8 "
                        f"({image_folder.first_names_in(unusable, folder)}); add PNG, JPEG, GIF "
                        "or BMP images")
    image_folder.report_unusable(special, not_utf8, folder)
    return paths


def _files(paths, params):
    return image_folder.ImageFiles(paths, params.image_size, params.image_channels,
                                   params.resize)


def _report_skipped(skipped, count, folder):
    """The warnings of :func:`model.image_folder.load` for a gallery's ``skipped`` files
    (of ``count`` checked)."""
    if "too_large" in skipped:
        logging.warning("Skipped %d file(s) of %d larger than %s pixels (the limit that bounds "
                        "the memory of decoding one) in %s: %s; shrink them to use them",
                        len(skipped["too_large"]), count, f"{image_ops.MAX_PIXELS:,}", folder,
                        first_names(skipped["too_large"]))
    if "undecodable" in skipped:
        logging.warning("Skipped %d file(s) of %d that do not decode as images in %s: %s",
                        len(skipped["undecodable"]), count, folder,
                        first_names(skipped["undecodable"]))


def _file_digest(path):
    """The SHA-256 of the bytes of the file ``path``, read a chunk at a time; of no bytes
    when it cannot be read (it does not decode either, and is left out as such)."""
    digest = hashlib.sha256()
    try:
        with image_ops.open_regular(path) as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        pass
    return digest.digest()


def cache_key(model_dir, gallery):
    """A key that changes with the exported network and with the gallery's files."""
    export_dir = os.path.join(model_dir, run_folder.EXPORT_DIR)
    network = sorted(os.path.join(root, name) for root, _, names in os.walk(export_dir)
                     for name in names)
    digest = hashlib.sha256()
    for name, path in ([(os.path.relpath(path, export_dir), path) for path in network]
                       + [(path, path) for path in sorted(gallery.sources)]):
        digest.update(name.encode(errors="surrogateescape") + b"\0")
        digest.update(_file_digest(path))
    return digest.hexdigest()[:24]


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
    """(the images of ``gallery`` that decode, their faiss index), from the run's cache when
    the network and the gallery's files (of ``gallery_dir``) are unchanged, else checked,
    built and cached."""
    import faiss

    folder = os.path.join(model_dir, run_folder.RETRIEVAL_DIR)
    key = cache_key(model_dir, gallery)
    index_path = os.path.join(folder, f"{key}.faiss")
    record = files.read_json(os.path.join(folder, f"{key}.json"))
    # The key covers the gallery's names and bytes; the record, written after the index,
    # marks the entry complete and holds the files that did not decode.
    if record is not None:
        # Records written before galleries were checked have no "skipped": their galleries
        # decoded whole, or no index was written.
        skipped = record.get("skipped", {})
        checked = gallery.without({name for names in skipped.values() for name in names})
        try:
            index = faiss.deserialize_index(np.fromfile(index_path, np.uint8))
            if index.ntotal == len(checked):
                _report_skipped(skipped, len(gallery), gallery.folder)
                logging.info("Reused the index of %d gallery images in %s", len(checked),
                             index_path)
                return checked, index
        except (OSError, RuntimeError, ValueError):
            pass
    checked, skipped = gallery.checked()
    logging.info("Embedding %d gallery images of %s", len(checked),
                 printable(gallery_dir))
    vectors = evaluation.comparable(_embed(module, checked.images()), params)
    index = build_index(vectors)
    os.makedirs(folder, exist_ok=True)
    _remove_entries_of(folder, os.path.abspath(gallery_dir))
    files.write_bytes(index_path, faiss.serialize_index(index).tobytes())
    files.write_json(os.path.join(folder, f"{key}.json"), {
        "gallery": os.path.abspath(gallery_dir), "images": len(checked), "skipped": skipped,
        "kind": "exact" if len(checked) <= EXACT_MAX_GALLERY else "hnsw"})
    logging.info("Indexed them (%s) in %s", "exact" if len(checked) <= EXACT_MAX_GALLERY
                 else "approximate, HNSW", index_path)
    return checked, index


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
    _check_k(k, gallery)  # at once, on every image found; again on those that decode
    gallery, index = gallery_index(model_dir, gallery_dir, gallery, params, module)
    _check_k(k, gallery)
    queries = evaluation.comparable(_embed(module, query_images), params)
    squared, indices = index.search(queries, k)
    return gallery, np.sqrt(np.maximum(squared, 0)), indices


def _check_k(k, gallery):
    """Refuse a ``k`` larger than the gallery."""
    if k > len(gallery):
        raise UserError(f"--k is {k} but the gallery holds {len(gallery)} images; lower --k")


def describe(gallery, distances, indices, threshold):
    """One line per neighbour: rank, distance, same / different, class, path."""
    lines = []
    for rank, (distance, i) in enumerate(zip(distances, indices), 1):
        verdict = "same" if distance <= threshold else "different"
        lines.append(f"  {rank}. {distance:.4f} {verdict:9} {gallery.class_of(i) or '-':>10} "
                     f"{printable(gallery.paths[i])}")
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
            name = printable(os.path.basename(query_names[row]))
            cells = [(query_images[row], f"query\n{name[:14]}", "black")]
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
