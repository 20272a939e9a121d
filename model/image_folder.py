"""Datasets stored as folders of images, one folder per class.

The layout of ``keras.utils.image_dataset_from_directory``, under a ``train/`` and an
optional ``test/``:

    DATA/train/<class name>/**/*.png|jpg|jpeg|gif|bmp
    DATA/test/<class name>/**/*.png|...

Class names are the folder names; the class ids are their positions in
``class_names``: the train classes in sorted order, then the classes found only in
``test/`` (retrieval on classes never trained on is the usual metric-learning protocol).
Without ``test/``, a seeded share (``params.test_fraction``) of every train class with at
least two images is held out as the test split.

What is not clean is reported and left out rather than stopping the run (one line each,
so that one bad file among 200,000 does not cost a day): files without an image suffix,
files that are not regular files (a FIFO blocks ``open``, ``/dev/zero`` never ends:
never opened), files whose paths are not UTF-8 (TensorFlow cannot take them), images
above :data:`model.images.MAX_PIXELS` (their header is read, they are not decoded), files
that do not decode (checked once by decoding each of them; broken symlinks, empty,
truncated or non-image content), and empty class folders. Symlinked folders and files are
followed (a folder seen twice through links is read once). A class with one train image
has no positive pair: it is kept as a source of negatives, with a warning. A class folder
whose name is not UTF-8 is an error: the class names are written to ``dataset.json``,
``metadata.tsv`` and pictures, and leaving a whole class out would change the task.

The images are decoded on the fly by :func:`model.images.load`; nothing is held in
memory but the file names (see :class:`ImageFiles`).
"""

import contextlib
import logging
import os
from multiprocessing.pool import ThreadPool

import numpy as np

from . import images as image_ops
from . import progress
from .errors import UserError, check_utf8, first_names, is_utf8, printable

TRAIN_DIR, TEST_DIR = "train", "test"
# Files checked per decoding batch (only the check's bookkeeping; decoding is per file).
_CHECK_BATCH = 256


class ImageFiles:
    """Image files standing for a uint8 [N, size, size, channels] array, decoded on demand.

    Indexing with a slice or an index array gives another :class:`ImageFiles`.
    """

    def __init__(self, paths, size, channels, resize):
        self.paths = np.asarray(paths, dtype=object)
        self.size, self.channels, self.resize = size, channels, resize

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return ImageFiles(self.paths[index], self.size, self.channels, self.resize)

    @property
    def shape(self):
        return (len(self), self.size, self.size, self.channels)

    def resized(self, size):
        """The same files, decoded to ``size`` x ``size`` (e.g. thumbnails)."""
        return ImageFiles(self.paths, size, self.channels, self.resize)

    def load(self, path):
        """The uint8 [size, size, channels] pixels of one file (a string tensor)."""
        return image_ops.load(path, self.size, self.channels, self.resize)


def is_folder_dataset(data_dir):
    """Whether ``data_dir`` has the class-folder layout (a ``train/`` folder)."""
    return os.path.isdir(os.path.join(data_dir, TRAIN_DIR))


def first_names_in(paths, root):
    """:func:`first_names` of ``paths``, relative to ``root``, printable."""
    return first_names([printable(os.path.relpath(path, root)) for path in paths])



def _entries(folder):
    """The entries of ``folder``, sorted by name."""
    try:
        return sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as err:
        raise UserError(f"cannot read {printable(folder)} ({err.strerror}); check "
                        "its permissions") from None


def _walk_files(folder, seen):
    """Every entry below ``folder`` that is not a folder (``os.DirEntry``), sorted,
    following symlinks; a folder reached twice (a link loop, or two links to one folder)
    is read once."""
    found = []
    real = os.path.realpath(folder)
    if real in seen:
        return found
    seen.add(real)
    for entry in _entries(folder):
        if entry.name.startswith("."):
            continue  # .DS_Store, editor swap files, partial downloads
        if _is_folder(entry):
            found.extend(_walk_files(entry.path, seen))
        else:
            found.append(entry)
    return found


