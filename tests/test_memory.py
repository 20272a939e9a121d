"""The memory estimate that refuses params a machine cannot hold (model/memory.py)."""

import pytest

from model import memory, network
from model.errors import UserError
from conftest import tiny_params


@pytest.mark.parametrize("changes", [{}, {"use_batch_norm": True, "num_conv_blocks": 3},
                                     {"image_channels": 3, "image_size": 32,
                                      "embedding_size": 5}])
def test_the_weight_count_is_the_built_networks(changes):
    params = tiny_params(**changes)
    assert memory.weight_count(params) == network.build_model(params).count_params()


def test_params_beyond_the_machine_are_refused_naming_the_largest_item(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory", lambda: 2**30)
    memory.check_fits(tiny_params(), 100)  # a few MB
    with pytest.raises(UserError, match=r"need at least \d\.\d GB of memory \(network and "
                                        r"optimizer: 3\.\d GB\) but this machine has 1\.0 GB; "
                                        r"lower embedding_size or num_channels"):
        memory.check_fits(tiny_params(num_channels=32, embedding_size=65536), 100)
    with pytest.raises(UserError, match=r"\(triplet mining: .*lower batch_size"):
        memory.check_fits(tiny_params(batch_size=20000), 100)
    monkeypatch.setattr(memory, "physical_memory", lambda: None)  # unknown: not refused
    memory.check_fits(tiny_params(batch_size=20000), 100)
