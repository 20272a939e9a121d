"""Input pipelines: batch contents, scaling, shuffling, balanced P x K batches, determinism."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from model import datasets, pipelines
from model.errors import UserError
from model.params import Params

SIZE = 6


def make_data(class_sizes, seed=0):
    """Images whose first two pixels encode their index; labels grouped then shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(class_sizes)), class_sizes))
    count = len(labels)
    images = rng.integers(0, 256, (count, SIZE, SIZE), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count) % 256
    images[:, 0, 1] = np.arange(count) // 256
    images[0, 1, :] = [0, 255, 0, 255, 0, 255]
    return images, labels.astype(np.int64)


def indices_of(batch_images):
    pixels = np.rint(batch_images.numpy()[:, 0, :2, 0] * 255).astype(np.int64)
    return pixels[:, 0] + 256 * pixels[:, 1]


def epoch_indices(dataset, images, labels):
    """Per batch, the example indices; checks every batch's pixels and labels on the way."""
    batches = []
    for batch_images, batch_labels in dataset:
        idx = indices_of(batch_images)
        expected = images[idx].astype(np.float32)[..., None] / np.float32(255)
        np.testing.assert_allclose(batch_images.numpy(), expected, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(batch_labels.numpy(), labels[idx])
        batches.append(idx)
    return batches


def params(**changes):
    return Params().replace(image_size=SIZE, **changes)


def test_scaling_shapes_and_types():
    images, labels = make_data([30, 30])
    dataset = pipelines.train_dataset(images, labels, params(batch_size=8), epoch=0)
    assert dataset.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 1]
    assert dataset.element_spec[0].dtype == tf.float32
    assert dataset.element_spec[1].dtype == tf.int64
    values = np.concatenate([batch.numpy() for batch, _ in dataset])
    assert values.min() == 0.0 and values.max() == 1.0
    exact = np.concatenate(list(pipelines.image_batches(images, params(), 16)))
    # First image row 1 holds 0 and 255: exactly 0.0 and 1.0 after scaling.
    np.testing.assert_array_equal(exact[0, 1, :, 0], [0, 1, 0, 1, 0, 1])


def test_random_epoch_covers_every_example_once_and_keeps_last_partial_batch():
    images, labels = make_data([23, 17, 10])
    p = params(batch_size=16, train_size=50)
    batches = epoch_indices(pipelines.train_dataset(images, labels, p, 0), images, labels)
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert len(batches) == pipelines.steps_per_epoch(len(labels), p)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(labels)))
    assert order.tolist() != list(range(len(labels)))


def test_shuffle_buffer_semantics():
    count = 200
    for buffer in (1, 7, 50, 200, 1000):
        for seed in range(5):
            order = pipelines.buffered_shuffle(count, buffer, np.random.default_rng(seed))
            assert sorted(order.tolist()) == list(range(count))
            # The i-th output must already have entered the buffer of the first buffer + i.
            assert np.all(order < buffer + np.arange(count))
            if buffer == 1:
                assert order.tolist() == list(range(count))
    # With a small buffer the first outputs are each drawn from the buffer's contents
    # uniformly: over many seeds every one of the first 7 indices comes first.
    firsts = {int(pipelines.buffered_shuffle(count, 7, np.random.default_rng(s))[0])
              for s in range(100)}
    assert firsts == set(range(7))


def test_train_size_is_the_shuffle_buffer():
    images, labels = make_data([40, 40])
    p = params(batch_size=10, train_size=1)
    order = np.concatenate(epoch_indices(pipelines.train_dataset(images, labels, p, 3),
                                         images, labels))
    assert order.tolist() == list(range(80))


@pytest.mark.parametrize("balanced", [False, True])
def test_order_depends_only_on_seed_and_epoch(balanced):
    images, labels = make_data([20, 25, 30, 15])
    extra = dict(num_classes_per_batch=2, num_images_per_class=5) if balanced else {}
    p = params(batch_size=10, train_size=100, **extra)

    def order(params_, epoch):
        return np.concatenate(epoch_indices(
            pipelines.train_dataset(images, labels, params_, epoch), images, labels)).tolist()

    first = pipelines.train_dataset(images, labels, p, 2)
    twice = [np.concatenate(epoch_indices(first, images, labels)).tolist() for _ in range(2)]
    assert twice[0] == twice[1]
    # A run resumed at epoch 2 builds a fresh dataset after other epochs and global seeds.
    order(p, 0)
    order(p, 1)
    tf.random.set_seed(12345)
    assert order(p, 2) == twice[0]
    epochs = [order(p, e) for e in range(4)]
    assert len({tuple(o) for o in epochs}) == 4
    assert order(p.replace(seed=231), 2) != twice[0]


