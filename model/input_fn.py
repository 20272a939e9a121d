"""The tf.data input pipelines (the original's ``input_fn``): train and test batches.

It holds what the TF1 project's ``input_fn.py`` did, over in-memory IDX arrays (see
:mod:`model.mnist_dataset`), plus the checks that the data suits the params and the
balanced P x K batch sampler.

Every pipeline is the same: a dataset of index batches, then one parallel ``map``
that gathers a whole batch from the in-memory arrays and scales it from uint8 to
float32 in [0, 1], then ``prefetch(AUTOTUNE)``. Only the index batches differ:

* random batches: all indices shuffled with a buffer of ``params.train_size``
  (the semantics of ``tf.data.Dataset.shuffle``), cut into batches of
  ``batch_size``; the last partial batch is kept, as in the original project.
* balanced batches (``num_classes_per_batch`` P, ``num_images_per_class`` K): each
  batch holds exactly P distinct classes with K distinct images each, see
  :func:`balanced_order`; ``N // (P * K)`` full batches per epoch.
* test batches: the first ``eval_size`` examples in file order.

Resumable determinism: the order of epoch ``e`` comes from a NumPy generator seeded
with ``(params.seed, e)`` alone, so a run resumed at epoch ``e`` with a fresh dataset
sees the same batches as an uninterrupted run, whatever TF's global seed, and
iterating a dataset twice gives the same order twice. The shuffle is done in NumPy
rather than by ``Dataset.shuffle`` because TF combines an op seed with the global
seed, which would tie the order to whatever else set it.
"""

import numpy as np
import tensorflow as tf

from model.errors import UserError


def check_data(images, labels, params):
    """Reject data the params cannot train on, before any training starts.

    Args:
        images: uint8 [N, rows, cols].
        labels: int [N].
        params: :class:`model.params.Params`.

    Raises:
        UserError: no images, image size != ``params.image_size``, images and labels
            of different lengths, or balanced batches that cannot be built (fewer
            classes present than P, or a class with fewer than K images).
    """
    check_shapes(images, labels, params)
    if not params.balanced_batches:
        return
    p, k = params.num_classes_per_batch, params.num_images_per_class
    classes, counts = np.unique(labels, return_counts=True)
    if p > len(classes):
        raise UserError(
            f"num_classes_per_batch is {p} but the data holds only {len(classes)} "
            f"classes; set num_classes_per_batch to at most {len(classes)}")
    small = classes[counts < k]
    if small.size:
        fewest = int(counts.min())
        raise UserError(
            f"num_images_per_class is {k} but {small.size} class(es) have fewer images "
            f"(class {small[0]} has {int(counts[classes == small[0]][0])}, the smallest "
            f"{fewest}); set num_images_per_class to at most {fewest} or remove those classes")


def check_shapes(images, labels, params, split="train", path=None):
    """Raise UserError unless images are [N, S, S] with S = params.image_size and one label each.

    Args:
        split: "train" or "test", named in the messages (the train split is checked first,
            so a test split of another size is told to match the train images).
        path: the images file, named in the messages when given.
    """
    size = params.image_size
    where = f"the {split} images" + (f" ({path})" if path else "")
    if images.ndim != 3 or len(images) == 0:
        raise UserError(f"{where}: expected a non-empty stack of 2-D images [N, rows, cols], "
                        f"got shape {images.shape}; check that file")
    if images.shape[1:] != (size, size):
        rows, cols = images.shape[1:]
        if split != "train":
            fix = f"resize them to {size} x {size}, the size of the train images"
        elif rows == cols:
            fix = f'set "image_size": {rows} in params.json'
        else:
            fix = "resize them to square images"
        raise UserError(f"{where} are {rows} x {cols} pixels but params.image_size is "
                        f"{size}; {fix}")
    if labels.shape != (len(images),):
        raise UserError(f"{where}: {len(images)} images but labels of shape {labels.shape}; "
                        "give one integer label per image")


