"""PCA, the t-SNE picture (model/visualize.py) and the visualize_embeddings command."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.plugins.projector import ProjectorConfig

from conftest import tiny_params
from model import evaluation, network, run_folder, visualize
from model.cli import run_cli
from model.commands import visualize_embeddings
from model.files import write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(path)).numpy()


def test_pca_of_planar_data_keeps_distances_and_orders_axes():
    rng = np.random.default_rng(3)
    plane = rng.normal(size=(200, 2)) * [5.0, 1.0] + [10.0, -4.0]
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    embeddings = np.hstack([plane, np.zeros((200, 4))]) @ rotation.T
    points = visualize.pca_2d(embeddings)
    assert points.shape == (200, 2)
    np.testing.assert_allclose(points.mean(axis=0), 0, atol=1e-9)
    # A rank-2 set keeps all its pairwise distances in its 2-D PCA.
    def distances(x):
        return np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(distances(points), distances(embeddings), atol=1e-9)
    assert points[:, 0].var() > points[:, 1].var()


def test_pca_matches_covariance_eigenvectors_with_fixed_signs():
    rng = np.random.default_rng(4)
    embeddings = rng.normal(size=(100, 5)) * [4.0, 3.0, 1.0, 0.5, 0.1] @ \
        np.linalg.qr(rng.normal(size=(5, 5)))[0]
    centred = embeddings - embeddings.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, np.argsort(values)[::-1][:2]].T
    for axis in axes:
        axis *= np.sign(axis[np.argmax(np.abs(axis))])
    np.testing.assert_allclose(visualize.pca_2d(embeddings), centred @ axes.T, atol=1e-9)
    # The picture does not depend on the order of the rows.
    order = rng.permutation(100)
    np.testing.assert_allclose(visualize.pca_2d(embeddings[order]),
                               visualize.pca_2d(embeddings)[order], atol=1e-9)


def test_pca_of_one_dimensional_embeddings_pads_with_zeros():
    points = visualize.pca_2d(np.array([[1.0], [3.0], [5.0]]))
    np.testing.assert_allclose(points, [[-2, 0], [0, 0], [2, 0]], atol=1e-12)


# --- t-SNE and the figure -----------------------------------------------------------------

def one_nn_accuracy(points, labels):
    """Leave-one-out accuracy of each point's nearest other point's label."""
    distances = ((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(distances, np.inf)
    return float(np.mean(labels[distances.argmin(axis=1)] == labels))


def blobs(seed=0, per_class=40, classes=3, dim=8):
    """float32 [per_class * classes, dim] Gaussian clusters far apart, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = rng.normal(size=(classes, dim)) * 20
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def test_tsne_separates_far_apart_clusters_and_is_seeded():
    embeddings, labels = blobs()
    points = visualize.tsne_2d(embeddings, seed=3)
    assert points.shape == (120, 2) and points.dtype == np.float64
    assert one_nn_accuracy(points, labels) == 1.0
    np.testing.assert_array_equal(points, visualize.tsne_2d(embeddings, seed=3))


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 12])
def test_tsne_of_small_sets(count):
    # The perplexity must stay below the number of points; under 4 points there is
    # nothing for a t-SNE to keep, and the PCA is the picture.
    embeddings = np.random.default_rng(1).normal(size=(count, 4))
    points = visualize.tsne_2d(embeddings)
    assert points.shape == (count, 2) and np.all(np.isfinite(points))
    if count < 4:
        np.testing.assert_array_equal(points, visualize.pca_2d(embeddings))


@pytest.mark.parametrize("embeddings", [
    np.ones((10, 3)),                              # all points equal
    np.arange(8, dtype=float)[:, None],            # 1-D
], ids=["identical", "one-dimensional"])
def test_tsne_of_degenerate_embeddings_is_their_pca(embeddings):
    np.testing.assert_array_equal(visualize.tsne_2d(embeddings), visualize.pca_2d(embeddings))


def test_tsne_rejects_non_finite_embeddings():
    with pytest.raises(ValueError, match="finite real numbers"):
        visualize.tsne_2d(np.full((6, 3), np.inf))