def _is_folder(entry):
    """``entry.is_dir()`` (links followed); False for a link that loops onto itself, which
    then fails to decode and is reported like a broken link."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def is_special(entry):
    """Whether ``entry`` is a FIFO, device or socket, or a link to one."""
    # is_file() needs no system call for a regular file; a broken or looping link is not
    # special: it fails to decode, and is reported with the files that do not decode.
    try:
        return not entry.is_file() and os.path.exists(entry.path)
    except OSError:
        return False


def report_unusable(special, not_utf8, folder):
    """One warning line for the files of ``folder`` skipped as not regular files
    (:func:`is_special`), one for those whose paths are not UTF-8."""
    if special:
        logging.warning("Skipped %d file(s) that are not regular files (FIFOs, devices, "
                        "sockets) in %s: %s", len(special), folder,
                        first_names_in(special, folder))
    if not_utf8:
        logging.warning("Skipped %d file(s) whose paths are not UTF-8 in %s: %s; rename them "
                        "to use them (TensorFlow reads only UTF-8 paths)", len(not_utf8),
                        folder, first_names_in(not_utf8, folder))


def scan_classes(split_dir):
    """The class folders of ``split_dir`` and their image files.

    Returns:
        dict class name -> sorted list of image paths, for the classes with at least one
        file with an image suffix (empty folders are reported and left out). Files that
        are not regular, or whose paths are not UTF-8, are reported and left out.

    Raises:
        UserError: no class folder, images directly in ``split_dir``, or a path that is not
            UTF-8 (``split_dir``'s or a class folder's).
    """
    check_utf8(split_dir)
    if not os.path.isdir(split_dir):
        raise UserError(f"{split_dir} is not a folder; put one folder per class in it")
    entries = _entries(split_dir)
    loose = [entry.path for entry in entries
             if entry.is_file() and entry.name.lower().endswith(image_ops.IMAGE_SUFFIXES)]
    if loose:
        raise UserError(f"{split_dir} holds images outside class folders "
                        f"({first_names_in(loose, split_dir)}); move each into "
                        f"{split_dir}/<class name>/")
    folders = [entry for entry in entries if not entry.name.startswith(".") and entry.is_dir()]
    misnamed = [entry.path for entry in folders if not is_utf8(entry.name)]
    if misnamed:
        raise UserError(f"{split_dir} holds class folders whose names are not UTF-8 "
                        f"({first_names_in(misnamed, split_dir)}); rename them in UTF-8: "
                        "the class names are written to dataset.json, metadata.tsv and "
                        "pictures")
    classes, empty, ignored, special, not_utf8 = {}, [], [], [], []
    with progress.step(f"Scanning {len(folders):,} class folders of {split_dir}",
                       len(folders)) as bar:
        for scanned, folder in enumerate(folders, 1):
            paths = []
            # Loops are cut per class: a link into another class folder keeps this
            # folder's class for what it reaches (the user linked it there).
            for entry in _walk_files(folder.path, set()):
                if not entry.name.lower().endswith(image_ops.IMAGE_SUFFIXES):
                    ignored.append(entry.path)
                elif is_special(entry):
                    special.append(entry.path)
                elif not is_utf8(entry.path):
                    not_utf8.append(entry.path)
                else:
                    paths.append(entry.path)
            if paths:
                classes[folder.name] = paths
            else:
                empty.append(folder.path)
            bar.update(scanned)
    if ignored:
        logging.warning("Ignored %d file(s) without an image suffix (%s) in %s: %s",
                        len(ignored), "/".join(image_ops.IMAGE_SUFFIXES), split_dir,
                        first_names_in(ignored, split_dir))
    report_unusable(special, not_utf8, split_dir)
    if empty:
        logging.warning("Ignored %d class folder(s) without images in %s: %s", len(empty),
                        split_dir, first_names_in(empty, split_dir))
    if not classes:
        raise UserError(f"{split_dir} holds no class folder with images; put the images of "
                        f"each class in {split_dir}/<class name>/ (PNG, JPEG, GIF or BMP)")
    return classes


def _header_size(path):
    """:func:`model.images.header_size` of the file ``path``; None where it is not a
    regular file, cannot be read, or has no image header."""
    try:
        with image_ops.open_regular(path) as file:
            return image_ops.header_size(file)
    except OSError:
        return None


def decodable(paths, parallel=4, what=None):
    """Which files decode as images, and their sizes: the header of each file is read,
    then those of at most :data:`model.images.MAX_PIXELS` are read and decoded once
    (with progress reported as the step ``what``, when given: :mod:`model.progress`).

    Returns:
        (bool [N] decodes, int [N, 2] height and width (0 where the file does not decode),
        bool [N] too large: above MAX_PIXELS, not decoded).
    """
    import tensorflow as tf

    count = len(paths)
    ok = np.zeros(count, bool)
    sizes = np.zeros((count, 2), np.int64)
    too_large = np.zeros(count, bool)
    # Threads overlap the opening of files on a network file system; in chunks, they cost
    # nothing on a local disk (about 20 us a file).
    with ThreadPool(parallel) as pool:
        headers = pool.map(_header_size, paths, chunksize=64)
    candidates = []
    for index, header in enumerate(headers):
        if header is not None and header[2] > image_ops.MAX_PIXELS:
            too_large[index] = True
        elif header is not None:
            candidates.append(index)
    if not candidates:
        return ok, sizes, too_large

    def size_of(index, path):
        # decode_image is what can fail in image_ops.decode; its channel conversions cannot.
        return index, tf.shape(tf.io.decode_image(tf.io.read_file(path),
                                                  expand_animations=False))[:2]

    dataset = (tf.data.Dataset.from_tensor_slices((np.array(candidates, np.int64),
                                                   [paths[i] for i in candidates]))
               .map(size_of, num_parallel_calls=parallel)
               .ignore_errors()
               .batch(_CHECK_BATCH))
    with progress.step(what, len(candidates)) if what else contextlib.nullcontext(
            progress.SILENT) as bar:
        for done, (index, size) in enumerate(dataset.as_numpy_iterator(), 1):
            ok[index] = True
            sizes[index] = size
            bar.update(min(done * _CHECK_BATCH, len(candidates)))
    return ok, sizes, too_large


def _keep_decodable(classes, split_dir, parallel):
    paths = [path for files in classes.values() for path in files]
    ok, sizes, too_large = decodable(paths, parallel,
                                     f"Checking the {len(paths):,} images of {split_dir}")
    if too_large.any():
        large = [path for path, refused in zip(paths, too_large) if refused]
        logging.warning("Skipped %d file(s) of %d larger than %s pixels (the limit that "
                        "bounds the memory of decoding one) in %s: %s; shrink them to use "
                        "them", len(large), len(paths), f"{image_ops.MAX_PIXELS:,}", split_dir,
                        first_names_in(large, split_dir))
    bad = [path for path, good, refused in zip(paths, ok, too_large) if not (good or refused)]
    if bad:
        logging.warning("Skipped %d file(s) of %d that do not decode as images in %s: %s",
                        len(bad), len(paths), split_dir, first_names_in(bad, split_dir))
    good = {path for path, keep in zip(paths, ok) if keep}
    kept = {name: [path for path in files if path in good] for name, files in classes.items()}
    lost = [name for name, files in kept.items() if not files]
    if lost:
        logging.warning("Ignored %d class folder(s) in %s whose every file failed to decode: %s",
                        len(lost), split_dir, first_names(lost))
    distinct = {tuple(size) for size in sizes[ok]}
    return {name: files for name, files in kept.items() if files}, distinct


def hold_out(classes, fraction, seed):
    """Split each class into (train, test): a seeded ``fraction`` of its images (at least
    one, and never all: a class keeps a train image) goes to test; single-image classes
    stay in train."""
    # Keys of their own: pipelines.epoch_rng draws from [seed, epoch].
    rng = np.random.default_rng([seed, 0, 1])
    train, test = {}, {}
    for name, paths in classes.items():
        order = rng.permutation(len(paths))
        held = 0 if len(paths) < 2 else min(len(paths) - 1, max(1, round(fraction * len(paths))))
        train[name] = [paths[i] for i in sorted(order[held:])]
        if held:
            test[name] = [paths[i] for i in sorted(order[:held])]
    return train, test


def load(data_dir, params, splits=("train", "test")):
    """Scan, check and label a class-folder dataset.

    Args:
        data_dir: the folder holding ``train/`` (and ``test/``).
        params: :class:`model.params.Params` (image size, channels, resize, seed,
            test_fraction, num_parallel_calls).
        splits: the splits wanted ("test" alone still reads ``train/`` for the class
            names, and for the held-out split when there is no ``test/``).

    Returns:
        dict with "class_names" (list of str), "held_out" (bool: test carved out of
        train/) and, per split asked for, (relative paths list, int64 labels [N]). The
        test split is in a seeded random order, so that its first ``eval_size`` images
        sample every class.
    """
    train_dir, test_dir = (os.path.join(data_dir, name) for name in (TRAIN_DIR, TEST_DIR))
    train_classes, test_classes, held_out = _scan_splits(data_dir, params)
    if "train" in splits:
        train_classes = _checked_train_classes(train_classes, train_dir, params)
    names = sorted(train_classes)
    if "test" in splits:
        test_classes, _ = _keep_decodable(test_classes, train_dir if held_out else test_dir,
                                          params.num_parallel_calls)
        unseen = sorted(set(test_classes) - set(train_classes))
        if unseen:
            logging.info("%d test class(es) are not in %s (retrieval on unseen classes): %s",
                         len(unseen), train_dir, first_names(unseen))
        names += unseen
    ids = {name: i for i, name in enumerate(names)}
    record = {"held_out": held_out, "class_names": names}
    for split, classes in (("train", train_classes), ("test", test_classes)):
        if split in splits:
            record[split] = _labelled_split(data_dir, split, classes, ids, held_out, params.seed)
    return record


def _scan_splits(data_dir, params):
    """The train and test classes of ``data_dir`` (test held out of train/ when there is
    no test/ folder), and whether test was held out."""
    train_dir, test_dir = (os.path.join(data_dir, name) for name in (TRAIN_DIR, TEST_DIR))
    train_classes = scan_classes(train_dir)
    if os.path.isdir(test_dir):
        return train_classes, scan_classes(test_dir), False
    train_classes, test_classes = hold_out(train_classes, params.test_fraction, params.seed)
    logging.info("%s has no %s/ folder: held out %d of its images as the test split "
                 "(test_fraction %s)", data_dir, TEST_DIR,
                 sum(map(len, test_classes.values())), params.test_fraction)
    return train_classes, test_classes, True


def _checked_train_classes(classes, train_dir, params):
    """The train classes with only the files that decode, their sizes and single-image
    classes reported."""
    classes, sizes = _keep_decodable(classes, train_dir, params.num_parallel_calls)
    _report_sizes(sizes, train_dir, params)
    singles = [name for name, paths in classes.items() if len(paths) == 1]
    if singles:
        logging.warning("%d class(es) in %s have a single image (%s): they give negatives "
                        "but no positive pair", len(singles), train_dir, first_names(singles))
    return classes


def _labelled_split(data_dir, split, classes, ids, held_out, seed):
    """(paths relative to ``data_dir``, int64 labels) of a split's ``classes``; the test
    split in a seeded random order."""
    paths = [path for name in sorted(classes) for path in classes[name]]
    labels = np.array([ids[name] for name in sorted(classes) for _ in classes[name]], np.int64)
    if split == "test":
        order = np.random.default_rng([seed, 0, 2]).permutation(len(paths))
        paths, labels = [paths[i] for i in order], labels[order]
    if not paths and split == "test" and held_out:
        raise UserError(f"no test image could be held out of {os.path.join(data_dir, TRAIN_DIR)}"
                        " (classes of one image stay in train); add a test/ folder of class "
                        "folders, or more images per class")
    if not paths:
        raise UserError(f"the {split} split of {data_dir} holds no image that decodes; "
                        f"add images to {os.path.join(data_dir, split)}/<class name>/")
    return [os.path.relpath(path, data_dir) for path in paths], labels


def _report_sizes(sizes, folder, params):
    if len(sizes) > 1:
        heights, widths = zip(*sizes)
        logging.info("%s holds images of %d sizes (%dx%d to %dx%d); all are resized to %dx%d "
                     "(resize: %s)", folder, len(sizes), min(widths), min(heights), max(widths),
                     max(heights), params.image_size, params.image_size, params.resize)


def files(data_dir, relative_paths, params):
    """The :class:`ImageFiles` of ``relative_paths`` under ``data_dir``, sized by ``params``."""
    paths = [os.path.join(data_dir, path) for path in relative_paths]
    return ImageFiles(paths, params.image_size, params.image_channels, params.resize)
