"""The tf.data input pipelines (the TF1 original's ``input_fn.py``): train and test batches.

It holds what the TF1 project's ``input_fn.py`` did, over in-memory IDX arrays (see
:mod:`model.mnist_dataset`) or streamed image files (:mod:`model.image_folder`), plus
the balanced P x K batch sampler. The data is checked first (:mod:`model.datasets`).

Every pipeline is the same: an order of indices cut into batches, then the pixels of
each batch (gathered a whole batch at a time from an in-memory array; read by NumPy
from a memory-mapped cache; or decoded file by file in ``num_parallel_calls`` parallel
calls and batched again), scaled from uint8 to float32 in [0, 1], augmented for
training (:mod:`model.augment`), then ``prefetch(AUTOTUNE)``. Only the order differs:

* random batches: all indices shuffled with a buffer of ``params.train_size``
  (the semantics of ``tf.data.Dataset.shuffle``), cut into batches of
  ``batch_size``; the last partial batch is kept, as in the original project.
* balanced batches (``num_classes_per_batch`` P, ``num_images_per_class`` K): each
  batch holds exactly P distinct classes with K distinct images each, see
  :func:`balanced_order`; ``N // (P * K)`` full batches per epoch.
* test batches: the first ``eval_size`` examples in their stored order (file order
  for IDX, a seeded shuffle for class folders).

Only the index order and the file names are held in memory for image files, so memory
does not grow with the dataset.

Resumable determinism: the order of epoch ``e`` comes from a NumPy generator seeded
with ``(params.seed, e)`` alone, so a run resumed at epoch ``e`` with a fresh dataset
sees the same batches as an uninterrupted run, whatever TF's global seed, and
iterating a dataset twice gives the same order twice. The shuffle is done in NumPy
rather than by ``Dataset.shuffle`` because TF combines an op seed with the global
seed, which would tie the order to whatever else set it.
"""

import numpy as np
import tensorflow as tf

from . import augment
from .errors import UserError
from .image_folder import ImageFiles


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
        labels: int [N] (every class must have >= K images, see :func:`model.datasets.check_data`).
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


def _pixel_batches(images, index_batches, params, batch_size):
    """Dataset of the uint8 [b, S, S, C'] images of each int64 index batch.

    In-memory arrays are gathered a whole batch per call; a memory-mapped cache is read
    by NumPy (only the rows asked for); image files are decoded one per call, in
    parallel, and batched again (the same batches: ``batch_size`` is the index batches'
    size, only the last may be smaller).
    """
    # params.num_parallel_calls (4 in the original files) bounds the parallel maps.
    parallel = params.num_parallel_calls
    if isinstance(images, ImageFiles):
        paths = tf.constant(list(images.paths), tf.string)
        return (index_batches.unbatch()
                .map(lambda index: images.load(paths[index]), num_parallel_calls=parallel)
                .batch(batch_size))
    if isinstance(images, np.memmap):
        shape = [None, *images.shape[1:]]

        def read(indices):
            pixels = tf.numpy_function(lambda rows: np.asarray(images[rows]), [indices],
                                       tf.uint8, stateful=False)
            return tf.ensure_shape(pixels, shape)

        return index_batches.map(read, num_parallel_calls=parallel)
    pixels = tf.constant(images)
    return index_batches.map(lambda indices: tf.gather(pixels, indices),
                             num_parallel_calls=parallel)


def _to_float(pixels, params):
    """uint8 [b, S, S] or [b, S, S, C] -> float32 [b, S, S, params.image_channels] in [0, 1]."""
    if pixels.shape.rank == 3:
        pixels = pixels[..., tf.newaxis]
    if pixels.shape[-1] == 1 and params.image_channels == 3:
        pixels = tf.tile(pixels, [1, 1, 1, 3])  # grey IDX data for an RGB network
    return tf.cast(pixels, tf.float32) / 255.0


