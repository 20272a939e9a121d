"""Searching a gallery (model/retrieval.py, retrieve.py): neighbours against a brute-force
search, the cached index, every kind of gallery, the picture and bad input."""

import logging
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from test_image_folder import png_header_only
from test_images import call_unless_blocked_on
from model import evaluation, export, mnist_dataset, retrieval, run_folder
from model.commands import embed, retrieve
from model.errors import UserError, printable
from model.params import load_params


@pytest.fixture(scope="module")
def run_dir(trained_run, tmp_path_factory):
    """A copy of the shared trained run (the search writes its index cache into it)."""
    model_dir, data_dir = trained_run
    copy = str(tmp_path_factory.mktemp("retrieve") / "run")
    shutil.copytree(model_dir, copy)
    return copy, data_dir


def write_png(path, pixels):
    tf.io.write_file(str(path), tf.io.encode_png(pixels))
    return str(path)


def brute_force(model_dir, gallery_images, query_images, k):
    """The k nearest by an explicit numpy search over every gallery embedding."""
    params = load_params(model_dir)
    module = export.load_exported(model_dir)
    gallery = evaluation.comparable(module.embed(gallery_images).numpy(), params)
    queries = evaluation.comparable(module.embed(query_images).numpy(), params)
    distances = np.sqrt(((queries[:, None, :] - gallery[None, :, :]) ** 2).sum(axis=2))
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def test_idx_gallery_neighbours_match_a_brute_force_search(run_dir, tmp_path, capsys):
    model_dir, data_dir = run_dir
    images, labels = mnist_dataset.load_split(data_dir, "test")
    queries = [write_png(tmp_path / f"q{i}.png", images[i][..., None]) for i in (3, 40)]
    assert retrieve.run(["--model_dir", model_dir, "--gallery", data_dir, "--k", "4",
                         *queries]) == 0
    out = capsys.readouterr().out.splitlines()
    expected_distances, expected = brute_force(model_dir, images[..., None],
                                               images[[3, 40]][..., None], 4)
    threshold = evaluation.read_verification(model_dir)["threshold"]
    for q, query in enumerate(queries):
        block = out[out.index(f"{query}:") + 1:][:4]
        for rank, line in enumerate(block):
            number, distance, verdict, name, path = line.split()
            i = expected[q, rank]
            assert number == f"{rank + 1}." and path.endswith(f"[{i}]")
            assert float(distance) == pytest.approx(expected_distances[q, rank], abs=2e-4)
            assert verdict == ("same" if expected_distances[q, rank] <= threshold
                               else "different")
            assert name == str(labels[i])
    # The query is in the gallery: its own image comes first, at distance 0.
    assert out[1].split()[4].endswith("[3]") and float(out[1].split()[1]) < 1e-3


def test_the_index_is_cached_reused_and_rebuilt_when_the_gallery_changes(run_dir, tmp_path,
                                                                         caplog):
    model_dir, data_dir = run_dir
    images, _ = mnist_dataset.load_split(data_dir, "test")
    gallery = tmp_path / "flat"
    gallery.mkdir()
    for i in range(12):
        write_png(gallery / f"g{i:02d}.png", images[i][..., None])
    params = load_params(model_dir)
    caplog.set_level(logging.INFO)
    retrieval.search(model_dir, str(gallery), np.stack([images[5][..., None]]), params, 3)
    folder = os.path.join(model_dir, run_folder.RETRIEVAL_DIR)
    first = sorted(os.listdir(folder))
    assert len([name for name in first if name.endswith(".faiss")]) >= 1
    caplog.clear()
    _, distances, indices = retrieval.search(model_dir, str(gallery),
                                             np.stack([images[5][..., None]]), params, 3)
    assert "Reused the index of 12 gallery images" in caplog.text
    assert indices[0, 0] == 5 and distances[0, 0] < 1e-3
    # A changed file: a new key, the old entry of this gallery removed.
    write_png(gallery / "g00.png", images[20][..., None])
    caplog.clear()
    retrieval.search(model_dir, str(gallery), np.stack([images[5][..., None]]), params, 3)
    assert "Embedding 12 gallery images" in caplog.text
    assert sorted(os.listdir(folder)) != first
    assert len([n for n in os.listdir(folder) if n.endswith(".faiss")]) == len(
        [n for n in first if n.endswith(".faiss")])
    assert not [name for name in os.listdir(folder) if name.endswith(".tmp")]


