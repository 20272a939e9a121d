"""Class-folder datasets: scanning, checking, labelling (model/image_folder.py)."""

import logging
import os
import stat
import struct

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_image_folders
from test_images import PRINT_PEAK, blank_png, call_unless_blocked_on, run_bounded
from model import image_folder
from model.errors import UserError
from model.params import Params

PARAMS = Params().replace(image_size=16, image_channels=3)


def png(path, value=100, size=(8, 8, 3)):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(np.full(size, value, np.uint8)))
    return str(path)


def make_tree(root, layout):
    """``layout``: {relative path: pixel value (a PNG) or bytes (written as they are)}."""
    for relative, content in layout.items():
        path = os.path.join(str(root), relative)
        if isinstance(content, bytes):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
        else:
            png(path, content)
    return str(root)


def test_classes_are_sorted_folder_names_and_labels_their_positions(tmp_path):
    root = make_tree(tmp_path, {"train/zebra/a.png": 1, "train/ant/b.png": 2,
                                "train/ant/c.PNG": 3, "train/mole/deep/er/d.png": 4,
                                "test/mole/e.png": 5, "test/ant/f.png": 6})
    record = image_folder.load(root, PARAMS)
    assert record["class_names"] == ["ant", "mole", "zebra"]
    paths, labels = record["train"]
    assert paths == ["train/ant/b.png", "train/ant/c.PNG", "train/mole/deep/er/d.png",
                     "train/zebra/a.png"]
    np.testing.assert_array_equal(labels, [0, 0, 1, 2])
    test_paths, test_labels = record["test"]
    assert sorted(zip(test_paths, test_labels.tolist())) == [("test/ant/f.png", 0),
                                                            ("test/mole/e.png", 1)]
    assert not record["held_out"]


def test_non_images_hidden_files_and_empty_folders_are_left_out_with_a_warning(tmp_path, caplog):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/a/notes.txt": b"hi",
                                "train/a/.DS_Store": b"x", "train/b/2.jpeg.part": b"x",
                                "train/c/3.png": 3, "test/a/4.png": 4})
    os.makedirs(os.path.join(root, "train", "empty"))
    with caplog.at_level(logging.WARNING):
        record = image_folder.load(root, PARAMS)
    assert record["class_names"] == ["a", "c"]
    text = caplog.text
    assert "Ignored 2 file(s) without an image suffix" in text and "notes.txt" in text
    assert "Ignored 2 class folder(s) without images" in text and "empty" in text
    assert ".DS_Store" not in text


def test_files_that_do_not_decode_are_skipped_with_a_count_and_names(tmp_path, caplog):
    good = tf.io.encode_jpeg(np.full((8, 8, 3), 50, np.uint8)).numpy()
    root = make_tree(tmp_path, {"train/a/ok.jpg": good, "train/a/cut.jpg": good[:len(good) // 2],
                                "train/a/text.png": b"not a png", "train/a/empty.gif": b"",
                                "train/b/ok.png": 7, "test/a/t.png": 1})
    os.symlink(os.path.join(root, "nowhere.png"), os.path.join(root, "train", "b", "broken.png"))
    with caplog.at_level(logging.WARNING):
        record = image_folder.load(root, PARAMS)
    assert record["train"][0] == ["train/a/ok.jpg", "train/b/ok.png"]
    assert "Skipped 4 file(s) of 6 that do not decode" in caplog.text
    assert "a/cut.jpg" in caplog.text


def test_a_class_whose_files_all_fail_is_dropped(tmp_path, caplog):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/a/2.png": 2, "train/bad/x.png": b"",
                                "test/a/3.png": 3})
    with caplog.at_level(logging.WARNING):
        record = image_folder.load(root, PARAMS)
    assert record["class_names"] == ["a"]
    assert "whose every file failed to decode: bad" in caplog.text


def test_symlinks_are_followed_and_loops_read_once(tmp_path):
    elsewhere = make_tree(tmp_path / "elsewhere", {"cats/1.png": 1, "cats/2.png": 2})
    root = make_tree(tmp_path / "data", {"train/dogs/1.png": 3, "test/dogs/2.png": 4})
    os.symlink(os.path.join(elsewhere, "cats"), os.path.join(root, "train", "cats"))
    os.symlink(os.path.join(root, "train", "dogs"), os.path.join(root, "train", "dogs", "loop"))
    record = image_folder.load(root, PARAMS)
    assert record["class_names"] == ["cats", "dogs"]
    np.testing.assert_array_equal(record["train"][1], [0, 0, 1])


def test_single_image_classes_are_kept_with_a_warning(tmp_path, caplog):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/a/2.png": 2, "train/solo/3.png": 3,
                                "test/a/4.png": 4})
    with caplog.at_level(logging.WARNING):
        record = image_folder.load(root, PARAMS)
    assert record["class_names"] == ["a", "solo"]
    assert "1 class(es)" in caplog.text and "single image (solo)" in caplog.text


