"""Noticing a collapsed run, so that it is reported instead of trained for hours.

A triplet network collapses when it maps every image to nearly the same point: every
distance is then ~0, so every triplet's hinge ``max(d(a,p) - d(a,n) + margin, 0)`` equals
the margin (``softplus(0) = ln 2`` with the soft margin), and the mean training loss
sits there epoch after epoch while retrieval gets worse than the untrained network's.
(Schroff et al. 2015, FaceNet, section 3.2: the hardest negatives "can in practice lead
to bad local minima early on in training, specifically it can result in a collapsed
model (i.e. f(x) = 0)".)

A run is reported as collapsed when its training loss is pinned at that value *and* the
evaluated embeddings either shrank to under :data:`SPREAD_SHRINK` of their untrained
spread or retrieve worse than the untrained network (MAP@R). The loss alone is not
enough: batch-hard losses legitimately stay near the margin for a while.
"""

import math

import numpy as np

# A training loss within this fraction of the collapsed value counts as pinned there.
PINNED_TOLERANCE = 0.05
# Embeddings whose spread fell below this fraction of the untrained network's have shrunk.
SPREAD_SHRINK = 0.5

REMEDIES = ("set l2_normalize true, lower learning_rate, set use_batch_norm true or use "
            "a smaller margin")


def spread(embeddings):
    """The root mean square Euclidean distance between two embeddings of ``embeddings``
    (float [N, D]), over all N^2 ordered pairs: ``sqrt(2 * mean ||e_i - mean(e)||^2)``.
    Near 0 when the network maps every image to one point."""
    embeddings = np.asarray(embeddings, np.float64)
    centred = embeddings - embeddings.mean(axis=0)
    return float(np.sqrt(2.0 * np.mean(np.sum(centred ** 2, axis=1))))


def collapsed_loss(params):
    """The training loss of a network that maps every image to one point."""
    return math.log(2.0) if params.soft_margin else params.margin


def diagnose(train_loss, results, untrained, params):
    """Why the run looks collapsed, as one sentence; None when it does not.

    Args:
        train_loss: the epoch's mean training loss.
        results: the epoch's eval results (``embedding_spread``, ``map_at_r``).
        untrained: the untrained network's eval results on the same split (an empty dict
            when unknown: then only the loss and the spread's absolute size are judged).
        params: the run's :class:`model.params.Params`.
    """
    pinned = collapsed_loss(params)
    if pinned == 0 or abs(train_loss - pinned) > PINNED_TOLERANCE * pinned:
        return None
    evidence = []
    spread_now, spread_before = results.get("embedding_spread"), untrained.get(
        "embedding_spread")
    if spread_now is not None and spread_before and spread_now < SPREAD_SHRINK * spread_before:
        evidence.append(f"the embeddings' spread shrank from {spread_before:.4g} to "
                        f"{spread_now:.4g}")
    map_now, map_before = results.get("map_at_r"), untrained.get("map_at_r")
    if map_now is not None and map_before is not None and map_now < map_before:
        evidence.append(f"MAP@R fell below the untrained network's ({map_now:.4f} < "
                        f"{map_before:.4f})")
    if not evidence:
        return None
    what = "ln 2 (soft margin)" if params.soft_margin else f"the margin {params.margin}"
    return (f"the embeddings look collapsed: the training loss {train_loss:.4f} is pinned "
            f"at {what} and {' and '.join(evidence)}; {REMEDIES}")
