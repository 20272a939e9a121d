"""Collapse detection (model/collapse.py): the spread, the diagnosis, and a run built to
collapse."""

import logging
import math
import os

import numpy as np
import pytest

from model import collapse, training
from conftest import tiny_params, write_idx
from test_train import scalars


def test_spread_is_the_root_mean_square_distance_over_all_pairs():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(23, 5)).astype(np.float32) * 3 + 7
    total = 0.0
    for a in embeddings.astype(np.float64):
        for b in embeddings.astype(np.float64):
            total += sum((x - y) ** 2 for x, y in zip(a, b))
    assert collapse.spread(embeddings) == pytest.approx(math.sqrt(total / 23 ** 2), rel=1e-9)
    assert collapse.spread(np.ones((4, 3))) == 0.0  # one point: no spread


UNTRAINED = {"embedding_spread": 1.0, "map_at_r": 0.30}


@pytest.mark.parametrize("train_loss, results, soft_margin, reason", [
    (0.5, {"embedding_spread": 0.01, "map_at_r": 0.35}, False, "spread shrank"),
    (0.49, {"embedding_spread": 0.9, "map_at_r": 0.20}, False, "MAP@R fell"),
    (math.log(2), {"embedding_spread": 0.01, "map_at_r": 0.2}, True, "ln 2"),
])
def test_a_loss_pinned_at_its_collapsed_value_with_shrunk_or_worse_embeddings_is_reported(
        train_loss, results, soft_margin, reason):
    params = tiny_params(margin=0.5, soft_margin=soft_margin)
    message = collapse.diagnose(train_loss, results, UNTRAINED, params)
    assert reason in message and "l2_normalize true" in message


@pytest.mark.parametrize("train_loss, results, soft_margin", [
    (0.40, {"embedding_spread": 0.01, "map_at_r": 0.1}, False),  # the loss moved off the margin
    (0.50, {"embedding_spread": 0.9, "map_at_r": 0.4}, False),  # pinned, but learning
    (0.50, {"embedding_spread": 0.01, "map_at_r": 0.1}, True),  # soft margin: ln 2 is the mark
])
def test_a_learning_run_is_not_reported(train_loss, results, soft_margin):
    params = tiny_params(margin=0.5, soft_margin=soft_margin)
    assert collapse.diagnose(train_loss, results, UNTRAINED, params) is None


@pytest.mark.e2e
def test_a_run_built_to_collapse_says_so_once_on_the_console_and_in_tensorboard(
        tmp_path, caplog):
    # Labels independent of the images: batch-hard can only lower its loss by pulling
    # every embedding to one point, which a high learning rate does within a few epochs.
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 240), ("t10k", 100)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count))
    model_dir = str(tmp_path / "run")
    params = tiny_params(triplet_strategy="batch_hard", learning_rate=0.01, num_epochs=4)
    with caplog.at_level(logging.WARNING):
        training.train_and_evaluate(params, model_dir, str(tmp_path))
    reports = [r.getMessage() for r in caplog.records if "look collapsed" in r.getMessage()]
    assert len(reports) == 1 and "pinned at the margin 0.5" in reports[0]
    flags = scalars(os.path.join(model_dir, "eval"), "collapsed")
    assert flags[max(flags)] == 1.0
    spread = scalars(os.path.join(model_dir, "eval"), "embedding_spread")
    assert spread[max(spread)] < collapse.SPREAD_SHRINK * spread[0]