def test_test_classes_absent_from_train_get_the_next_ids(tmp_path, caplog):
    root = make_tree(tmp_path, {"train/b/1.png": 1, "train/d/2.png": 2, "test/b/3.png": 3,
                                "test/a/4.png": 4, "test/c/5.png": 5})
    with caplog.at_level(logging.INFO):
        record = image_folder.load(root, PARAMS)
    assert record["class_names"] == ["b", "d", "a", "c"]
    assert sorted(record["test"][1].tolist()) == [0, 2, 3]
    assert "2 test class(es) are not in" in caplog.text


def test_without_test_folder_a_seeded_share_of_each_class_is_held_out(tmp_path):
    layout = {f"train/c{c}/{i}.png": i for c in range(3) for i in range(10)}
    layout["train/solo/0.png"] = 0
    root = make_tree(tmp_path, layout)
    record = image_folder.load(root, PARAMS.replace(test_fraction=0.3))
    assert record["held_out"]
    train, test = record["train"][0], record["test"][0]
    assert not set(train) & set(test) and len(train) + len(test) == 31
    for c in range(3):
        assert sum(path.startswith(f"train/c{c}/") for path in test) == 3
    assert "train/solo/0.png" in train  # a single image stays in train
    assert image_folder.load(root, PARAMS.replace(test_fraction=0.3))["test"][0] == test
    assert image_folder.load(root, PARAMS.replace(test_fraction=0.3, seed=1))["test"][0] != test


def test_the_test_split_is_in_a_seeded_shuffled_order(tmp_path):
    root = write_image_folders(tmp_path, num_train=20, num_test=40, num_classes=4)
    labels = image_folder.load(root, PARAMS)["test"][1]
    # The first eval_size images sample every class, not the first classes in name order.
    assert np.any(np.diff(labels) < 0) and set(labels[:16].tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(labels, image_folder.load(root, PARAMS)["test"][1])


@pytest.mark.parametrize("layout, message", [
    ({"train/a.png": 1, "test/a/b.png": 1}, r"holds images outside class folders \(a.png\)"),
    ({"train/a/notes.txt": b"x", "test/a/b.png": 1}, "holds no class folder with images"),
    ({"train/a/x.png": b"garbage", "test/a/b.png": 1}, "holds no image that decodes"),
    ({"train/a/x.png": 1, "train/b/y.png": 2}, "no test image could be held out"),
])
def test_unusable_folders_are_one_line_errors(tmp_path, layout, message):
    root = make_tree(tmp_path, layout)
    with pytest.raises(UserError, match=message) as info:
        image_folder.load(root, PARAMS)
    assert "\n" not in str(info.value)


def test_is_folder_dataset(tmp_path, tiny_data_dir):
    assert image_folder.is_folder_dataset(make_tree(tmp_path / "f", {"train/a/1.png": 1}))
    assert not image_folder.is_folder_dataset(tiny_data_dir)


def test_image_files_index_like_an_array(tmp_path):
    files = image_folder.ImageFiles([f"{i}.png" for i in range(5)], 16, 3, "pad")
    assert files.shape == (5, 16, 16, 3) and len(files[1:3]) == 2
    assert list(files[np.array([4, 0])].paths) == ["4.png", "0.png"]


def test_the_scan_skips_fifos_sockets_and_links_to_devices_with_a_count_and_names(tmp_path,
                                                                                    caplog):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/b/2.png": 2})
    folder = os.path.join(root, "train", "a")
    os.mkfifo(os.path.join(folder, "fifo.png"))
    os.mknod(os.path.join(folder, "socket.png"), stat.S_IFSOCK | 0o600)
    os.symlink("/dev/zero", os.path.join(folder, "zero.png"))
    os.symlink(os.path.join(folder, "nowhere.png"), os.path.join(folder, "broken.png"))
    with caplog.at_level(logging.WARNING):
        classes = image_folder.scan_classes(os.path.join(root, "train"))
    # A broken link stays: its decoding fails, and is reported with the files that do not
    # decode.
    assert classes["a"] == [os.path.join(folder, name) for name in ("1.png", "broken.png")]
    assert ("Skipped 3 file(s) that are not regular files (FIFOs, devices, sockets) in "
            f"{root}/train: a/fifo.png, a/socket.png, a/zero.png") in caplog.text


def test_a_fifo_in_a_class_folder_does_not_block_loading(tmp_path, caplog):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/b/2.png": 2, "test/a/3.png": 3})
    fifo = os.path.join(root, "train", "a", "x.png")
    os.mkfifo(fifo)
    with caplog.at_level(logging.WARNING):
        record = call_unless_blocked_on(fifo, image_folder.load, root, PARAMS)
    assert record["train"][0] == ["train/a/1.png", "train/b/2.png"]
    assert "not regular files" in caplog.text and "a/x.png" in caplog.text


def test_a_link_to_itself_in_a_class_folder_is_skipped_like_a_broken_link(tmp_path, caplog):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/b/2.png": 2, "test/a/3.png": 3})
    os.symlink("self.png", os.path.join(root, "train", "a", "self.png"))  # ELOOP when followed
    with caplog.at_level(logging.WARNING):
        record = image_folder.load(root, PARAMS)
    assert record["train"][0] == ["train/a/1.png", "train/b/2.png"]
    assert "do not decode as images" in caplog.text and "a/self.png" in caplog.text


def test_decodable_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = str(tmp_path / "x.png")
    os.mkfifo(fifo)
    good = png(tmp_path / "ok.png")
    ok, _, too_large = call_unless_blocked_on(fifo, image_folder.decodable, [fifo, good])
    assert ok.tolist() == [False, True] and not too_large.any()


def png_header_only(width, height):
    """The first bytes of a PNG of ``width`` x ``height`` (signature and IHDR): enough for
    its header, not for decoding."""
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
            + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0) + bytes(4))


