"""IDX reading and validation, on tiny files written here, and the shipped MNIST copy."""

import gzip
import hashlib
import os
import shutil
import struct

import numpy as np
import pytest
from conftest import write_idx

from model import mnist_dataset
from model.mnist_dataset import DataError, load_split, read_idx_images, read_idx_labels
from model.errors import UserError

MNIST_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "data", "mnist")
IMAGES, LABELS = mnist_dataset.SPLITS["train"]
# Published SHA-256 of the decompressed canonical files (../shared/datasets/mnist/README.md),
# written out here rather than imported so that a typo in the module fails the test.
MNIST_RAW_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def idx_bytes(magic, dims, payload):
    """Raw IDX bytes with any header, for malformed files (conftest.write_idx writes valid ones)."""
    return struct.pack(">I" + "I" * len(dims), magic, *dims) + bytes(payload)


def write(path, data, compress):
    path = str(path) + (".gz" if compress else "")
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if compress else data)
    return path


def sample(count=5, rows=3, cols=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    return images, labels


def write_split(folder, images, labels, compress=True, names=(IMAGES, LABELS)):
    os.makedirs(folder, exist_ok=True)
    write_idx(os.path.join(folder, names[0]), images, compress)
    write_idx(os.path.join(folder, names[1]), labels, compress)


def raises_one_line(match, func, *args, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        func(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_images_and_labels(tmp_path, compress):
    images, labels = sample()
    write_split(tmp_path, images, labels, compress)
    suffix = ".gz" if compress else ""
    got_images = read_idx_images(str(tmp_path / IMAGES) + suffix)
    got_labels = read_idx_labels(str(tmp_path / LABELS) + suffix)
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 3, 4)
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels.astype(np.int64))


def test_gzip_is_detected_by_content_not_name(tmp_path):
    images, _ = sample()
    path = write_idx(tmp_path / "images.gz", images, compress=False)
    np.testing.assert_array_equal(read_idx_images(path), images)


def test_empty_image_file_is_valid(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((0, 28, 28)))
    assert read_idx_images(path).shape == (0, 28, 28)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("reader, magic, dims, payload, match", [
    (read_idx_images, 2049, (5,), bytes(5), r"magic 2049 .*expected magic 2051"),
    (read_idx_images, 0x0D03, (1, 2, 2), bytes(16), r"type 0x0d with 3 dim.*expected magic 2051"),
    (read_idx_images, 0x89504E47, (), b"", r"not an IDX file"),
    (read_idx_labels, 2051, (1, 2, 2), bytes(4), r"magic 2051 .*expected magic 2049"),
    (read_idx_images, 2051, (2, 0, 4), b"", r"0 x 4 pixels"),
    (read_idx_images, 2051, (2, 3), b"", r"truncated header \(12 of 16 bytes\)"),
    (read_idx_images, 2051, (2, 3, 4), bytes(23), r"truncated, .*2 x 3 x 4 values \(40 bytes\).* 39 bytes"),
    (read_idx_labels, 2049, (6,), bytes(5), r"truncated, .*6 values \(14 bytes\).* 13 bytes"),
    (read_idx_images, 2051, (2, 3, 4), bytes(25), r"1 bytes after the 2 x 3 x 4 values"),
    (read_idx_labels, 2049, (3,), bytes(7), r"4 bytes after the 3 values"),
])
def test_header_and_length_errors(tmp_path, compress, reader, magic, dims, payload, match):
    path = write(tmp_path / "file", idx_bytes(magic, dims, payload), compress)
    message = raises_one_line(match, reader, path)
    assert message.startswith(path + ":")


def test_too_short_for_a_magic_number(tmp_path):
    path = write(tmp_path / "file", b"\x00\x00\x08", compress=False)
    raises_one_line(r"only 3 bytes", read_idx_labels, path)


def test_corrupt_and_truncated_gzip(tmp_path):
    images, _ = sample(count=50)
    packed = gzip.compress(idx_bytes(2051, images.shape, images.tobytes()))
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(packed[:10] + bytes(b ^ 0xFF for b in packed[10:]))
    raises_one_line(r"corrupt\.gz: corrupt gzip data", read_idx_images, str(corrupt))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(packed[:len(packed) // 2])
    raises_one_line(r"truncated\.gz: corrupt gzip data", read_idx_images, str(truncated))


def test_unreadable_path(tmp_path):
    raises_one_line(r"cannot read it", read_idx_images, str(tmp_path))


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_split_gz_and_raw(tmp_path, split):
    images, labels = sample(count=7)
    names = mnist_dataset.SPLITS[split]
    write_split(tmp_path / "gz", images, labels, compress=True, names=names)
    write_split(tmp_path / "raw", images, labels, compress=False, names=names)
    for folder in ("gz", "raw"):
        got_images, got_labels = load_split(str(tmp_path / folder), split)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)


def test_raw_file_wins_over_gz(tmp_path):
    images, labels = sample(count=4)
    write_split(tmp_path, images, labels, compress=False)
    write_idx(tmp_path / IMAGES, sample(count=4, seed=1)[0], compress=True)
    np.testing.assert_array_equal(load_split(str(tmp_path), "train")[0], images)


def test_count_mismatch_names_both_files(tmp_path):
    images, labels = sample(count=5)
    write_split(tmp_path, images, labels[:4])
    message = raises_one_line(r"holds 5 images but .* holds 4 labels", load_split,
                              str(tmp_path), "train")
    assert IMAGES in message and LABELS in message


def test_unknown_split(tmp_path):
    raises_one_line(r"unknown split 'validation'", load_split, str(tmp_path), "validation")


def test_missing_files_name_the_files_and_the_fix_and_create_nothing(tmp_path):
    message = raises_one_line(r"missing", load_split, str(tmp_path), "test")
    assert "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]" in message
    assert str(tmp_path) in message and os.path.join("data", "mnist") in message
    assert isinstance(DataError("x"), UserError)
    # Next to MNIST files, nothing is fetched either: the project runs offline.
    shutil.copy(os.path.join(MNIST_DIR, IMAGES + ".gz"), tmp_path)
    raises_one_line(r"^train-labels-idx1-ubyte\[\.gz\] missing", load_split, str(tmp_path),
                    "train")
    assert os.listdir(tmp_path) == [IMAGES + ".gz"]
    nowhere = tmp_path / "nowhere"
    raises_one_line(r"missing", load_split, str(nowhere), "train")
    assert not nowhere.exists()


def test_shipped_mnist():
    for name, sha in MNIST_RAW_SHA256.items():
        with gzip.open(os.path.join(MNIST_DIR, name + ".gz"), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha, name
    for split, count, first in (("train", 60000, [5, 0, 4, 1, 9]), ("test", 10000, [7, 2, 1, 0, 4])):
        images, labels = load_split(MNIST_DIR, split)
        assert images.shape == (count, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.int64
        assert labels[:5].tolist() == first
        assert sorted(np.unique(labels).tolist()) == list(range(10))
        assert images.min() == 0 and images.max() == 255