def test_class_folder_galleries_name_the_classes_and_flat_ones_do_not(run_dir, tmp_path,
                                                                      capsys):
    model_dir, data_dir = run_dir
    images, labels = mnist_dataset.load_split(data_dir, "test")
    for i in range(20):
        folder = tmp_path / "classes" / f"digit_{labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        write_png(folder / f"{i:02d}.png", images[i][..., None])
    query = write_png(tmp_path / "q.png", images[7][..., None])
    assert retrieve.run(["--model_dir", model_dir, "--gallery", str(tmp_path / "classes"),
                         "--k", "2", query]) == 0
    first = capsys.readouterr().out.splitlines()[1].split()
    assert first[3] == f"digit_{labels[7]}" and first[4].endswith("07.png")


@pytest.mark.parametrize("folder", ["", "digits/"], ids=["flat", "class_folders"])
def test_a_gallery_skips_what_a_class_folder_skips_with_a_count_and_names(run_dir, tmp_path,
                                                                        caplog, folder):
    model_dir, data_dir = run_dir
    images, _ = mnist_dataset.load_split(data_dir, "test")
    gallery = tmp_path / "gallery"
    (gallery / folder).mkdir(parents=True)
    for i in range(5):
        write_png(gallery / folder / f"g{i}.png", images[i][..., None])
    with open(os.path.join(os.fsencode(gallery / folder), b"caf\xe9.png"), "wb") as f:
        f.write(tf.io.encode_png(images[7][..., None]).numpy())
    fifo = str(gallery / folder / "x.png")
    os.mkfifo(fifo)
    (gallery / folder / "big.png").write_bytes(png_header_only(8000, 7000))
    (gallery / folder / "bad.png").write_bytes(b"not an image")
    params = load_params(model_dir)
    for attempt in ("built", "reused"):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            found, distances, indices = call_unless_blocked_on(
                fifo, retrieval.search, model_dir, str(gallery), images[2:3, ..., None], params, 2)
        assert [os.path.basename(path) for path in found.paths] == [f"g{i}.png" for i in range(5)]
        assert indices[0, 0] == 2 and distances[0, 0] < 1e-3
        warnings = sorted(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        # Reused, the index's record repeats what the check of decoding skipped.
        assert warnings == sorted([
            f"Skipped 1 file(s) of 7 larger than 50,000,000 pixels (the limit that bounds the "
            f"memory of decoding one) in {gallery}: {folder}big.png; shrink them to use them",
            f"Skipped 1 file(s) of 7 that do not decode as images in {gallery}: {folder}bad.png",
            f"Skipped 1 file(s) that are not regular files (FIFOs, devices, sockets) in "
            f"{gallery}: {folder}x.png",
            f"Skipped 1 file(s) whose paths are not UTF-8 in {gallery}: {folder}caf\\xe9.png; "
            "rename them to use them (TensorFlow reads only UTF-8 paths)"]), warnings
        assert ("Reused the index of 5 gallery images" in caplog.text) == (attempt == "reused")


def _text_files(gallery):
    for i in range(8):
        (gallery / f"t{i}.png").write_text("not an image")


GALLERIES_WITHOUT_AN_IMAGE = {
    "text files named .png": (_text_files, "holds no image that decodes: 8 file(s) that are "
                              "not images or are larger than 50,000,000 pixels (t0.png, t1.png, "
                              "t2.png, ...); add PNG"),
    "only a FIFO": (lambda gallery: os.mkfifo(gallery / "x.png"),
                    "holds no image that can be read: 1 file(s) that are not regular files "
                    "(FIFOs, devices, sockets) or whose names are not UTF-8 (x.png); add PNG"),
}


@pytest.mark.parametrize("kind", sorted(GALLERIES_WITHOUT_AN_IMAGE))
def test_a_gallery_without_an_image_that_decodes_is_a_one_line_error(run_dir, tmp_path,
                                                                     capsys, kind):
    model_dir, _ = run_dir
    make, expected = GALLERIES_WITHOUT_AN_IMAGE[kind]
    (tmp_path / "gallery").mkdir()
    make(tmp_path / "gallery")
    query = write_png(tmp_path / "q.png", np.zeros((28, 28, 1), np.uint8))
    assert retrieve.run(["--model_dir", model_dir, "--gallery", str(tmp_path / "gallery"),
                         "--k", "5", query]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --gallery {tmp_path}/gallery {expected}"), err
    assert err.count("\n") == 1, err


def test_names_that_are_not_utf8_are_printed_with_escapes(run_dir, tmp_path, capsys):
    model_dir, data_dir = run_dir
    images, _ = mnist_dataset.load_split(data_dir, "test")
    folder = os.path.join(os.fsencode(tmp_path), b"d\xe9j\xe0")
    os.makedirs(folder)
    query = os.fsdecode(os.path.join(folder, b"q\xe9.png"))
    with open(query, "wb") as f:  # TensorFlow cannot write to such a name
        f.write(tf.io.encode_png(images[4][..., None]).numpy())
    gallery = os.fsdecode(os.path.join(folder, b"idx"))
    shutil.copytree(data_dir, gallery)
    shown = printable(query)
    assert shown.endswith("d\\xe9j\\xe0/q\\xe9.png")
    # capsys's stdout is strict UTF-8, as a terminal's: the names cannot be printed as they are.
    assert embed.run(["--model_dir", model_dir, query]) == 0
    assert capsys.readouterr().out.startswith(f"{shown}: [")
    assert retrieve.run(["--model_dir", model_dir, "--gallery", gallery, "--k", "1",
                         "--picture", str(tmp_path / "n.png"), query]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{shown}:" and out[1].endswith(
        f"{printable(gallery)}/t10k-images-idx3-ubyte.gz[4]")


def test_the_picture_shows_each_query_and_its_neighbours(run_dir, tmp_path):
    model_dir, data_dir = run_dir
    images, _ = mnist_dataset.load_split(data_dir, "test")
    queries = [write_png(tmp_path / f"q{i}.png", images[i][..., None]) for i in (1, 2)]
    picture = str(tmp_path / "neighbours.png")
    assert retrieve.run(["--model_dir", model_dir, "--gallery", data_dir, "--k", "3",
                         "--picture", picture, *queries]) == 0
    pixels = tf.io.decode_png(tf.io.read_file(picture)).numpy()
    assert pixels.shape[0] == 380 and pixels.shape[1] == 640  # 2 rows, 1 + 3 columns


def test_an_approximate_index_finds_the_exact_neighbours_of_clustered_vectors(monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 16)).astype(np.float32) * 4
    vectors = (centres[rng.integers(0, 50, 3000)]
               + rng.normal(size=(3000, 16)).astype(np.float32))
    monkeypatch.setattr(retrieval, "EXACT_MAX_GALLERY", 1000)
    approximate = retrieval.build_index(vectors)
    assert type(approximate).__name__ == "IndexHNSWFlat"
    _, found = approximate.search(vectors[:200], 10)
    order = np.argsort(((vectors[:200, None] - vectors[None]) ** 2).sum(axis=2), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, order)])
    assert recall >= 0.95
    assert type(retrieval.build_index(vectors[:1000])).__name__ == "IndexFlatL2"


