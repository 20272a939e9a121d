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
    with pytest.raises(UserError, match=r"\(triplet mining: 0\.7 GB\).*lower batch_size"):
        memory.check_fits(tiny_params(batch_size=4096), 100)
    # Above 4,096 the losses mine in blocks: the batch's activations are what no longer fit.
    with pytest.raises(UserError, match=r"\(activations: 2\.\d GB\).*lower batch_size"):
        memory.check_fits(tiny_params(batch_size=20000), 100)
    monkeypatch.setattr(memory, "physical_memory", lambda: None)  # unknown: not refused
    memory.check_fits(tiny_params(batch_size=20000), 100)


def test_mining_memory_grows_as_b_squared_then_stays_at_the_blocks():
    from tftriplet import blocked

    # The constants the estimate repeats (params load without TensorFlow) are the library's.
    assert (memory.BLOCKED_ABOVE, memory.BLOCK_ELEMENTS) == (blocked.BLOCKED_ABOVE,
                                                             blocked.BLOCK_ELEMENTS)
    assert memory.mining_bytes(4096) == 11 * 4096**2 * 4
    assert memory.mining_bytes(4097) < memory.mining_bytes(4096) / 4
    assert memory.mining_bytes(65536) == memory.mining_bytes(16384) < 2**30
    assert memory.mining_bytes(2**24) == 10 * 2**24 * 4