def test_balanced_batches():
    # Class 3 has K + 1 images: almost every K-chunk of it straddles two passes.
    class_sizes = [30, 12, 40, 6, 25, 9, 18]
    images, labels = make_data(class_sizes, seed=1)
    num_classes, num_images = 3, 5
    p = params(batch_size=15, num_classes_per_batch=num_classes,
               num_images_per_class=num_images)
    class_slots = collections.Counter()
    for epoch in range(6):
        dataset = pipelines.train_dataset(images, labels, p, epoch)
        batches = epoch_indices(dataset, images, labels)
        assert len(batches) == len(labels) // 15 == pipelines.steps_per_epoch(len(labels), p)
        per_class_uses = collections.defaultdict(list)
        for idx in batches:
            assert len(idx) == 15 and len(set(idx.tolist())) == 15
            counts = collections.Counter(labels[idx].tolist())
            assert len(counts) == num_classes
            assert set(counts.values()) == {num_images}
            for i in idx:
                per_class_uses[int(labels[i])].append(int(i))
            class_slots.update(counts.keys())
        # Within a class every image is used once before any image is used again.
        for c, uses in per_class_uses.items():
            members = np.flatnonzero(labels == c).tolist()
            for start in range(0, len(uses), len(members)):
                window = uses[start:start + len(members)]
                assert len(set(window)) == len(window)
                assert set(window) <= set(members)
    # Classes are drawn uniformly whatever their size: 6 epochs x 10 batches x 3
    # slots over 7 classes is about 26 draws each.
    assert len(class_slots) == len(class_sizes)
    assert all(12 <= n <= 40 for n in class_slots.values()), class_slots


def test_balanced_order_with_k_equal_class_size():
    labels = np.repeat(np.arange(4), 3)
    order = pipelines.balanced_order(labels, 4, 3, np.random.default_rng(0))
    assert order.shape == (1, 12)
    assert sorted(order[0].tolist()) == list(range(12))


def test_image_batches_keep_file_order_and_the_last_partial_batch():
    images, labels = make_data([60, 60])
    for count, sizes in ((50, [16, 16, 16, 2]), (120, [16] * 7 + [8])):
        dataset = pipelines.image_batches(images[:count], params(), 16)
        batches = [indices_of(batch) for batch in dataset]
        assert [len(b) for b in batches] == sizes
        assert np.concatenate(batches).tolist() == list(range(sum(sizes)))


@pytest.mark.parametrize("shape, label_count, changes, match", [
    ((10, 28, 28), 10, {}, r"images are 28 x 28 pixels but params.image_size is 6; "
                          r'set "image_size": 28'),
    ((10, 6, 5), 10, {}, r"6 x 5 pixels .* resize them to square"),
    ((10, 36), 10, {}, r"stack of 2-D images"),
    ((0, 6, 6), 0, {}, r"non-empty"),
    ((10, 6, 6), 9, {}, r"10 images but labels of shape \(9,\)"),
])
def test_check_data_shapes(shape, label_count, changes, match):
    images = np.zeros(shape, np.uint8)
    labels = np.arange(label_count) % 2
    with pytest.raises(UserError, match=match) as info:
        datasets.check_data(images, labels, params(**changes))
    assert "\n" not in str(info.value)
    # The test split is named, and told to match the train images (checked first).
    with pytest.raises(UserError, match="^the test images") as info:
        datasets.check_shapes(images, labels, params(**changes), "test")
    if "image_size is 6" in match:
        assert str(info.value).endswith("resize them to 6 x 6, the size of the train images")


def test_check_data_balanced_impossibilities():
    images, labels = make_data([10, 10, 3, 10])
    too_many = params(batch_size=10, num_classes_per_batch=5, num_images_per_class=2)
    with pytest.raises(UserError, match=r"num_classes_per_batch is 5 but the data holds "
                                        r"only 4 classes; set num_classes_per_batch to at most 4"):
        datasets.check_data(images, labels, too_many)
    too_few = params(batch_size=8, num_classes_per_batch=2, num_images_per_class=4)
    with pytest.raises(UserError, match=r"1 class\(es\) have fewer images \(class 2 has 3, "
                                        r"the smallest 3\); set num_images_per_class to at most 3"):
        datasets.check_data(images, labels, too_few)
    datasets.check_data(images, labels, too_few.replace(num_images_per_class=3, batch_size=6))
    # Without balanced batches the small class is fine.
    datasets.check_data(images, labels, params())


def test_steps_per_epoch():
    assert pipelines.steps_per_epoch(60000, Params()) == 938
    assert pipelines.steps_per_epoch(64, Params()) == 1
    balanced = Params().replace(num_classes_per_batch=8, num_images_per_class=8)
    assert pipelines.steps_per_epoch(60000, balanced) == 937