def drawn_rgb(cmap, index, count, alpha=0.7):
    """0-255 RGB of class ``index``'s points: its colour blended on white at ``alpha``."""
    from matplotlib import colormaps

    colour = np.array(colormaps[cmap](index if cmap != "turbo" else
                                      np.linspace(0.05, 0.95, count)[index])[:3])
    return np.round((alpha * colour + (1 - alpha)) * 255).astype(int)


def colour_present(image, rgb, tolerance=6):
    """Whether pixels within ``tolerance`` of ``rgb`` (0-255) are in the RGB(A) ``image``."""
    return bool(np.any(np.all(np.abs(image[..., :3].astype(int) - rgb) <= tolerance, axis=-1)))


@pytest.mark.parametrize("classes, cmap", [(1, "tab10"), (2, "tab10"), (12, "tab20"),
                                           (50, "turbo")])
def test_plot_embeddings_writes_a_deterministic_png_with_the_class_colours(
        tmp_path, classes, cmap):
    embeddings, labels = blobs(per_class=max(2, 100 // classes), classes=classes, dim=5)
    path = str(tmp_path / "out" / "embeddings.png")
    assert visualize.plot_embeddings(path, embeddings, labels, seed=2) == path
    image = read_png(path)
    assert image.shape[:2] == (660, 1400)
    white = np.all(image[..., :3] == 255, axis=-1).mean()
    assert 0.5 < white < 0.99  # a white page with something drawn on it
    for i in range(classes):
        assert colour_present(image, drawn_rgb(cmap, i, classes)), f"class {i}"
    again = visualize.plot_embeddings(str(tmp_path / "again.png"), embeddings, labels, seed=2)
    assert open(path, "rb").read() == open(again, "rb").read()
    assert os.listdir(tmp_path / "out") == ["embeddings.png"]  # no temporary file left


def test_plot_embeddings_with_string_labels_class_names_and_title(tmp_path):
    embeddings, labels = blobs(classes=2)
    words = np.array(["sneaker", "boot"])[labels]
    default = visualize.plot_embeddings(str(tmp_path / "d.png"), embeddings, words)
    named = visualize.plot_embeddings(str(tmp_path / "n.png"), embeddings, words,
                                      class_names={"boot": "Ankle boot"}, title="Shoes")
    assert read_png(default).shape == read_png(named).shape
    assert open(default, "rb").read() != open(named, "rb").read()  # only the text differs


def test_plot_embeddings_of_one_point(tmp_path):
    path = visualize.plot_embeddings(str(tmp_path / "e.png"), [[1.0, 2.0]], ["only"])
    assert read_png(path).shape[:2] == (660, 1400)


def test_plot_embeddings_leaves_pyplot_alone(tmp_path):
    import matplotlib
    from matplotlib import pyplot

    backend, figures = matplotlib.get_backend(), pyplot.get_fignums()
    embeddings, labels = blobs(classes=2, per_class=10)
    visualize.plot_embeddings(str(tmp_path / "e.png"), embeddings, labels)
    assert matplotlib.get_backend() == backend and pyplot.get_fignums() == figures


def test_plot_embeddings_interrupted_keeps_the_previous_picture(tmp_path, monkeypatch):
    embeddings, labels = blobs(classes=2, per_class=10)
    path = visualize.plot_embeddings(str(tmp_path / "e.png"), embeddings, labels)
    before = open(path, "rb").read()

    def crash(source, target):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        visualize.plot_embeddings(path, embeddings, labels, title="new")
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["e.png"]


@pytest.mark.parametrize("embeddings, labels, class_names, message", [
    (np.full((4, 3), np.nan), np.zeros(4), None, "finite real numbers"),
    (np.zeros((4, 3)), np.zeros(5), None, r"labels must have shape \(4,\)"),
    (np.zeros((4, 3)), np.zeros((4, 1)), None, r"labels must have shape \(4,\)"),
    (np.zeros((0, 3)), np.zeros(0), None, "non-empty 2-D array"),
    (np.zeros(4), np.zeros(4), None, "non-empty 2-D array"),
    (np.zeros((4, 3)), np.zeros(4), ["zero"], "class_names must be a dict"),
])
def test_plot_embeddings_rejects_bad_input(tmp_path, embeddings, labels, class_names, message):
    with pytest.raises(ValueError, match=message):
        visualize.plot_embeddings(str(tmp_path / "e.png"), embeddings, labels, class_names)
    assert not os.listdir(tmp_path)


# --- visualize_embeddings.py ------------------------------------------------------------



def trained_looking_model_dir(tmp_path):
    """A model_dir with params.json and a checkpoint of a random network, laid out like train.py."""
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    write_json(str(model_dir / "params.json"), tiny_params().to_dict())
    model = network.build_model(tiny_params())
    folder = model_dir / run_folder.CHECKPOINT_DIRS["latest"]
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(folder), 1).save()
    return str(model_dir), model


@pytest.mark.e2e
def test_cli_writes_projector_files_and_the_picture(tmp_path, tiny_data_dir, monkeypatch):
    from model import mnist_dataset

    model_dir, model = trained_looking_model_dir(tmp_path)
    titles = []
    plot = visualize.plot_embeddings
    monkeypatch.setattr(visualize, "plot_embeddings",
                        lambda *args, title, **kwargs: titles.append(title) or plot(
                            *args, title=title, **kwargs))
    assert run_cli(visualize_embeddings.main,
                   ["--model_dir", model_dir, "--data_dir", tiny_data_dir]) == 0
    # The picture says which run, epoch and data it shows.
    assert titles == ["run, epoch 1 (latest): 100 test images of data, 8 dimensions"]

    images, labels = mnist_dataset.load_split(tiny_data_dir, "test")
    folder = os.path.join(model_dir, "projector")
    config = ProjectorConfig()
    with open(os.path.join(folder, "projector_config.pbtxt")) as f:
        text_format.Parse(f.read(), config)
    [embedding] = config.embeddings
    stored = np.loadtxt(os.path.join(folder, embedding.tensor_path), delimiter="\t")
    np.testing.assert_allclose(stored, evaluation.embed_images(model, images, tiny_params()),
                               atol=1e-5)
    with open(os.path.join(folder, "metadata.tsv")) as f:
        assert f.read().splitlines() == [str(label) for label in labels]
    side = math.ceil(math.sqrt(len(images)))
    assert read_png(os.path.join(folder, "sprite.png")).shape == (side * 28, side * 28, 1)
    assert read_png(os.path.join(model_dir, "embeddings.png")).shape[:2] == (660, 1400)


def test_cli_without_checkpoint_exits_2(tmp_path, tiny_data_dir, capsys):
    model_dir = tmp_path / "untrained"
    model_dir.mkdir()
    write_json(str(model_dir / "params.json"), tiny_params().to_dict())
    status = run_cli(visualize_embeddings.main,
                     ["--model_dir", str(model_dir), "--data_dir", tiny_data_dir])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint in") and err.count("\n") == 1
    assert os.listdir(model_dir) == ["params.json"]


def test_cli_without_the_picture_libraries_exits_2_before_any_work(tmp_path, tiny_data_dir,
                                                                   capsys, monkeypatch):
    model_dir, _ = trained_looking_model_dir(tmp_path)
    before = sorted(os.listdir(model_dir))
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # what find_spec says when absent
    status = run_cli(visualize_embeddings.main,
                     ["--model_dir", model_dir, "--data_dir", tiny_data_dir])
    assert status == 2
    err = capsys.readouterr().err
    assert "needs openTSNE" in err and "pip install matplotlib openTSNE" in err and err.count("\n") == 1
    assert sorted(os.listdir(model_dir)) == before


def test_cli_help_describes_the_outputs():
    result = subprocess.run([sys.executable, "visualize_embeddings.py", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for word in ("--model_dir", "--checkpoint", "metadata.tsv", "sprite.png",
                 "projector_config.pbtxt", "embeddings.png", "t-SNE", "tensorboard --logdir"):
        assert word in result.stdout
