"""Image files to uint8 pixels of the network's size and channels (TensorFlow ops).

One decoder for everything that reads image files: the folder-dataset pipeline
(:mod:`model.pipelines`), the check of a folder's files (:mod:`model.image_folder`) and
``embed.py`` (:func:`read_image`). PNG, JPEG, GIF (first frame) and BMP are read by their content, not their
name; an alpha channel is dropped; grey becomes RGB by repeating it, RGB becomes grey by
ITU-R 601 luma (``tf.image.rgb_to_grayscale``).

Resizing keeps or drops the aspect ratio as ``params.resize`` says:

* ``pad`` (default): the whole image, scaled to fit, centred on black bars
  (``tf.image.resize_with_pad``); nothing is cut off;
* ``crop``: the largest centred square, scaled: no bars, the edges of long sides lost;
* ``stretch``: scaled to the square, the aspect ratio not kept.

Scaling is area-averaged when the image's longer side shrinks (no aliasing) and
bilinear otherwise.
"""

import os

import tensorflow as tf

from .errors import UserError
from .params import RESIZE_MODES

# What a file may be called to be taken as an image (the suffixes
# keras.utils.image_dataset_from_directory takes), compared case-insensitively.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


def decode(data, channels):
    """uint8 [H, W, channels] pixels of an encoded PNG, JPEG, GIF or BMP (a string tensor).

    Raises (when run):
        tf.errors.InvalidArgumentError: not an image of these formats, or a damaged one.
    """
    image = tf.io.decode_image(data, expand_animations=False)
    image.set_shape([None, None, None])
    found = tf.shape(image)[-1]
    # Drop an alpha channel (grey + alpha has 2 channels, RGB + alpha 4).
    image = tf.cond(tf.equal(found % 2, 0), lambda: image[..., :found - 1], lambda: image)
    if channels == 3:
        rgb = tf.cond(tf.equal(tf.shape(image)[-1], 1),
                      lambda: tf.tile(image, [1, 1, 3]), lambda: image)
        return tf.ensure_shape(rgb, [None, None, 3])
    grey = tf.cond(
        tf.equal(tf.shape(image)[-1], 3),
        lambda: tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))),
                        tf.uint8),
        lambda: image)
    return tf.ensure_shape(grey, [None, None, 1])


def fit(image, size, mode):
    """uint8 [size, size, C] from uint8 [H, W, C], resized as ``mode`` says (module docstring).

    An image already ``size`` x ``size`` is returned unchanged, bit for bit.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
    height, width = tf.shape(image)[0], tf.shape(image)[1]

    def scaled():
        pixels = tf.cast(image, tf.float32)
        if mode == "crop":
            side = tf.minimum(height, width)
            pixels = tf.image.crop_to_bounding_box(pixels, (height - side) // 2,
                                                   (width - side) // 2, side, side)
        shrinking = tf.maximum(tf.shape(pixels)[0], tf.shape(pixels)[1]) > size
        out = tf.cond(shrinking, lambda: _resize(pixels, size, mode, "area"),
                      lambda: _resize(pixels, size, mode, "bilinear"))
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    same = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
    out = tf.cond(same, lambda: image, scaled)
    return tf.ensure_shape(out, [size, size, image.shape[-1]])


def _resize(pixels, size, mode, method):
    if mode == "pad":
        return tf.image.resize_with_pad(pixels, size, size, method=method)
    return tf.image.resize(pixels, [size, size], method=method)


def load(path, size, channels, mode):
    """uint8 [size, size, channels] pixels of the image file ``path`` (a string tensor)."""
    return fit(decode(tf.io.read_file(path), channels), size, mode)


def read_image(path, image_size, resize=False, channels=1, mode="pad"):
    """Read a PNG, JPEG, GIF or BMP file as uint8 [image_size, image_size, channels].

    Colour images become grey (ITU-R 601 luma) for a grey network and grey ones RGB for
    a colour one; an alpha channel is dropped (:func:`decode`). Another size
    is an error unless ``resize``; then it is resized as ``mode`` (the run's
    ``params.resize``) says, like the class-folder images the network was trained on.
    MNIST digits are light on a dark background: invert dark-on-light images first.
    """
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not an image; pass image files (PNG, JPEG, GIF "
                        "or BMP)")
    try:
        image = decode(tf.io.read_file(path), channels)
    except tf.errors.NotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (tf.errors.InvalidArgumentError, ValueError):
        raise UserError(f"{path}: not a PNG, JPEG, GIF or BMP image") from None
    height, width = image.shape[:2]
    if (height, width) != (image_size, image_size):
        if not resize:
            raise UserError(f"{path}: image is {width}x{height}, the model expects "
                            f"{image_size}x{image_size}; resize it or pass --resize")
        image = fit(image, image_size, mode)
    return image.numpy()
