"""Projector files, sprite, PCA, t-SNE figure (model/visualize.py), visualize_embeddings command."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.plugins import base_plugin, projector
from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
from werkzeug.test import Client

from model import checkpoints, evaluation, network, visualize
from model.cli import run_cli
from model.commands import visualize_embeddings
from model.files import write_json
from model.params import Params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "test_embeddings/.ATTRIBUTES/VARIABLE_VALUE"


def numbered_images(n, h, w):
    """uint8 [n, h, w]; image i is filled with i + 1 (mod 256), so no image is blank."""
    return ((np.arange(n) + 1) % 256).astype(np.uint8)[:, None, None] * np.ones((1, h, w), np.uint8)


def projector_data(n=50, d=6, h=8, w=10, seed=0):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 256, size=(n, h, w)).astype(np.uint8)
    return embeddings, labels, images


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(path)).numpy()


def serve(plugin, route, **query):
    """GET a projector plugin route the way the TensorBoard front end does."""
    response = Client(plugin.get_plugin_apps()[route]).get(route, query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data()


# --- sprite -----------------------------------------------------------------------------

@pytest.mark.parametrize("n, side", [(1, 1), (5, 3), (9, 3), (10, 4)])
def test_sprite_is_a_square_grid_in_row_order(n, side):
    h, w = 2, 3
    images = numbered_images(n, h, w)
    sprite = visualize.make_sprite(images)
    assert sprite.dtype == np.uint8 and sprite.shape == (side * h, side * w)
    for cell in range(side * side):
        row, col = divmod(cell, side)
        expected = images[cell] if cell < n else np.zeros((h, w), np.uint8)
        np.testing.assert_array_equal(sprite[row * h:(row + 1) * h, col * w:(col + 1) * w],
                                      expected)


def test_mnist_test_set_gives_a_100_by_100_sprite():
    images = numbered_images(10000, 28, 28)
    sprite = visualize.make_sprite(images)
    assert sprite.shape == (2800, 2800)
    # Image 123 sits at row 1, column 23.
    np.testing.assert_array_equal(sprite[28:56, 23 * 28:24 * 28], images[123])


@pytest.mark.parametrize("images", [
    np.zeros((4, 5, 5), np.float32),
    np.zeros((4, 5, 5, 2), np.uint8),
    np.zeros((4, 5), np.uint8),
    np.zeros((0, 5, 5), np.uint8),
])
def test_sprite_rejects_other_than_uint8_grey_or_rgb(images):
    with pytest.raises(ValueError, match=r"uint8 array \[N, height, width\] or \[N, height, "
                                         r"width, 3\]"):
        visualize.make_sprite(images)


def test_colour_sprite_keeps_the_colours_and_single_channel_is_grey():
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    sprite = visualize.make_sprite(images)
    assert sprite.shape == (3 * 4, 3 * 6, 3)
    np.testing.assert_array_equal(sprite[4:8, 6:12], images[4])
    np.testing.assert_array_equal(visualize.make_sprite(images[..., :1]),
                                  visualize.make_sprite(images[..., 0]))


def test_thumbnails_shrink_only_sprites_too_large_for_the_projector(monkeypatch):
    monkeypatch.setattr(visualize, "MAX_SPRITE_SIDE", 300)  # the real 8192 needs 67 MB
    small = np.zeros((100, 28, 28), np.uint8)  # 10 x 28 = 280 px a side: fits
    np.testing.assert_array_equal(visualize.thumbnails(small), small)
    large = np.full((100, 40, 32, 3), 90, np.uint8)  # 10 x 40 = 400 px a side
    shrunk = visualize.thumbnails(large)
    assert shrunk.shape == (100, 30, 24, 3)
    np.testing.assert_array_equal(shrunk, 90)
    assert visualize.thumbnails(np.full((100, 40, 32), 90, np.uint8)).shape == (100, 30, 24)


# --- projector files --------------------------------------------------------------------

def test_projector_files_read_back(tmp_path):
    embeddings, labels, images = projector_data()
    paths = visualize.write_projector(str(tmp_path), embeddings, labels, images)

    config = projector.ProjectorConfig()
    with open(paths["config"]) as f:
        text_format.Parse(f.read(), config)
    assert paths["config"] == str(tmp_path / "projector_config.pbtxt")
    [embedding] = config.embeddings
    assert embedding.tensor_name == KEY
    reader = tf.train.load_checkpoint(config.model_checkpoint_path)
    np.testing.assert_array_equal(reader.get_tensor(embedding.tensor_name), embeddings)

    with open(tmp_path / embedding.metadata_path) as f:
        assert f.read().splitlines() == [str(label) for label in labels]

    assert list(embedding.sprite.single_image_dim) == [10, 8]  # width, height
    sprite = read_png(str(tmp_path / embedding.sprite.image_path))
    assert sprite.shape == (8 * 8, 8 * 10, 1)  # ceil(sqrt(50)) = 8 per side
    np.testing.assert_array_equal(sprite[:, :, 0], visualize.make_sprite(images))


def test_tensorboard_projector_plugin_serves_the_files(tmp_path):
    # The worst case for finding the right checkpoint: a training checkpoint with
    # its own 2-D variables saved in the same folder just before.
    training_vars = tf.train.Checkpoint(kernel=tf.Variable(tf.ones([3, 4])))
    manager = tf.train.CheckpointManager(training_vars, str(tmp_path), max_to_keep=1)
    saved = manager.save()
    embeddings, labels, images = projector_data(n=30, d=4, h=5, w=5)
    visualize.write_projector(str(tmp_path), embeddings, labels, images)
    assert tf.train.latest_checkpoint(str(tmp_path)) == saved  # its index is untouched

    plugin = ProjectorPlugin(base_plugin.TBContext(logdir=str(tmp_path), data_provider=None))
    assert serve(plugin, "/runs") == b'["."]'
    info = serve(plugin, "/info", run=".")
    assert KEY.encode() in info and b"kernel" not in info
    tensor = np.frombuffer(serve(plugin, "/tensor", run=".", name=KEY), np.float32)
    np.testing.assert_array_equal(tensor.reshape(30, 4), embeddings)
    metadata = serve(plugin, "/metadata", run=".", name=KEY).decode()
    assert metadata.splitlines() == [str(label) for label in labels]
    sprite = serve(plugin, "/sprite_image", run=".", name=KEY)
    np.testing.assert_array_equal(tf.io.decode_png(sprite)[:, :, 0],
                                  visualize.make_sprite(images))


@pytest.mark.parametrize("change, message", [
    (dict(labels=np.zeros(49)), "labels must have shape"),
    (dict(images=np.zeros((49, 8, 10), np.uint8)), "49 images for 50 embeddings"),
    (dict(embeddings=np.full((50, 6), np.nan)), "finite"),
    (dict(tensor_name="my/embeddings"), "Python identifier"),
    (dict(labels=np.array(["a\tb"] * 50)), "tabs or newlines"),
    (dict(images=np.zeros((50, 1100, 10), np.uint8)), "at most 8192"),
])
def test_projector_rejects_bad_input(tmp_path, change, message):
    embeddings, labels, images = projector_data()
    arguments = {**dict(embeddings=embeddings, labels=labels, images=images), **change}
    with pytest.raises(ValueError, match=message):
        visualize.write_projector(str(tmp_path), **arguments)
    assert not os.listdir(tmp_path)


# --- PCA --------------------------------------------------------------------------------

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

TINY = Params().replace(batch_size=32, num_channels=4, embedding_size=8)


def trained_looking_model_dir(tmp_path):
    """A model_dir with params.json and a checkpoint of a random network, laid out like train.py."""
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    write_json(str(model_dir / "params.json"), TINY.to_dict())
    model = network.build_model(TINY)
    folder = model_dir / checkpoints.CHECKPOINT_DIRS["latest"]
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(folder), 1).save()
    return str(model_dir), model


@pytest.mark.e2e
def test_cli_writes_projector_files_and_the_picture(tmp_path, tiny_data_dir):
    from model import mnist_dataset

    model_dir, model = trained_looking_model_dir(tmp_path)
    assert run_cli(visualize_embeddings.main,
                   ["--model_dir", model_dir, "--data_dir", tiny_data_dir]) == 0

    images, labels = mnist_dataset.load_split(tiny_data_dir, "test")
    config = projector.ProjectorConfig()
    with open(os.path.join(model_dir, "projector_config.pbtxt")) as f:
        text_format.Parse(f.read(), config)
    stored = tf.train.load_checkpoint(config.model_checkpoint_path).get_tensor(KEY)
    np.testing.assert_allclose(stored, evaluation.embed_images(model, images, TINY), atol=1e-5)
    with open(os.path.join(model_dir, "metadata.tsv")) as f:
        assert f.read().splitlines() == [str(label) for label in labels]
    side = math.ceil(math.sqrt(len(images)))
    assert read_png(os.path.join(model_dir, "sprite.png")).shape == (side * 28, side * 28, 1)
    assert read_png(os.path.join(model_dir, "embeddings.png")).shape[:2] == (660, 1400)


def test_cli_without_checkpoint_exits_2(tmp_path, tiny_data_dir, capsys):
    model_dir = tmp_path / "untrained"
    model_dir.mkdir()
    write_json(str(model_dir / "params.json"), TINY.to_dict())
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