def _batches(images, labels, order, params, batch_size, augment_epoch=None):
    """(float images, int64 labels) batches of consecutive ``batch_size`` slices of
    ``order`` (the images alone when ``labels`` is None), augmented with the seeds of
    ``augment_epoch`` when given and the params ask for it."""
    index_batches = _consecutive_batches(order, batch_size)
    pixels = _pixel_batches(images, index_batches, params, batch_size)
    if augment_epoch is not None and augment.enabled(params):
        pixels = pixels.enumerate().map(
            lambda index, batch: augment.augment_batch(
                _to_float(batch, params), augment.batch_seed(params.seed, augment_epoch, index),
                params),
            num_parallel_calls=params.num_parallel_calls)
    else:
        pixels = pixels.map(lambda batch: _to_float(batch, params))
    if labels is not None:
        label_batches = index_batches.map(
            lambda indices, labels=tf.constant(labels, tf.int64): tf.gather(labels, indices))
        pixels = tf.data.Dataset.zip(pixels, label_batches)
    return pixels.prefetch(tf.data.AUTOTUNE)


def train_dataset(images, labels, params, epoch):
    """The training batches of one epoch, augmented as the params say.

    Args:
        images: uint8 [N, S, S] or [N, S, S, C] (S = ``params.image_size``), or
            :class:`~model.image_folder.ImageFiles`.
        labels: int [N].
        params: :class:`model.params.Params`.
        epoch: int >= 0; with ``params.seed`` it alone fixes the order and the
            augmentation.

    Returns:
        ``tf.data.Dataset`` of (float32 [b, S, S, params.image_channels] in [0, 1],
        int64 [b]); ``steps_per_epoch(N, params)`` batches.

    The caller checks the data once with :func:`model.datasets.check_data` (the balanced sampler
    needs every class to have ``num_images_per_class`` images).
    """
    rng = epoch_rng(params.seed, epoch)
    if params.balanced_batches:
        order = balanced_order(labels, params.num_classes_per_batch,
                               params.num_images_per_class, rng).reshape(-1)
    else:
        order = buffered_shuffle(len(labels), params.train_size, rng)
    return _batches(images, labels, order, params, params.batch_size, augment_epoch=epoch)


def image_batches(images, params, batch_size):
    """Every image in order, in batches of ``batch_size``, for embedding.

    Args:
        images: as :func:`train_dataset`.
        params: :class:`model.params.Params`.
        batch_size: images per batch.

    Returns:
        ``tf.data.Dataset`` of float32 [b, S, S, C] in [0, 1] (the last batch may be smaller).
    """
    return _batches(images, None, np.arange(len(images)), params, batch_size)


def read_batches(dataset):
    """Iterate ``dataset``, turning a file that can no longer be read into a UserError.

    Every file of a class-folder dataset decoded when the run began; one deleted or made
    unreadable since then stops the run with one line naming it (the completed epochs
    are kept) instead of a tf.data traceback.
    """
    iterator = iter(dataset)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
            message = " ".join(str(getattr(err, "message", err)).split())[:300]
            raise UserError(f"an image file cannot be read or decoded any more ({message}); "
                            "restore it, or train in a new folder to scan the data "
                            "again") from None
        yield batch


# Images decoded per batch by decode_all: a few MB at 64 x 64 RGB.
_DECODE_BATCH = 256


def decode_all(images, params, out=None):
    """The uint8 pixels of every image, [N, S, S, C] (C as stored: 1 for IDX arrays).

    Image files are decoded in parallel, a batch at a time, into ``out`` (e.g. a
    memory-mapped file) or a new array; arrays come back as they are.
    """
    if not isinstance(images, ImageFiles):
        images = np.asarray(images)
        return images if images.ndim == 4 else images[..., np.newaxis]
    if out is None:
        out = np.empty(images.shape, np.uint8)
    index_batches = _consecutive_batches(np.arange(len(images)), _DECODE_BATCH)
    start = 0
    for batch in read_batches(_pixel_batches(images, index_batches, params,
                                             _DECODE_BATCH).prefetch(2)):
        out[start:start + len(batch)] = batch.numpy()
        start += len(batch)
    return out
