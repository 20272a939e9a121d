"""Whether a run's params fit in this machine's memory, estimated before anything trains.

Any params the schema accepts may still need more memory than the machine has (an
``embedding_size`` of 65,536 makes a dense layer of 200 million weights, and a batch of
4,096 mines with eleven 67 MB matrices): such a run would fail after minutes
or hours, or drive the machine into swap. The estimate below is a lower bound of the
largest items (no framework overhead), so a run it refuses cannot fit.
"""

import os

from .errors import UserError

# Copies of every weight alive while training: the weights, their gradients, Adam's two
# moments, and the float32 copy that is exported.
WEIGHT_COPIES = 5
# Activations kept per conv block for the backward pass: conv output, batch norm, ReLU
# and the pooled output, each with its gradient.
ACTIVATION_COPIES = 8
# B x B float32 matrices alive at the peak of a mining step (distances, masks, the
# batch-all terms and their gradients; measured at B = 16,384, docs/benchmarks.md).
MINING_MATRICES = 11
# Above this batch the losses mine in blocks of anchors of about BLOCK_ELEMENTS
# distances each (tftriplet.blocked's constants, repeated so that params load without
# TensorFlow; tests/test_memory.py checks that they agree), and hold at least
# MINING_BLOCKS such [block, B] float32 temporaries at the peak (measured: 176-256 MB at
# B = 16,384, docs/benchmarks.md).
BLOCKED_ABOVE = 4096
BLOCK_ELEMENTS = 2**22
MINING_BLOCKS = 10
# Copies of the evaluated embeddings: TensorFlow's, NumPy's, the metrics' normalised one
# and the verification pairs' work space.
EMBEDDING_COPIES = 4
FLOAT_BYTES = 4


def weight_count(params):
    """The number of weights of :func:`model.network.build_model`'s network."""
    count, channels_in, side = 0, params.image_channels, params.image_size
    for block in range(params.num_conv_blocks):
        channels = params.num_channels * 2 ** block
        count += 9 * channels_in * channels + channels  # 3 x 3 kernel and bias
        if params.use_batch_norm:
            count += 4 * channels  # scale, offset, moving mean and variance
        channels_in, side = channels, side // 2
    return count + (side * side * channels_in + 1) * params.embedding_size


def estimate(params, num_evaluated):
    """Bytes the largest items of a run need, by item.

    Args:
        params: a :class:`model.params.Params`.
        num_evaluated: images embedded at each evaluation (at most ``eval_size``).
    """
    activations, side = 0, params.image_size
    for block in range(params.num_conv_blocks):
        activations += params.batch_size * side * side * params.num_channels * 2 ** block
        side //= 2
    return {
        "network and optimizer": WEIGHT_COPIES * weight_count(params) * FLOAT_BYTES,
        "activations": ACTIVATION_COPIES * activations * FLOAT_BYTES,
        "triplet mining": mining_bytes(params.batch_size),
        "evaluated embeddings": EMBEDDING_COPIES * num_evaluated * params.embedding_size
                                * FLOAT_BYTES,
    }


def mining_bytes(batch_size):
    """Bytes the triplet losses hold at the peak of a step on a batch of ``batch_size``."""
    if batch_size <= BLOCKED_ABOVE:
        return MINING_MATRICES * batch_size ** 2 * FLOAT_BYTES
    return MINING_BLOCKS * max(BLOCK_ELEMENTS, batch_size) * FLOAT_BYTES


def physical_memory():
    """Bytes of memory of this machine; None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(params, num_evaluated):
    """Refuse params whose :func:`estimate` exceeds this machine's memory.

    Raises:
        UserError: naming the estimate, its largest item and what to lower.
    """
    available = physical_memory()
    parts = estimate(params, num_evaluated)
    total = sum(parts.values())
    if available is None or total <= available:
        return
    largest = max(parts, key=parts.get)
    remedy = {"network and optimizer": "embedding_size or num_channels",
              "activations": "batch_size, num_channels or image_size",
              "triplet mining": "batch_size",
              "evaluated embeddings": "eval_size or embedding_size"}[largest]
    raise UserError(
        f"these params need at least {total / 2**30:.1f} GB of memory ({largest}: "
        f"{parts[largest] / 2**30:.1f} GB) but this machine has {available / 2**30:.1f} GB; "
        f"lower {remedy}")
