"""Seeded augmentation of training batches (model/augment.py)."""

import numpy as np
import pytest
import tensorflow as tf

from model import augment
from model.params import Params

SIZE = 12


def params(**changes):
    return Params().replace(image_size=SIZE, **changes)


def batch(count=16, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.random((count, SIZE, SIZE, channels)), tf.float32)


def shifted(image, dy, dx):
    """``image`` [S, S, C] moved down by dy and right by dx, the border black."""
    out = np.zeros_like(image)
    src = image[max(-dy, 0):SIZE - max(dy, 0), max(-dx, 0):SIZE - max(dx, 0)]
    out[max(dy, 0):max(dy, 0) + src.shape[0], max(dx, 0):max(dx, 0) + src.shape[1]] = src
    return out


SEED = augment.batch_seed(7, 3, 5)


def test_off_by_default():
    assert not augment.enabled(Params())
    for key, value in (("augment_translate", 1), ("augment_crop", 0.9), ("augment_flip", True),
                       ("augment_brightness", 0.1), ("augment_contrast", 0.1)):
        assert augment.enabled(params(**{key: value}))


def test_translation_is_an_integer_shift_within_reach():
    images = batch()
    out = augment.augment_batch(images, SEED, params(augment_translate=2)).numpy()
    found = set()
    for image, result in zip(images.numpy(), out):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.allclose(result, shifted(image, dy, dx), atol=1e-5)]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) > 4  # each image draws its own shift


def test_flip_mirrors_about_half_of_the_images():
    images = batch(64, channels=3)
    out = augment.augment_batch(images, SEED, params(augment_flip=True)).numpy()
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images.numpy())]
    kept = [np.array_equal(o, i) for o, i in zip(out, images.numpy())]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_brightness_adds_one_delta_per_image():
    images = tf.fill([32, SIZE, SIZE, 3], 0.5)
    out = augment.augment_batch(images, SEED, params(augment_brightness=0.2)).numpy()
    deltas = out - 0.5
    np.testing.assert_allclose(deltas, deltas[:, :1, :1, :1] + 0 * deltas, atol=1e-6)
    assert np.abs(deltas).max() <= 0.2 + 1e-6 and np.ptp(deltas[:, 0, 0, 0]) > 0.1


def test_contrast_scales_the_deviation_from_the_mean():
    images = 0.4 + 0.2 * batch(32)
    out = augment.augment_batch(images, SEED, params(augment_contrast=0.5)).numpy()
    deviation = images.numpy() - images.numpy().mean(axis=(1, 2, 3), keepdims=True)
    factors = (out - images.numpy().mean(axis=(1, 2, 3), keepdims=True)) / deviation
    per_image = np.median(factors.reshape(32, -1), axis=1)
    np.testing.assert_allclose(factors, per_image[:, None, None, None] + 0 * factors, atol=1e-3)
    assert per_image.min() >= 0.5 - 1e-4 and per_image.max() <= 1.5 + 1e-4


def test_crop_zooms_in_and_keeps_a_constant_image_constant():
    constant = tf.fill([8, SIZE, SIZE, 1], 0.25)
    out = augment.augment_batch(constant, SEED, params(augment_crop=0.5)).numpy()
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    # A horizontal ramp keeps its direction and spans at most the whole range, at least half.
    ramp = tf.tile(tf.reshape(tf.linspace(0.0, 1.0, SIZE), [1, 1, SIZE, 1]), [8, SIZE, 1, 1])
    zoomed = augment.augment_batch(ramp, SEED, params(augment_crop=0.5)).numpy()
    spans = zoomed[:, 0, -1, 0] - zoomed[:, 0, 0, 0]
    assert np.all(spans >= 0.5 - 1e-5) and np.all(spans <= 1 + 1e-5) and spans.min() < 0.95


def test_everything_at_once_stays_in_range_and_is_seeded():
    all_on = params(augment_translate=3, augment_crop=0.7, augment_flip=True,
                    augment_brightness=0.3, augment_contrast=0.3)
    images = batch(channels=3)
    first = augment.augment_batch(images, SEED, all_on).numpy()
    assert first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, augment.augment_batch(images, SEED, all_on).numpy())
    for other in (augment.batch_seed(7, 3, 6), augment.batch_seed(7, 4, 5),
                  augment.batch_seed(8, 3, 5)):
        assert not np.allclose(first, augment.augment_batch(images, other, all_on).numpy())


@pytest.mark.parametrize("size", [1, 2])
def test_tiny_images(size):
    images = tf.fill([3, size, size, 1], 0.5)
    p = Params().replace(image_size=max(size, 4), num_conv_blocks=1)
    out = augment.augment_batch(images, SEED, p.replace(augment_crop=0.5, augment_flip=True))
    assert out.shape == (3, size, size, 1)
    assert np.all(np.isfinite(out.numpy()))
