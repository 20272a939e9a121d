"""TensorBoard projector files and the sprite of thumbnails (model/projector.py)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.plugins.projector import ProjectorConfig
from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
from werkzeug.test import Client

from conftest import as_tensorboard_serves_it
from model import projector

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
    sprite = projector.make_sprite(images)
    assert sprite.dtype == np.uint8 and sprite.shape == (side * h, side * w)
    for cell in range(side * side):
        row, col = divmod(cell, side)
        expected = images[cell] if cell < n else np.zeros((h, w), np.uint8)
        np.testing.assert_array_equal(sprite[row * h:(row + 1) * h, col * w:(col + 1) * w],
                                      expected)


def test_mnist_test_set_gives_a_100_by_100_sprite():
    images = numbered_images(10000, 28, 28)
    sprite = projector.make_sprite(images)
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
        projector.make_sprite(images)


def test_colour_sprite_keeps_the_colours_and_single_channel_is_grey():
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    sprite = projector.make_sprite(images)
    assert sprite.shape == (3 * 4, 3 * 6, 3)
    np.testing.assert_array_equal(sprite[4:8, 6:12], images[4])
    np.testing.assert_array_equal(projector.make_sprite(images[..., :1]),
                                  projector.make_sprite(images[..., 0]))


def test_thumbnails_shrink_only_sprites_too_large_for_the_projector(monkeypatch):
    monkeypatch.setattr(projector, "MAX_SPRITE_SIDE", 300)  # the real 8192 needs 67 MB
    small = np.zeros((100, 28, 28), np.uint8)  # 10 x 28 = 280 px a side: fits
    np.testing.assert_array_equal(projector.thumbnails(small), small)
    large = np.full((100, 40, 32, 3), 90, np.uint8)  # 10 x 40 = 400 px a side
    shrunk = projector.thumbnails(large)
    assert shrunk.shape == (100, 30, 24, 3)
    np.testing.assert_array_equal(shrunk, 90)
    assert projector.thumbnails(np.full((100, 40, 32), 90, np.uint8)).shape == (100, 30, 24)


# --- projector files --------------------------------------------------------------------

def test_projector_files_read_back(tmp_path):
    embeddings, labels, images = projector_data()
    paths = projector.write_projector(str(tmp_path), embeddings, labels, images)

    config = ProjectorConfig()
    with open(paths["config"]) as f:
        text_format.Parse(f.read(), config)
    assert paths["config"] == str(tmp_path / "projector_config.pbtxt")
    [embedding] = config.embeddings
    assert embedding.tensor_name == "embeddings" and not config.model_checkpoint_path
    # Paths relative to the config: the folder can move.
    assert not any(os.path.isabs(path) for path in (
        embedding.tensor_path, embedding.metadata_path, embedding.sprite.image_path))
    stored = np.loadtxt(tmp_path / embedding.tensor_path, delimiter="\t", dtype=np.float32)
    np.testing.assert_array_equal(stored, embeddings)  # float32, exactly
    assert list(embedding.tensor_shape) == [50, 6]

    with open(tmp_path / embedding.metadata_path) as f:
        assert f.read().splitlines() == [str(label) for label in labels]

    assert list(embedding.sprite.single_image_dim) == [10, 8]  # width, height
    sprite = read_png(str(tmp_path / embedding.sprite.image_path))
    assert sprite.shape == (8 * 8, 8 * 10, 1)  # ceil(sqrt(50)) = 8 per side
    np.testing.assert_array_equal(sprite[:, :, 0], projector.make_sprite(images))
    # One event file, kept when the projector is written again.
    events = sorted(p for p in os.listdir(tmp_path) if p.startswith("events.out.tfevents."))
    projector.write_projector(str(tmp_path), embeddings, labels, images)
    assert len(events) == 1 and sorted(
        p for p in os.listdir(tmp_path) if p.startswith("events.out.tfevents.")) == events


def test_tensorboard_shows_the_projector_from_the_run_its_parent_and_after_a_move(tmp_path):
    embeddings, labels, images = projector_data(n=30, d=4, h=5, w=5)
    run = tmp_path / "search" / "margin_0.2"
    # A training checkpoint and event files beside it, as in a run folder.
    tf.train.CheckpointManager(tf.train.Checkpoint(kernel=tf.Variable(tf.ones([3, 4]))),
                               str(run / "checkpoints"), max_to_keep=1).save()
    writer = tf.summary.create_file_writer(str(run / "eval"))
    with writer.as_default():
        tf.summary.scalar("map_at_r", 0.5, step=1)
    writer.close()
    projector.write_projector(str(run / "projector"), embeddings, labels, images)
    moved = tmp_path / "elsewhere"
    for logdir, name in ((run, "projector"), (tmp_path / "search", "margin_0.2/projector"),
                         (moved, "projector")):
        if logdir == moved:
            os.rename(run, moved)
        plugin = as_tensorboard_serves_it(ProjectorPlugin, logdir)
        assert name in json.loads(serve(plugin, "/runs"))
        info = json.loads(serve(plugin, "/info", run=name))
        assert [e["tensorName"] for e in info["embeddings"]] == ["embeddings"]
        tensor = np.frombuffer(serve(plugin, "/tensor", run=name, name="embeddings"),
                               np.float32)
        np.testing.assert_array_equal(tensor.reshape(30, 4), embeddings)
        metadata = serve(plugin, "/metadata", run=name, name="embeddings").decode()
        assert metadata.splitlines() == [str(label) for label in labels]
        sprite = serve(plugin, "/sprite_image", run=name, name="embeddings")
        np.testing.assert_array_equal(tf.io.decode_png(sprite)[:, :, 0],
                                      projector.make_sprite(images))


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
        projector.write_projector(str(tmp_path), **arguments)
    assert not os.listdir(tmp_path)