def test_image_batches_hold_every_image_in_order():
    images, labels = make_data([12, 12])
    batches = list(pipelines.image_batches(images, params(eval_size=7), 5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 4]
    np.testing.assert_array_equal(np.concatenate(batches)[..., 0],
                                  images.astype(np.float32) / 255)


def as_png_files(images, folder):
    """Each uint8 [S, S] image saved losslessly as folder/i.png; their ImageFiles."""
    from model.image_folder import ImageFiles

    paths = []
    for i, image in enumerate(images):
        path = str(folder / f"{i}.png")
        tf.io.write_file(path, tf.io.encode_png(image[..., None]))
        paths.append(path)
    return ImageFiles(paths, SIZE, 1, "pad")


@pytest.mark.parametrize("balanced", [False, True])
def test_image_files_give_the_batches_of_the_array(tmp_path, balanced):
    images, labels = make_data([12, 9, 11])
    files = as_png_files(images, tmp_path)
    changes = dict(num_classes_per_batch=3, num_images_per_class=3, batch_size=9) if balanced \
        else dict(batch_size=7, train_size=10)
    p = params(**changes)
    for epoch in (0, 1):
        from_files = epoch_indices(pipelines.train_dataset(files, labels, p, epoch), images, labels)
        from_array = epoch_indices(pipelines.train_dataset(images, labels, p, epoch), images,
                                   labels)
        assert [b.tolist() for b in from_files] == [b.tolist() for b in from_array]
    np.testing.assert_array_equal(pipelines.decode_all(files, p)[..., 0], images)
    embedded = np.concatenate([b.numpy() for b in pipelines.image_batches(files, p, 5)])
    np.testing.assert_array_equal(embedded[..., 0], images / np.float32(255))


def test_a_memory_mapped_cache_gives_the_batches_of_the_array(tmp_path):
    images, labels = make_data([12, 9, 11])
    path = str(tmp_path / "cache.npy")
    np.save(path, images[..., None])
    mapped = np.load(path, mmap_mode="r")
    p = params(batch_size=7)
    from_cache = epoch_indices(pipelines.train_dataset(mapped, labels, p, 0), images, labels)
    from_array = epoch_indices(pipelines.train_dataset(images, labels, p, 0), images, labels)
    assert [b.tolist() for b in from_cache] == [b.tolist() for b in from_array]


def test_grey_data_for_a_colour_network_is_repeated_over_three_channels():
    images, labels = make_data([10, 10])
    p = params(image_channels=3, batch_size=5)
    batch = next(iter(pipelines.image_batches(images, p, 5)))
    assert batch.shape == (5, SIZE, SIZE, 3)
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
    np.testing.assert_allclose(batch[..., 1], images[:5] / np.float32(255))


def test_augmentation_changes_only_training_batches_and_is_seeded_by_epoch():
    images, labels = make_data([20, 20])
    p = params(batch_size=8, augment_translate=1, augment_brightness=0.1)
    first = [b.numpy() for b, _ in pipelines.train_dataset(images, labels, p, 0)]
    again = [b.numpy() for b, _ in pipelines.train_dataset(images, labels, p, 0)]
    plain = [b.numpy() for b, _ in pipelines.train_dataset(images, labels,
                                                          params(batch_size=8), 0)]
    for a, b, c in zip(first, again, plain):
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)
    tested = np.concatenate([b.numpy() for b in pipelines.image_batches(images, p, 8)])
    np.testing.assert_array_equal(tested[..., 0], images / np.float32(255))


def test_image_files_need_at_least_one_file():
    from model.image_folder import ImageFiles

    with pytest.raises(UserError, match="no image files"):
        datasets.check_shapes(ImageFiles([], SIZE, 1, "pad"), np.zeros(0, np.int64), params())


def test_a_file_gone_since_the_scan_is_a_one_line_error_naming_it(tmp_path):
    images, labels = make_data([6, 6])
    files = as_png_files(images, tmp_path)
    os.remove(files.paths[4])
    with pytest.raises(UserError, match=r"cannot be read or decoded any more \(.*4\.png") as info:
        list(pipelines.read_batches(pipelines.train_dataset(files, labels, params(batch_size=4), 0)))
    assert "\n" not in str(info.value)


def test_the_augmentation_of_an_epoch_is_seeded_by_that_epoch(monkeypatch):
    from model import augment

    seen = []
    real_seed = augment.batch_seed

    def recording(seed, epoch, index):
        seen.append((seed, epoch))
        return real_seed(seed, epoch, index)

    monkeypatch.setattr(augment, "batch_seed", recording)
    images, labels = make_data([10, 10])
    p = params(batch_size=8, augment_translate=1, seed=5)
    for epoch in (0, 3):
        list(pipelines.train_dataset(images, labels, p, epoch))
    assert {(5, 0), (5, 3)} <= set(seen) and {epoch for _, epoch in seen} == {0, 3}
