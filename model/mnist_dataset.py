"""Read and validate IDX datasets (MNIST or any dataset in the same layout).

A ``data_dir`` holds four files, each either raw or gzip-compressed (``NAME`` or
``NAME.gz``; when both exist the raw file is read):

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

IDX layout (big-endian): images = magic 2051, count, rows, cols, then
count*rows*cols uint8 pixels; labels = magic 2049, count, then count uint8 labels.
Every check failure raises :class:`DataError` with one line naming the file, the
problem and the fix.

When files of a split are missing and the ones present (if any) are the MNIST files,
the canonical MNIST archives are downloaded from the known mirrors and kept only if
their SHA-256 matches. A directory that holds another dataset never gets MNIST files
mixed into it: a missing file there is an error.
"""

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.request
import zlib

import numpy as np

from model.utils import UserError

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)

# SHA-256 of the canonical compressed archives NAME.gz as served by the mirrors.
ARCHIVE_SHA256 = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaae03ffd0b93bf7b1",
}

# SHA-256 of the decompressed MNIST files: identifies MNIST whatever the gzip wrapper.
RAW_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_DOWNLOAD_TIMEOUT_S = 60


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


def download(name, data_dir, mirrors=MIRRORS, sha256=None):
    """Download ``name``.gz from the first mirror that serves it with the right SHA-256.

    The bytes go to a temporary file in ``data_dir`` that is renamed to ``name.gz``
    only after its checksum matched, so an interrupted or corrupt download leaves
    nothing behind.

    Args:
        name: file name without ``.gz`` (a key of :data:`ARCHIVE_SHA256` unless
            ``sha256`` is given).
        data_dir: destination folder (created if needed).
        mirrors: base URLs ending in ``/``.
        sha256: expected hex digest; defaults to ``ARCHIVE_SHA256[name]``.

    Returns:
        Path of the verified ``name.gz``.

    Raises:
        DataError: when no mirror gave a verified copy (the message lists why).
    """
    path, failures = _try_mirrors(name, data_dir, mirrors, sha256 or ARCHIVE_SHA256[name])
    if path is None:
        raise DataError(_download_failure(data_dir, [name], failures))
    return path


def _download_failure(data_dir, names, failures):
    files = ", ".join(name + ".gz" for name in names)
    folder = os.path.abspath(data_dir)
    return (f"could not download {names[0]}.gz into {folder} ({'; '.join(failures)}); "
            f"copy {files} from the project's data/mnist/ into {folder}")


def _try_mirrors(name, data_dir, mirrors, expected):
    """(path of the verified ``name.gz``, []) or (None, one reason per mirror)."""
    target = os.path.join(data_dir, name + ".gz")
    failures = []
    for mirror in mirrors:
        url = mirror + name + ".gz"
        try:
            os.makedirs(data_dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=data_dir)
        except OSError as err:
            raise DataError(f"cannot write into {data_dir} ({err.strerror}); make it "
                            "writable or copy the files there yourself") from None
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, \
                    urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                failures.append(f"{url}: SHA-256 {digest.hexdigest()} != {expected}")
                continue
            os.replace(tmp, target)
            logging.info("Downloaded %s to %s (SHA-256 verified)", url, target)
            return target, []
        except (OSError, ValueError) as err:
            # URLError and socket timeouts are OSErrors; ValueError: malformed URL.
            failures.append(f"{url}: {getattr(err, 'reason', err)}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return None, failures


def _is_mnist(path, name):
    return hashlib.sha256(_read_bytes(path)).hexdigest() == RAW_SHA256[name]


def _fetch_missing(data_dir, split, found, download_enabled, mirrors):
    """Download the split's missing files when the folder holds MNIST or nothing of the split."""
    missing = [name for name, path in found.items() if path is None]
    where = f"in {os.path.abspath(data_dir)}"
    wanted = ", ".join(f"{name}[.gz]" for name in missing)
    present = {name: path for name, path in found.items() if path is not None}
    foreign = [path for name, path in present.items() if not _is_mnist(path, name)]
    if foreign:
        raise DataError(f"{wanted} missing {where}, next to {foreign[0]} which is not "
                        f"MNIST; add the missing IDX file(s) of your dataset "
                        "(see data/README.md)")
    if not download_enabled:
        raise DataError(f"{wanted} missing {where}; copy the {split} files from the "
                        "project's data/mnist/ (or your own IDX files, see data/README.md) "
                        "there")
    for i, name in enumerate(missing):
        found[name], failures = _try_mirrors(name, data_dir, mirrors, ARCHIVE_SHA256[name])
        if found[name] is None:
            raise DataError(_download_failure(data_dir, missing[i:], failures))


def load_split(data_dir, split, download=True, mirrors=MIRRORS):
    """Load one split of an IDX dataset, downloading missing MNIST files if allowed.

    Args:
        data_dir: folder with the IDX files (see the module docstring).
        split: "train" or "test".
        download: fetch missing MNIST files from ``mirrors`` (verified by SHA-256).
        mirrors: base URLs of the canonical MNIST archives.

    Returns:
        (images uint8 [N, rows, cols], labels int64 [N]).

    Raises:
        DataError: missing files (and no verified download), invalid files, or image
            and label files of different lengths.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    found = {name: _find(data_dir, name) for name in SPLITS[split]}
    if None in found.values():
        _fetch_missing(data_dir, split, found, download, mirrors)
    images_name, labels_name = SPLITS[split]
    images = read_idx_images(found[images_name])
    labels = read_idx_labels(found[labels_name])
    if len(images) != len(labels):
        raise DataError(f"{found[images_name]} holds {len(images)} images but "
                        f"{found[labels_name]} holds {len(labels)} labels; use matching "
                        "image and label files")
    return images, labels
