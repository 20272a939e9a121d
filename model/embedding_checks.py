"""The checks of the embeddings and labels that the projector files (:mod:`model.projector`)
and the t-SNE / PCA picture (:mod:`model.visualize`) are made from: both fail on the same
bad input with the same message."""

import numpy as np


def checked_embeddings(embeddings):
    """``embeddings`` as float64 [N, D], or a ValueError saying what is wrong with them."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array [N, D], got shape "
                         f"{embeddings.shape}; pass one row per example")
    if not np.issubdtype(embeddings.dtype, np.number) or not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings must hold finite real numbers; check for NaN or Inf")
    return embeddings.astype(np.float64)


def checked_labels(labels, count):
    """``labels`` as an array of shape (count,), one per embedding, or a ValueError."""
    labels = np.asarray(labels)
    if labels.shape != (count,):
        raise ValueError(f"labels must have shape ({count},), one per row, got {labels.shape}")
    return labels
