"""What a run checkpoints and where it resumes from (model/state.py)."""

import json
import os
import shutil

import pytest
import tensorflow as tf

from model import run_folder, state
from model.errors import UserError
from model.params import RESOLVED_PARAMS_FILENAME
from conftest import tiny_params


def saved_run(model_dir, params, epochs=(1,), kinds=("latest",)):
    """A Run of ``params`` in ``model_dir`` saved at each of ``epochs`` into ``kinds``."""
    run = state.Run(params, str(model_dir), steps_per_epoch=8)
    for epoch in epochs:
        run.epoch.assign(epoch)
        for kind in kinds:
            run.save(kind)
    return run


def test_other_params_are_refused_naming_every_change_before_anything_is_restored(tmp_path):
    params = tiny_params(margin=0.2)
    saved_run(tmp_path, params)
    changed = params.replace(margin=0.3, learning_rate=0.01, num_epochs=9)
    with pytest.raises(UserError, match=r"other params \(learning_rate: 0.001 -> 0.01, "
                                        r"margin: 0.2 -> 0.3\)"):
        state.resume_point(changed, str(tmp_path))
    # num_epochs (and the other RESUMABLE_CHANGES) may change.
    assert state.resume_point(params.replace(num_epochs=9, keep_checkpoint_max=2),
                              str(tmp_path)).endswith("ckpt-1")


@pytest.mark.parametrize("record", ["{not json", '{"versions": {}}',
                                    json.dumps({"params": {"margin": 9.0}})])
def test_the_checkpoint_not_the_resolved_params_record_decides(tmp_path, record):
    params = tiny_params()
    saved_run(tmp_path, params)
    (tmp_path / RESOLVED_PARAMS_FILENAME).write_text(record)
    assert state.resume_point(params, str(tmp_path)).endswith("ckpt-1")


def test_a_checkpoint_without_its_params_is_checked_against_the_record(tmp_path):
    params = tiny_params()
    # Checkpoints saved before they carried their params.
    tf.train.Checkpoint(step=tf.Variable(1)).write(str(tmp_path / "checkpoints" / "ckpt-1"))
    (tmp_path / RESOLVED_PARAMS_FILENAME).write_text(
        json.dumps({"params": params.replace(margin=0.9).to_dict()}))
    with pytest.raises(UserError, match=r"margin: 0.9 -> 0.5"):
        state.resume_point(params, str(tmp_path))


def test_the_newest_checkpoint_anywhere_is_the_resume_point(tmp_path):
    params = tiny_params()
    saved_run(tmp_path, params, epochs=(1, 2, 3), kinds=("latest", "best"))
    assert state.resume_point(params, str(tmp_path)) == str(tmp_path / "checkpoints" / "ckpt-3")
    # checkpoints/ deleted, or holding only older epochs: best/ holds the newest.
    for name in os.listdir(tmp_path / "checkpoints"):
        if name.startswith("ckpt-3"):
            os.remove(tmp_path / "checkpoints" / name)
    best = str(tmp_path / "best" / "ckpt-3")
    assert state.resume_point(params, str(tmp_path)) == best
    shutil.rmtree(tmp_path / "checkpoints")
    assert state.resume_point(params, str(tmp_path)) == best
    # Restoring it puts it back into checkpoints/.
    run = state.Run(params, str(tmp_path), steps_per_epoch=8)
    assert run.restore(best) == best and int(run.epoch.numpy()) == 3
    assert run_folder.checkpoint_files(str(tmp_path / "checkpoints")) == [
        "ckpt-3.data-00000-of-00001", "ckpt-3.index"]


def test_no_readable_checkpoint_anywhere_is_one_line_and_a_new_folder_is_none(tmp_path):
    params = tiny_params()
    assert state.resume_point(params, str(tmp_path)) is None
    saved_run(tmp_path, params, kinds=("latest", "best"))
    for folder in ("checkpoints", "best"):
        for name in run_folder.checkpoint_files(str(tmp_path / folder)):
            (tmp_path / folder / name).write_bytes(b"garbage")
    with pytest.raises(UserError, match="holds checkpoint files but none of them can be read"):
        state.resume_point(params, str(tmp_path))


def _optimizer_state(run):
    # Keras numbers optimizers it names (adam, adam_1, ...): the name after it identifies.
    return {variable.path.split("/", 1)[-1]: variable.numpy().copy()
            for variable in run.optimizer.variables}


def test_a_resume_from_best_keeps_the_optimizer_state_in_the_checkpoint_it_writes(tmp_path):
    """Resuming from best/ saves the state into checkpoints/ again: that copy must hold
    Adam's moments too, or a run resumed from it trains differently."""
    params = tiny_params()
    trained = state.Run(params, str(tmp_path), steps_per_epoch=8)
    images = tf.random.stateless_uniform((8, *trained.model.input_shape[1:]), seed=(1, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(trained.model(images) ** 2)
    variables = trained.model.trainable_variables
    trained.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    trained.epoch.assign(1)
    trained.save("best")
    expected = _optimizer_state(trained)
    assert any(value.any() for value in expected.values())

    resumed = state.Run(params, str(tmp_path), steps_per_epoch=8)
    resumed.restore(state.resume_point(params, str(tmp_path)))
    assert sorted(_optimizer_state(resumed)) == sorted(expected)
    again = state.Run(params, str(tmp_path), steps_per_epoch=8)
    restored = again.restore(state.resume_point(params, str(tmp_path)))
    assert restored == str(tmp_path / "checkpoints" / "ckpt-1")
    for name, value in _optimizer_state(again).items():
        assert (value == expected[name]).all(), name
