"""SavedModel export, verification threshold and embed.py (model/export.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from model import export, training
from model.utils import UserError, load_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_force_threshold(distances, same):
    """Best accuracy of "same iff d <= t" over every candidate t (each distance and below all)."""
    candidates = np.concatenate([[distances.min() - 1], distances])
    return max(np.mean((distances <= t) == same) for t in candidates)


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    same = rng.random(60) < 0.5
    distances = np.where(same, rng.normal(1.0, 0.5, 60), rng.normal(2.0, 0.5, 60))
    threshold, accuracy = export.best_threshold(distances, same)
    assert accuracy == pytest.approx(brute_force_threshold(distances, same))
    assert np.mean((distances <= threshold) == same) == pytest.approx(accuracy)


def test_best_threshold_separable_and_hand_checked():
    threshold, accuracy = export.best_threshold(np.array([0.1, 0.2, 0.9, 1.0]),
                                                np.array([True, True, False, False]))
    assert (threshold, accuracy) == (pytest.approx(0.55), 1.0)
    threshold, accuracy = export.best_threshold(np.array([0.1, 0.2]), np.array([False, False]))
    assert accuracy == 1.0 and threshold < 0.1


def test_pair_distances_are_labelled_right():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5)
    embeddings = rng.normal(size=(20, 3)).astype(np.float32)
    distances, same = export.pair_distances(embeddings, labels, 50, rng)
    assert same.sum() == 50 and (~same).sum() == 50
    with pytest.raises(UserError, match="two classes"):
        export.pair_distances(embeddings, np.zeros(20), 5, rng)


def test_export_embeds_uint8_and_float_like_the_model(trained_run):
    model_dir, _ = trained_run
    params = load_params(model_dir)
    model = training.restore_model(model_dir, params)
    module = export.load_exported(model_dir)
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    expected = training.embed_images(model, images)
    for batch in (images, images[..., None], images / np.float32(255),
                  (images / np.float32(255))[..., None]):
        np.testing.assert_allclose(module.embed(tf.constant(batch)).numpy(), expected,
                                   rtol=1e-5, atol=1e-5)
    serving = module.signatures["serving_default"]
    output = list(serving(tf.constant(images[..., None] / np.float32(255))).values())[0]
    np.testing.assert_allclose(output.numpy(), expected, rtol=1e-5, atol=1e-5)
    verification = json.load(open(os.path.join(model_dir, export.VERIFICATION_FILE)))
    assert 0.5 <= verification["held_out_accuracy"] <= 1 and verification["threshold"] > 0


def write_png(path, array):
    tf.io.write_file(str(path), tf.io.encode_png(array))
    return str(path)


def test_read_image_conversions_and_errors(tmp_path):
    gray = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    np.testing.assert_array_equal(export.read_image(write_png(tmp_path / "g.png", gray), 28),
                                  gray[..., 0])
    rgba = np.concatenate([np.repeat(gray, 3, axis=2), np.full_like(gray, 7)], axis=2)
    np.testing.assert_array_equal(export.read_image(write_png(tmp_path / "c.png", rgba), 28),
                                  gray[..., 0])
    big = np.full((56, 56, 1), 200, np.uint8)
    with pytest.raises(UserError, match="56x56, the model expects 28x28"):
        export.read_image(write_png(tmp_path / "big.png", big), 28)
    np.testing.assert_array_equal(
        export.read_image(str(tmp_path / "big.png"), 28, resize=True), np.full((28, 28), 200))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UserError, match="not a PNG"):
        export.read_image(str(tmp_path / "text.png"), 28)
    with pytest.raises(UserError, match="no such file"):
        export.read_image(str(tmp_path / "missing.png"), 28)


def test_embed_cli_two_images(trained_run, tmp_path):
    model_dir, _ = trained_run
    rng = np.random.default_rng(2)
    paths = [write_png(tmp_path / f"{i}.png", rng.integers(0, 256, (28, 28, 1), dtype=np.uint8))
             for i in range(2)]
    result = subprocess.run([sys.executable, "embed.py", "--model_dir", model_dir, *paths],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(paths[0] + ": [") and len(lines[0].split(",")) == 8
    assert "threshold" in lines[2] and ("same" in lines[2] or "different" in lines[2])
    bad = subprocess.run([sys.executable, "embed.py", "--model_dir", model_dir,
                          str(tmp_path / "missing.png")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no such file" in bad.stderr
