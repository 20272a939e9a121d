"""tftriplet: triplet loss with online triplet mining for TensorFlow 2 / Keras 3.

Migrating from TensorFlow Addons is one import line::

    # from tensorflow_addons.losses import TripletSemiHardLoss
    from tftriplet import TripletSemiHardLoss
    model.compile(optimizer="adam", loss=TripletSemiHardLoss())

What is here (each module imports only TensorFlow, Keras and NumPy):

* :mod:`tftriplet.losses`: Keras ``Loss`` classes and functions, TensorFlow Addons'
  (``TripletSemiHardLoss``, ``TripletHardLoss``, ``triplet_semihard_loss``,
  ``triplet_hard_loss``, ``ContrastiveLoss``, ``NpairsLoss``, ``NpairsMultilabelLoss``,
  ``LiftedStructLoss`` and their functions) and the original project's (``BatchAllTripletLoss``,
  ``BatchHardTripletLoss``), and the ``FractionPositiveTriplets`` metric. Importing
  the package registers them, so saved ``.keras`` models that use them load.
* :mod:`tftriplet.triplet_loss`: the pure loss functions ``(labels, embeddings, margin,
  squared) -> tensors`` under the names of Moindrot's blog post
  (``batch_all_triplet_loss``, ``batch_hard_triplet_loss``, ``pairwise_distances``), the
  masks, and FaceNet's ``batch_semihard_triplet_loss``.
* :mod:`tftriplet.exact_batch_all`: the exact batch-all sums in O(B^2) memory, and
  :mod:`tftriplet.blocked`: every strategy in blocks of anchors for batches above 4,096.
* :mod:`tftriplet.pair_losses`: the contrastive, N-pairs and lifted-structure losses.
* :mod:`tftriplet.distances`: pairwise distance matrices ("L2", "squared-L2", "angular").
* :mod:`tftriplet.metrics`: retrieval metrics (precision@1, R-precision, MAP@R), and
  :mod:`tftriplet.verification`: the same / different threshold calibration, both
  computed in NumPy (importing the package imports TensorFlow all the same).
* :mod:`tftriplet.inputs`: the checks of labels and embeddings every loss shares.

The training application that ships with it (``tftriplet-train`` and the other
commands) is :mod:`tftriplet_app`; the library never imports it.
"""

__version__ = "1.0.0"

try:
    import tensorflow as _tensorflow  # noqa: F401
except ModuleNotFoundError as _error:
    if _error.name != "tensorflow":
        raise
    raise ModuleNotFoundError(
        "tftriplet needs TensorFlow >= 2.16, which is not installed: pip install "
        "tensorflow-cpu (or tensorflow, or tensorflow[and-cuda] for NVIDIA GPUs on Linux), "
        "or install tftriplet with its cpu, tensorflow or gpu extra",
        name="tensorflow") from None

from tftriplet.losses import (BatchAllTripletLoss, BatchHardTripletLoss,  # noqa: E402
                              ContrastiveLoss, FractionPositiveTriplets, LiftedStructLoss,
                              NpairsLoss, NpairsMultilabelLoss, TripletHardLoss, TripletLoss,
                              TripletSemiHardLoss, contrastive_loss, lifted_struct_loss,
                              npairs_loss, npairs_multilabel_loss, triplet_hard_loss,
                              triplet_semihard_loss)
from tftriplet.metrics import retrieval_metrics  # noqa: E402
from tftriplet.triplet_loss import (batch_all_triplet_loss, batch_hard_triplet_loss,  # noqa: E402
                                    batch_semihard_triplet_loss, pairwise_distances)

__all__ = [
    "BatchAllTripletLoss", "BatchHardTripletLoss", "ContrastiveLoss",
    "FractionPositiveTriplets", "LiftedStructLoss", "NpairsLoss", "NpairsMultilabelLoss",
    "TripletHardLoss", "TripletLoss", "TripletSemiHardLoss", "batch_all_triplet_loss",
    "batch_hard_triplet_loss", "batch_semihard_triplet_loss", "contrastive_loss",
    "lifted_struct_loss", "npairs_loss", "npairs_multilabel_loss", "pairwise_distances",
    "retrieval_metrics", "triplet_hard_loss", "triplet_semihard_loss", "__version__",
]
