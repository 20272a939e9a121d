"""Decoding and resizing image files (model/images.py)."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model import images
from model.errors import UserError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


def encoded(array, fmt):
    """The bytes of ``array`` (uint8 [H, W] or [H, W, C]) saved by Pillow as ``fmt``."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def luma(rgb):
    """ITU-R 601 luma, rounded: the reference for colour-to-grey."""
    weights = np.array([0.2989, 0.5870, 0.1140])
    return np.round(rgb.astype(np.float64) @ weights).astype(np.uint8)[..., None]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF"])
def test_lossless_formats_decode_to_their_pixels_in_both_channel_counts(fmt):
    grey = RGB[..., 0]
    data = encoded(grey, fmt)
    np.testing.assert_array_equal(images.decode(data, 1).numpy(), grey[..., None])
    np.testing.assert_array_equal(images.decode(data, 3).numpy(), np.repeat(grey[..., None], 3, 2))
    if fmt != "GIF":  # GIF stores a palette of at most 256 colours
        colour = encoded(RGB, fmt)
        np.testing.assert_array_equal(images.decode(colour, 3).numpy(), RGB)
        np.testing.assert_allclose(images.decode(colour, 1).numpy(), luma(RGB), atol=1)


def test_alpha_is_dropped():
    rgba = np.concatenate([RGB, np.full(RGB.shape[:2] + (1,), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(images.decode(encoded(rgba, "PNG"), 3).numpy(), RGB)
    grey_alpha = np.stack([RGB[..., 0], RGB[..., 1]], axis=2)
    np.testing.assert_array_equal(images.decode(encoded(grey_alpha, "PNG"), 1).numpy(),
                                  RGB[..., :1])


def test_jpeg_decodes_close_to_its_pixels():
    smooth = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (12, 1))
    decoded = images.decode(encoded(np.stack([smooth] * 3, axis=2), "JPEG"), 3).numpy()
    assert np.abs(decoded.astype(int) - smooth[..., None]).max() <= 8


def test_damaged_or_foreign_data_fails():
    png = encoded(RGB, "JPEG")
    for data in (png[:len(png) // 2], b"not an image", b""):
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
            images.decode(data, 3)


def test_an_image_of_the_size_is_returned_unchanged():
    square = tf.constant(RGB[:12, :12])
    for mode in images.RESIZE_MODES:
        np.testing.assert_array_equal(images.fit(square, 12, mode).numpy(), RGB[:12, :12])


def test_pad_keeps_the_aspect_with_black_bars():
    wide = np.full((10, 40, 1), 200, np.uint8)
    out = images.fit(tf.constant(wide), 20, "pad").numpy()
    assert out.shape == (20, 20, 1)
    np.testing.assert_array_equal(out[:7], 0)
    np.testing.assert_array_equal(out[8:12], 200)
    np.testing.assert_array_equal(out[13:], 0)


def test_crop_takes_the_centred_square():
    wide = np.zeros((10, 30, 1), np.uint8)
    wide[:, 10:20] = 255  # the centred 10 x 10 square
    np.testing.assert_array_equal(images.fit(tf.constant(wide), 10, "crop").numpy(), 255)
    np.testing.assert_array_equal(images.fit(tf.constant(wide), 5, "crop").numpy(), 255)


def test_stretch_fills_the_square_and_shrinking_averages():
    checker = (np.indices((8, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None]
    out = images.fit(tf.constant(checker), 4, "stretch").numpy()
    # Area averaging of a fine checkerboard gives grey, not aliased black or white.
    np.testing.assert_allclose(out, 128, atol=1)


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encoded(RGB, "PNG"))
    out = images.load(str(path), 8, 3, "stretch").numpy()
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="pad, crop, stretch"):
        images.fit(tf.constant(RGB), 8, "fill")


def write_png(path, array):
    tf.io.write_file(str(path), tf.io.encode_png(array))
    return str(path)


def test_read_image_conversions_and_errors(tmp_path):
    gray = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    np.testing.assert_array_equal(images.read_image(write_png(tmp_path / "g.png", gray), 28), gray)
    rgba = np.concatenate([np.repeat(gray, 3, axis=2), np.full_like(gray, 7)], axis=2)
    np.testing.assert_array_equal(images.read_image(write_png(tmp_path / "c.png", rgba), 28), gray)
    # For a colour network: grey is repeated, the alpha channel dropped.
    np.testing.assert_array_equal(images.read_image(str(tmp_path / "g.png"), 28, channels=3),
                                  np.repeat(gray, 3, axis=2))
    np.testing.assert_array_equal(images.read_image(str(tmp_path / "c.png"), 28, channels=3),
                                  rgba[..., :3])
    big = np.full((56, 56, 1), 200, np.uint8)
    with pytest.raises(UserError, match="56x56, the model expects 28x28"):
        images.read_image(write_png(tmp_path / "big.png", big), 28)
    np.testing.assert_array_equal(
        images.read_image(str(tmp_path / "big.png"), 28, resize=True), np.full((28, 28, 1), 200))
    # A wide image padded (the default) keeps its aspect with black bars above and below.
    wide = np.full((28, 56, 1), 200, np.uint8)
    padded = images.read_image(write_png(tmp_path / "wide.png", wide), 28, resize=True)
    np.testing.assert_array_equal(padded[7:21], 200)
    np.testing.assert_array_equal(padded[:7], 0)
    np.testing.assert_array_equal(padded[21:], 0)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UserError, match="not a PNG"):
        images.read_image(str(tmp_path / "text.png"), 28)
    with pytest.raises(UserError, match="no such file"):
        images.read_image(str(tmp_path / "missing.png"), 28)