@pytest.mark.parametrize("arguments, message", [
    (["--gallery", "{tmp}/missing"], "is not a folder"),
    (["--gallery", "{tmp}/empty"], "holds no class folder with images"),
    (["--gallery", "{data}", "--k", "500"], r"--k is 500 but the gallery holds 100 images"),
    (["--gallery", "{data}", "{tmp}/nothing.png"], "no such file"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, arguments, message):
    model_dir, data_dir = run_dir
    (tmp_path / "empty").mkdir()
    query = write_png(tmp_path / "q.png", np.zeros((28, 28, 1), np.uint8))
    arguments = [a.format(tmp=tmp_path, data=data_dir) for a in arguments]
    if not any(a.endswith(".png") for a in arguments):
        arguments.append(query)
    assert retrieve.run(["--model_dir", model_dir, *arguments]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_a_run_without_an_export_says_to_train_it(tmp_path, tiny_data_dir, capsys):
    (tmp_path / "params.json").write_text("{}")
    query = write_png(tmp_path / "q.png", np.zeros((28, 28, 1), np.uint8))
    (tmp_path / "verification.json").write_text(
        '{"threshold": 1.0, "held_out_accuracy": 0.9, "epoch": 1}')
    assert retrieve.run(["--model_dir", str(tmp_path), "--gallery", tiny_data_dir, query]) == 2
    assert "no complete exported model" in capsys.readouterr().err


def test_missing_faiss_is_one_line_before_any_work(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "faiss" else real(name, *a))
    with pytest.raises(UserError, match="needs faiss, which is not installed: pip install "
                                        "faiss-cpu"):
        retrieval.check_faiss()
