"""Random augmentation of training batches, with stateless random ops seeded per batch.

Every random number comes from ``tf.random.stateless_*`` with a seed folded from
``(params.seed, epoch, batch index)``: an epoch's augmented batches are the same whether
it runs in one go or is resumed in a new process, so deterministic resume holds with
augmentation on. Each image of a batch gets its own draws. Off by default, as in the
original project (:func:`enabled`).

On float32 images in [0, 1], in this order:

* ``augment_crop`` c < 1: a square of side uniform in [c, 1] x the image side, at a
  uniform position, resized back to the image size (bilinear);
* ``augment_translate`` t > 0 pixels: a shift by integers (dy, dx) uniform in [-t, t],
  the uncovered border black (the classic MNIST augmentation);
* ``augment_flip``: mirrored left-right with probability 1/2 (for data whose classes do
  not depend on handedness: not digits);
* ``augment_brightness`` b > 0: a delta uniform in [-b, b] added to every pixel;
* ``augment_contrast`` c > 0: the deviation from the image's mean scaled by a factor
  uniform in [1 - c, 1 + c];

then clipped to [0, 1]. Crop and translation are one ``tf.image.crop_and_resize`` (a
box per image); without them the images are not resampled.
"""

import tensorflow as tf

# Columns of the per-image uniform draws.
_SIDE, _TOP, _LEFT, _DY, _DX, _FLIP, _BRIGHTNESS, _CONTRAST = range(8)


def enabled(params):
    """Whether ``params`` asks for any augmentation."""
    return bool(params.augment_translate or params.augment_crop < 1 or params.augment_flip
                or params.augment_brightness or params.augment_contrast)


def batch_seed(seed, epoch, index):
    """The int64 [2] stateless seed of batch ``index`` of ``epoch``."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def augment_batch(images, seed, params):
    """Augment float32 images [b, S, S, C] in [0, 1] as ``params`` says (module docstring).

    Args:
        images: float32 [b, S, S, C].
        seed: int64 [2], e.g. from :func:`batch_seed`.
        params: :class:`model.params.Params`.

    Returns:
        float32 [b, S, S, C] in [0, 1].
    """
    count = tf.shape(images)[0]
    size = images.shape[1]
    draws = tf.random.stateless_uniform([count, 8], seed=seed)
    if params.augment_crop < 1 or params.augment_translate:
        span = float(max(size - 1, 1))  # crop_and_resize's unit: the image spans [0, 1]
        side = params.augment_crop + (1.0 - params.augment_crop) * draws[:, _SIDE]
        top, left = draws[:, _TOP] * (1.0 - side), draws[:, _LEFT] * (1.0 - side)
        reach = params.augment_translate
        shift_y, shift_x = (
            (tf.floor(draws[:, column] * (2 * reach + 1)) - reach) / span
            for column in (_DY, _DX))
        boxes = tf.stack([top + shift_y, left + shift_x, top + shift_y + side,
                          left + shift_x + side], axis=1)
        images = tf.image.crop_and_resize(images, boxes, tf.range(count), [size, size],
                                          extrapolation_value=0.0)
    per_image = [-1, 1, 1, 1]
    if params.augment_flip:
        flip = tf.reshape(draws[:, _FLIP] < 0.5, per_image)
        images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    if params.augment_brightness:
        delta = (2.0 * draws[:, _BRIGHTNESS] - 1.0) * params.augment_brightness
        images = images + tf.reshape(delta, per_image)
    if params.augment_contrast:
        factor = 1.0 + (2.0 * draws[:, _CONTRAST] - 1.0) * params.augment_contrast
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * tf.reshape(factor, per_image) + mean
    return tf.clip_by_value(images, 0.0, 1.0)