def steps_per_epoch(num_examples, params):
    """Number of training batches in one epoch of ``num_examples`` examples."""
    if params.balanced_batches:
        return num_examples // params.batch_size
    return -(-num_examples // params.batch_size)


def epoch_rng(seed, epoch):
    """The NumPy generator of one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch])


def buffered_shuffle(num_examples, buffer_size, rng):
    """Indices 0..N-1 in the order ``Dataset.shuffle(buffer_size)`` would emit them.

    The buffer starts with the first ``buffer_size`` indices; each step emits a
    uniformly chosen slot and refills it with the next index; once the input is
    exhausted the buffer drains in uniformly random order. A buffer >= N gives a
    uniform permutation; a buffer of 1 keeps file order.

    Args:
        num_examples: N.
        buffer_size: shuffle buffer size (>= 1).
        rng: ``numpy.random.Generator``.

    Returns:
        int64 [N].
    """
    size = min(buffer_size, num_examples)
    buffer = list(range(size))
    order = np.empty(num_examples, np.int64)
    picks = rng.integers(0, size, num_examples - size).tolist()
    for step, slot in enumerate(picks):
        order[step] = buffer[slot]
        buffer[slot] = size + step
    order[num_examples - size:] = rng.permutation(np.array(buffer, np.int64))
    return order


def _class_stream(members, count, k, rng):
    """``count`` indices from ``members``, passing through shuffled copies of it in turn.

    Every member is used once before any is used again. Read in chunks of ``k``,
    each chunk holds distinct indices (requires ``k <= len(members)``): the chunk
    that straddles two passes gets its second part from indices the first part
    does not hold, because the leftovers of a pass are moved to the end of the next.
    """
    passes, total, leftover = [], 0, members[:0]
    while total < count:
        perm = rng.permutation(members)
        if leftover.size:
            late = np.isin(perm, leftover)
            perm = np.concatenate([perm[~late], perm[late]])
        passes.append(perm)
        total += perm.size
        leftover = perm[perm.size - total % k:] if total % k else members[:0]
    return np.concatenate(passes)[:count]


def balanced_order(labels, num_classes, num_images, rng):
    """Index batches of exactly P distinct classes x K distinct images each.

    Each batch draws its P classes uniformly without replacement among the classes
    present (so small classes are drawn as often as large ones); a class's K images
    are the next K of its :func:`_class_stream`, so within a class every image is
    used once before any repeats. A batch lists its classes in random order, each
    class's K images together.

    Args:
        labels: int [N] (every class must have >= K images, see :func:`check_data`).
        num_classes: P.
        num_images: K.
        rng: ``numpy.random.Generator``.

    Returns:
        int64 [N // (P * K), P * K] indices into ``labels``.
    """
    classes, inverse = np.unique(labels, return_inverse=True)
    num_batches = len(labels) // (num_classes * num_images)
    # argsort of i.i.d. keys: a uniformly random ordering of the classes per batch.
    chosen = np.argsort(rng.random((num_batches, len(classes))), axis=1)[:, :num_classes]
    order = np.empty((num_batches, num_classes, num_images), np.int64)
    for c in range(len(classes)):
        batches, slots = np.nonzero(chosen == c)
        if batches.size:
            stream = _class_stream(np.flatnonzero(inverse == c), batches.size * num_images,
                                   num_images, rng)
            order[batches, slots] = stream.reshape(-1, num_images)
    return order.reshape(num_batches, num_classes * num_images)


def _consecutive_batches(order, batch_size):
    """Dataset of consecutive slices of ``batch_size`` indices of ``order`` (last one partial).

    Slicing an index vector costs one op per batch, where ``from_tensor_slices(order)
    .batch()`` pays per element and was 2.5x slower.
    """
    order = tf.constant(order, tf.int64)
    return tf.data.Dataset.range(0, len(order), batch_size).map(
        lambda start: order[start:start + batch_size])


def _gather_batches(images, labels, index_batches, params):
    """Map int64 index batches to (float32 [b, S, S, 1] in [0, 1], int64 [b]) batches,
    or to the images alone when ``labels`` is None."""
    images = tf.constant(images)
    labels = None if labels is None else tf.constant(labels, tf.int64)

    def gather(indices):
        pixels = tf.cast(tf.gather(images, indices), tf.float32)[..., tf.newaxis] / 255.0
        return pixels if labels is None else (pixels, tf.gather(labels, indices))

    # params.num_parallel_calls (4 in the original files) bounds the parallel maps.
    return (index_batches
            .map(gather, num_parallel_calls=params.num_parallel_calls)
            .prefetch(tf.data.AUTOTUNE))


def train_dataset(images, labels, params, epoch):
    """The training batches of one epoch.

    Args:
        images: uint8 [N, S, S], S = ``params.image_size``.
        labels: int [N].
        params: :class:`model.params.Params`.
        epoch: int >= 0; with ``params.seed`` it alone fixes the order.

    Returns:
        ``tf.data.Dataset`` of (float32 [b, S, S, 1] in [0, 1], int64 [b]);
        ``steps_per_epoch(N, params)`` batches.

    The caller checks the data once with :func:`check_data` (the balanced sampler
    needs every class to have ``num_images_per_class`` images).
    """
    rng = epoch_rng(params.seed, epoch)
    if params.balanced_batches:
        order = balanced_order(labels, params.num_classes_per_batch,
                               params.num_images_per_class, rng)
        index_batches = tf.data.Dataset.from_tensor_slices(order)
    else:
        order = buffered_shuffle(len(labels), params.train_size, rng)
        index_batches = _consecutive_batches(order, params.batch_size)
    return _gather_batches(images, labels, index_batches, params)


def test_dataset(images, labels, params, batch_size=None):
    """The first ``params.eval_size`` examples (all if fewer) in file order.

    Args:
        images: uint8 [N, S, S].
        labels: int [N].
        params: :class:`model.params.Params`.
        batch_size: images per batch; ``params.batch_size`` if None.

    Returns:
        ``tf.data.Dataset`` of (float32 [b, S, S, 1] in [0, 1], int64 [b]), batches of
        ``batch_size`` (the last one may be smaller).
    """
    check_shapes(images, labels, params, "test")
    count = min(params.eval_size, len(labels))
    index_batches = _consecutive_batches(np.arange(count), batch_size or params.batch_size)
    return _gather_batches(images, labels, index_batches, params)


def image_batches(images, params, batch_size):
    """Every image in order, in batches of ``batch_size``, for embedding.

    Args:
        images: uint8 [N, S, S].
        params: :class:`model.params.Params`.
        batch_size: images per batch.

    Returns:
        ``tf.data.Dataset`` of float32 [b, S, S, 1] in [0, 1] (the last batch may be smaller).
    """
    return _gather_batches(images, None, _consecutive_batches(np.arange(len(images)), batch_size),
                           params)