def test_images_above_max_pixels_are_skipped_unread_with_a_count_and_names(tmp_path, caplog):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/a/big.png": png_header_only(8000, 7000),
                                "train/a/bad.png": b"x", "train/b/2.png": 2,
                                "test/a/wide.png": png_header_only(50_000_001, 1),
                                "test/a/3.png": 3})
    with caplog.at_level(logging.WARNING):
        record = image_folder.load(root, PARAMS)
    assert record["train"][0] == ["train/a/1.png", "train/b/2.png"]
    assert record["test"][0] == ["test/a/3.png"]
    assert ("Skipped 1 file(s) of 4 larger than 50,000,000 pixels (the limit that bounds the "
            f"memory of decoding one) in {root}/train: a/big.png; shrink them to use "
            "them") in caplog.text
    assert f"Skipped 1 file(s) of 4 that do not decode as images in {root}/train: a/bad.png" \
        in caplog.text
    assert f"larger than 50,000,000 pixels (the limit that bounds the memory of decoding one) " \
        f"in {root}/test: a/wide.png" in caplog.text


@pytest.mark.e2e
def test_a_20000_x_20000_png_is_skipped_in_bounded_memory(tmp_path):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/b/2.png": 2, "test/a/3.png": 3})
    blank_png(os.path.join(root, "train", "a", "huge.png"), 20000, 20000)
    code = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from model import image_folder
from model.params import Params
print(image_folder.load(sys.argv[1], Params().replace(image_size=16))["train"][0])
""" + PRINT_PEAK
    done, peak = run_bounded(code, root)
    assert done.stdout.splitlines()[0] == "['train/a/1.png', 'train/b/2.png']"
    assert "Skipped 1 file(s) of 3 larger than 50,000,000 pixels" in done.stderr
    assert "a/huge.png" in done.stderr
    assert peak < 1.5e9


def write_under(root, relative, content):
    """Write ``content`` at ``root``/``relative`` (bytes paths: names that are not UTF-8)."""
    path = os.path.join(os.fsencode(root), relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


def test_files_named_in_another_encoding_are_skipped_and_named_with_escapes(tmp_path, caplog):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "train/b/2.png": 2, "test/a/3.png": 3})
    image = tf.io.encode_png(np.full((8, 8, 3), 5, np.uint8)).numpy()
    write_under(root, b"train/a/caf\xe9.png", image)
    write_under(root, b"train/b/d\xe9j\xe0/4.png", image)
    with caplog.at_level(logging.WARNING):
        record = image_folder.load(root, PARAMS)
    assert record["train"][0] == ["train/a/1.png", "train/b/2.png"]
    assert (f"Skipped 2 file(s) whose paths are not UTF-8 in {root}/train: a/caf\\xe9.png, "
            "b/d\\xe9j\\xe0/4.png; rename them to use them (TensorFlow reads only UTF-8 "
            "paths)") in caplog.text
    caplog.text.encode("utf-8")  # every message can be written to train.log


def test_a_class_folder_named_in_another_encoding_is_a_one_line_error(tmp_path):
    root = make_tree(tmp_path, {"train/a/1.png": 1, "test/a/3.png": 3})
    write_under(root, b"train/caf\xe9/2.png",
                tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
    with pytest.raises(UserError) as info:
        image_folder.load(root, PARAMS)
    assert str(info.value) == (
        f"{root}/train holds class folders whose names are not UTF-8 (caf\\xe9); rename them "
        "in UTF-8: the class names are written to dataset.json, metadata.tsv and pictures")


def test_a_data_dir_whose_path_is_not_utf8_is_a_one_line_error(tmp_path):
    root = os.path.join(os.fsencode(tmp_path), b"d\xe9j\xe0")
    write_under(root, b"train/a/1.png", tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
    with pytest.raises(UserError, match=r"d\\xe9j\\xe0/train: the path is not UTF-8"):
        image_folder.load(os.fsdecode(root), PARAMS)
