"""Read and validate IDX datasets (MNIST or any dataset in the same layout).

A ``data_dir`` holds four files, each either raw or gzip-compressed (``NAME`` or
``NAME.gz``; when both exist the raw file is read):

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

IDX layout (big-endian): images = magic 2051, count, rows, cols, then
count*rows*cols uint8 pixels; labels = magic 2049, count, then count uint8 labels.
Every check failure raises :class:`DataError` with one line naming the file, the
problem and the fix.

Nothing is downloaded: MNIST ships in the project's ``data/mnist`` (see
``data/README.md`` for its checksums) and a missing file is an error naming it.
"""

import gzip
import os
import zlib

import numpy as np

from .errors import UserError
from .shipped_data import MNIST_DIR

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Labels are uint8: at most 256 classes.
MAX_LABELS = 256
_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


class DataError(UserError):
    """A dataset file is missing, unreadable or inconsistent (one line: file, problem, fix)."""


def _read_bytes(path):
    """The decompressed content of ``path`` (gzip detected by its magic bytes, not the name)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}); check the path "
                        "and its permissions") from None
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: corrupt gzip data ({err}); replace the file with an "
                        "intact copy") from None


def _read_idx(path, ndim, what):
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions.

    Returns:
        uint8 array of the shape given in the header.
    """
    data = _read_bytes(path)
    header_size = 4 + 4 * ndim
    expected_magic = (_UBYTE << 8) | ndim
    if len(data) < 4:
        raise DataError(f"{path}: only {len(data)} bytes, too short for an IDX header; "
                        f"replace it with an IDX {what} file")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        if magic >> 16 == 0:
            found = (f"magic {magic} (IDX data of type 0x{(magic >> 8) & 0xFF:02x} "
                     f"with {magic & 0xFF} dimension(s))")
        else:
            found = f"magic {magic}: not an IDX file"
        raise DataError(f"{path}: {found}, expected magic {expected_magic} (uint8 {what} "
                        f"with {ndim} dimension(s)); check that the file is the {what} file")
    if len(data) < header_size:
        raise DataError(f"{path}: truncated header ({len(data)} of {header_size} bytes); "
                        "replace the file with a complete copy")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and (shape[1] == 0 or shape[2] == 0):
        raise DataError(f"{path}: header gives images of {shape[1]} x {shape[2]} pixels; "
                        "rows and columns must be positive, fix the header")
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    dims = " x ".join(map(str, shape))
    if len(data) < expected:
        raise DataError(f"{path}: truncated, the header promises {dims} values "
                        f"({expected} bytes) but the data has {len(data)} bytes; replace "
                        "the file with a complete copy")
    if len(data) > expected:
        raise DataError(f"{path}: {len(data) - expected} bytes after the {dims} values "
                        f"promised by the header ({expected} bytes); the header count is "
                        "wrong or files were concatenated, fix the file")
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def read_idx_images(path):
    """Read an IDX image file (magic 2051), gzip-compressed or raw.

    Args:
        path: file path.

    Returns:
        uint8 array [N, rows, cols].

    Raises:
        DataError: unreadable file, corrupt gzip, wrong magic, zero-sized images, or a
            length that disagrees with the header.
    """
    return _read_idx(path, 3, "images")


def read_idx_labels(path):
    """Read an IDX label file (magic 2049), gzip-compressed or raw.

    Args:
        path: file path.

    Returns:
        int64 array [N].

    Raises:
        DataError: as :func:`read_idx_images`.
    """
    return _read_idx(path, 1, "labels").astype(np.int64)


def _find(data_dir, name):
    """Path of ``name`` or ``name.gz`` in ``data_dir`` (raw first), or None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    return None


def split_path(data_dir, split, kind):
    """The file holding the ``kind`` ("images" or "labels") of ``split`` in ``data_dir``
    (the raw file when present, else the .gz one, as :func:`load_split` reads them)."""
    name = SPLITS[split][0 if kind == "images" else 1]
    return _find(data_dir, name) or os.path.join(data_dir, name)


def has_split(data_dir, split):
    """Whether ``data_dir`` holds both IDX files of ``split`` ("train" or "test")."""
    return all(_find(data_dir, name) is not None for name in SPLITS[split])


def load_split(data_dir, split):
    """Load one split of an IDX dataset.

    Args:
        data_dir: folder with the IDX files (see the module docstring).
        split: "train" or "test".

    Returns:
        (images uint8 [N, rows, cols], labels int64 [N]).

    Raises:
        DataError: missing or invalid files, or image and label files of different
            lengths.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir} is a file, not a folder; pass the folder that "
                        "holds the IDX files")
    found = {name: _find(data_dir, name) for name in SPLITS[split]}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"{', '.join(name + '[.gz]' for name in missing)} missing in "
            f"{os.path.abspath(data_dir)}; copy the {split} files there (the shipped MNIST "
            f"is in {MNIST_DIR}) or your own IDX files, or pass the folder that "
            "holds them as --data_dir")
    images_name, labels_name = SPLITS[split]
    images = read_idx_images(found[images_name])
    labels = read_idx_labels(found[labels_name])
    if len(images) != len(labels):
        raise DataError(f"{found[images_name]} holds {len(images)} images but "
                        f"{found[labels_name]} holds {len(labels)} labels; use matching "
                        "image and label files")
    return images, labels
