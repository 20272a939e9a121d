"""Finding and restoring checkpoints from their files (model/checkpoints.py), as units.

Whole runs resuming from damaged folders are in tests/test_recovery.py.
"""

import os

import pytest
import tensorflow as tf

from model import checkpoints, run_folder
from model.errors import UserError


def saved_folder(tmp_path, values=(1.0, 2.0, 3.0)):
    """A folder of checkpoints ckpt-1.. holding ``value`` = each of ``values``, in order."""
    folder = str(tmp_path / "checkpoints")
    variable = tf.Variable(0.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(value=variable), folder,
                                         max_to_keep=None, checkpoint_name=run_folder.CHECKPOINT_PREFIX)
    for number, value in enumerate(values, 1):
        variable.assign(value)
        manager.save(checkpoint_number=number)
    return folder


def restored_value(folder, check=None):
    variable = tf.Variable(-1.0)
    prefix = checkpoints.restore(tf.train.Checkpoint(value=variable), folder, check)
    return prefix and os.path.basename(prefix), float(variable.numpy())


def test_candidates_are_found_from_the_files_newest_first(tmp_path):
    folder = saved_folder(tmp_path)
    assert [os.path.basename(p) for p in checkpoints.candidates(folder)] == [
        "ckpt-3", "ckpt-2", "ckpt-1"]
    assert run_folder.checkpoint_files(str(tmp_path / "missing")) == []
    assert checkpoints.candidates(str(tmp_path / "missing")) == []


def test_restore_takes_the_newest_even_without_the_state_file(tmp_path):
    folder = saved_folder(tmp_path)
    os.remove(os.path.join(folder, run_folder.CHECKPOINT_STATE_FILE))
    assert restored_value(folder) == ("ckpt-3", 3.0)
    assert checkpoints.value(os.path.join(folder, "ckpt-2"), "value") == 2.0
    assert checkpoints.value(os.path.join(folder, "ckpt-2"), "absent") is None
    assert checkpoints.newest_value(folder, "value") == 3.0


@pytest.mark.parametrize("damage", ["truncated data", "no index"])
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, damage, caplog):
    folder = saved_folder(tmp_path)
    newest = os.path.join(folder, "ckpt-3")
    if damage == "no index":
        os.remove(newest + ".index")
    else:
        data = next(os.path.join(folder, n) for n in os.listdir(folder)
                    if n.startswith("ckpt-3.data"))
        with open(data, "r+b") as f:
            f.truncate(2)
        assert checkpoints.damage(newest) is not None
    assert checkpoints.damage(os.path.join(folder, "ckpt-2")) is None
    assert restored_value(folder) == ("ckpt-2", 2.0)
    assert "Skipped" in caplog.text and "ckpt-3" in caplog.text
    assert checkpoints.newest_value(folder, "value") == 2.0


def test_a_folder_of_unreadable_checkpoints_is_an_error_not_a_fresh_start(tmp_path):
    folder = saved_folder(tmp_path, values=(1.0,))
    for name in os.listdir(folder):
        if name.startswith("ckpt-1.data"):
            with open(os.path.join(folder, name), "r+b") as f:
                f.truncate(1)
    with pytest.raises(UserError, match="holds checkpoint files but none of them can be read"):
        restored_value(folder)
    assert restored_value(str(tmp_path / "empty")) == (None, -1.0)


def test_the_check_sees_the_prefix_before_any_tensor_is_loaded(tmp_path):
    folder = saved_folder(tmp_path)

    def refuse(prefix):
        raise UserError(f"{os.path.basename(prefix)} is of another run")

    variable = tf.Variable(-1.0)
    with pytest.raises(UserError, match="ckpt-3 is of another run"):
        checkpoints.restore(tf.train.Checkpoint(value=variable), folder, refuse)
    assert float(variable.numpy()) == -1.0


def test_repair_state_rewrites_a_missing_or_stale_state_file(tmp_path):
    folder = saved_folder(tmp_path)
    state_file = os.path.join(folder, run_folder.CHECKPOINT_STATE_FILE)
    for broken in (None, "model_checkpoint_path: \"ckpt-9\"\nall_model_checkpoint_paths: "
                         "\"ckpt-9\"\n", "garbage {{{"):
        if broken is None:
            os.remove(state_file)
        else:
            with open(state_file, "w") as f:
                f.write(broken)
        checkpoints.repair_state(folder)
        state = tf.train.get_checkpoint_state(folder)
        assert os.path.basename(state.model_checkpoint_path) == "ckpt-3"
        assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
            "ckpt-1", "ckpt-2", "ckpt-3"]
