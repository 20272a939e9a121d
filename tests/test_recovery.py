"""What survives what: crashes at exact points, damaged files, a second process, bad input.

Each test kills a real ``train.py`` subprocess at a named point (``TRIPLET_LOSS_TEST_HOOK``,
model/test_hooks.py) or damages the files of a finished tiny run, then checks that the
same command completes the run as if nothing had happened (docs/runs.md, "What survives
what").
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, TINY, run_script, tiny_params
from model import checkpoints, evaluation, export, files, run_folder, state, training
from model.errors import UserError

# End to end: scripts in subprocesses and whole trainings (pytest -m "not e2e" skips them).
pytestmark = pytest.mark.e2e



def make_run(tmp_path, name="run", **changes):
    model_dir = tmp_path / name
    model_dir.mkdir()
    (model_dir / "params.json").write_text(json.dumps({**TINY, **changes}))
    return model_dir


def train_cli(model_dir, data_dir, hook=None, **popen):
    env = dict(os.environ)
    env.pop("TRIPLET_LOSS_TEST_HOOK", None)
    if hook:
        env["TRIPLET_LOSS_TEST_HOOK"] = hook
    command = [sys.executable, "train.py", "--model_dir", str(model_dir), "--data_dir", data_dir]
    if popen:
        return subprocess.Popen(command, cwd=REPO, env=env, text=True, **popen)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def set_epochs(model_dir, num_epochs):
    values = json.loads((model_dir / "params.json").read_text())
    (model_dir / "params.json").write_text(json.dumps({**values, "num_epochs": num_epochs}))


def weights(model_dir):
    model, _ = evaluation.restore_model(str(model_dir), tiny_params())
    return model.get_weights()


def weights_of_best(model_dir):
    model, _ = evaluation.restore_model(str(model_dir), tiny_params(), "best")
    return model.get_weights()


def record(model_dir, kind="last"):
    values = json.loads((model_dir / f"metrics_eval_{kind}.json").read_text())
    values.pop("train_minutes", None)
    return values


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(model_dir, data_dir) of a 2-epoch run finished uninterrupted (do not modify)."""
    from conftest import write_dataset

    root = tmp_path_factory.mktemp("finished")
    data_dir = write_dataset(root / "data")
    model_dir = make_run(root)
    training.train_and_evaluate(tiny_params(), str(model_dir), data_dir)
    return model_dir, data_dir


def copy_run(finished, tmp_path):
    model_dir = tmp_path / "copy"
    shutil.copytree(finished[0], model_dir)
    return model_dir


# ---------------------------------------------------------------- kills at exact points

def test_killed_while_exporting_a_longer_run_replaces_the_stale_export(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path)
    set_epochs(model_dir, 3)
    killed = train_cli(model_dir, finished[1], hook="export_staged:kill")
    assert killed.returncode == -signal.SIGKILL
    assert export.exported_epoch(str(model_dir)) == 2  # the old export, intact

    rerun = train_cli(model_dir, finished[1])
    assert rerun.returncode == 0, rerun.stderr
    assert export.exported_epoch(str(model_dir)) == 3
    assert json.loads((model_dir / "verification.json").read_text())["epoch"] == 3
    assert not [name for name in os.listdir(model_dir) if name.startswith("export.")]
    module = export.load_exported(str(model_dir))
    model, _ = evaluation.restore_model(str(model_dir), tiny_params())
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    np.testing.assert_allclose(module.embed(images).numpy(),
                               evaluation.embed_images(model, images, tiny_params()), atol=1e-5)


def test_killed_before_calibration_the_rerun_writes_verification(tmp_path, tiny_data_dir):
    model_dir = make_run(tmp_path, num_epochs=1)
    killed = train_cli(model_dir, tiny_data_dir, hook="after_export:kill")
    assert killed.returncode == -signal.SIGKILL
    assert export.exported_epoch(str(model_dir)) == 1
    assert not (model_dir / "verification.json").exists()
    rerun = train_cli(model_dir, tiny_data_dir)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((model_dir / "verification.json").read_text())["epoch"] == 1


def test_killed_after_the_last_checkpoint_the_rerun_completes_the_epoch_record(
        finished, tmp_path):
    model_dir = make_run(tmp_path)
    killed = train_cli(model_dir, finished[1], hook="after_checkpoint:kill")
    assert killed.returncode == -signal.SIGKILL
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-1")
    assert not (model_dir / "metrics_eval_last.json").exists()
    rerun = train_cli(model_dir, finished[1])  # completes epoch 1's record, trains epoch 2
    assert rerun.returncode == 0, rerun.stderr
    assert "record completed after a restart" in (model_dir / "train.log").read_text()
    assert record(model_dir) == record(finished[0])
    assert record(model_dir, "best") == record(finished[0], "best")
    for a, b in zip(weights(model_dir), weights(finished[0])):
        np.testing.assert_array_equal(a, b)

    # Killed after the final epoch's checkpoint: the rerun completes its record and exports.
    final = make_run(tmp_path, "final", num_epochs=1)
    assert train_cli(final, finished[1], hook="after_checkpoint:kill").returncode == -9
    assert train_cli(final, finished[1]).returncode == 0
    last = json.loads((final / "metrics_eval_last.json").read_text())
    assert last["epoch"] == 1 and export.exported_epoch(str(final)) == 1
    log = (final / "train.log").read_text()
    assert "epoch 1/1" in log and "record completed after a restart" in log


def test_killed_while_replacing_params_resolved_the_old_file_stays(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path)
    before = (model_dir / "params_resolved.json").read_text()
    mtime = os.path.getmtime(model_dir / "params_resolved.json")
    assert train_cli(model_dir, finished[1]).returncode == 0  # finished: unchanged file
    assert os.path.getmtime(model_dir / "params_resolved.json") == mtime
    set_epochs(model_dir, 3)
    killed = train_cli(model_dir, finished[1], hook="before_replace:params_resolved.json:kill")
    assert killed.returncode == -signal.SIGKILL
    assert (model_dir / "params_resolved.json").read_text() == before
    rerun = train_cli(model_dir, finished[1])
    assert rerun.returncode == 0, rerun.stderr
    saved = json.loads((model_dir / "params_resolved.json").read_text())
    assert saved["params"]["num_epochs"] == 3
    assert not [name for name in os.listdir(model_dir) if name.endswith(".tmp")]


# ---------------------------------------------------------------- damaged checkpoints

def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def zero(path):
    with open(path, "r+b") as f:
        f.write(bytes(os.path.getsize(path)))


def flip(path):
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 3, len(data), max(1, len(data) // 50)):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


NEWEST = os.path.join("checkpoints", "ckpt-2")
DAMAGES = {
    "data truncated": lambda d: truncate(d / (NEWEST + ".data-00000-of-00001")),
    "data zeroed": lambda d: zero(d / (NEWEST + ".data-00000-of-00001")),
    "data bytes flipped": lambda d: flip(d / (NEWEST + ".data-00000-of-00001")),
    "index truncated": lambda d: truncate(d / (NEWEST + ".index")),
    "index missing": lambda d: os.remove(d / (NEWEST + ".index")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_falls_back_and_retrains_the_same(
        finished, tmp_path, caplog, damage):
    model_dir = copy_run(finished, tmp_path)
    DAMAGES[damage](model_dir)
    # Readers fall back too, saying so, without a traceback.
    results = evaluation.evaluate_checkpoint(tiny_params(), str(model_dir), finished[1])
    evaluated = json.loads((model_dir / "metrics_eval.json").read_text())["checkpoint"]
    assert evaluated.endswith("ckpt-1") and np.isfinite(results["map_at_r"])
    assert any("Skipped" in r.getMessage() and "ckpt-2" in r.getMessage()
               for r in caplog.records)
    training.train_and_evaluate(tiny_params(), str(model_dir), finished[1])
    for a, b in zip(weights(model_dir), weights(finished[0])):
        np.testing.assert_array_equal(a, b)
    assert record(model_dir) == record(finished[0])


@pytest.mark.parametrize("state", ["missing", "garbage"])
def test_a_bad_state_file_neither_restarts_nor_bypasses_the_params_guard(
        finished, tmp_path, state):
    model_dir = copy_run(finished, tmp_path)
    state_file = model_dir / "checkpoints" / "checkpoint"
    if state == "missing":
        state_file.unlink()
    else:
        state_file.write_text("garbage {{{")
    os.remove(model_dir / "params_resolved.json")
    with pytest.raises(UserError, match=r"margin: 0.5 -> 0.3"):
        training.train_and_evaluate(tiny_params(margin=0.3), str(model_dir), finished[1])
    # Refused before any repair: the folder is as it was.
    assert (model_dir / "checkpoints" / "checkpoint").exists() == (state == "garbage")
    before = set(os.listdir(model_dir / "checkpoints")) | {"checkpoint"}
    results = training.train_and_evaluate(tiny_params(), str(model_dir), finished[1])
    assert set(os.listdir(model_dir / "checkpoints")) == before  # finished: nothing trained
    assert tf.train.get_checkpoint_state(str(model_dir / "checkpoints")).model_checkpoint_path
    assert results["map_at_r"] == pytest.approx(record(finished[0])["map_at_r"])


def test_unreadable_latest_checkpoints_resume_from_best(finished, tmp_path):
    # E.g. killed while the very first epoch's checkpoint was written: best/ was saved
    # just before, complete.
    model_dir = copy_run(finished, tmp_path)
    for name in run_folder.checkpoint_files(str(model_dir / "checkpoints")):
        if name.endswith(".index"):
            truncate(model_dir / "checkpoints" / name)
    training.train_and_evaluate(tiny_params(), str(model_dir), finished[1])
    for a, b in zip(weights(model_dir), weights(finished[0])):
        np.testing.assert_array_equal(a, b)
    assert record(model_dir) == record(finished[0])


def folder_bytes(*folders):
    return {str(path): path.read_bytes() for folder in folders for path in folder.rglob("*")
            if path.is_file()}


@pytest.mark.parametrize("garbage", ["indexes", "everything"])
def test_checkpoint_files_that_all_fail_stop_the_run_without_touching_them(finished, tmp_path,
                                                                           garbage):
    model_dir = copy_run(finished, tmp_path)
    for folder in ("checkpoints", "best"):
        for name in os.listdir(model_dir / folder):
            if garbage == "everything":  # the state files too
                (model_dir / folder / name).write_bytes(os.urandom(100))
            elif name.endswith(".index"):
                truncate(model_dir / folder / name)
    before = folder_bytes(model_dir / "checkpoints", model_dir / "best")
    result = train_cli(model_dir, finished[1])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "holds checkpoint files but none of them can be read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "checkpoints/ckpt-2" in result.stderr and "best/ckpt-2" in result.stderr
    assert folder_bytes(model_dir / "checkpoints", model_dir / "best") == before


def test_a_deleted_checkpoints_folder_resumes_from_best_not_from_scratch(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path)
    shutil.rmtree(model_dir / "checkpoints")
    best_epoch = record(finished[0], "best")["epoch"]
    result = train_cli(model_dir, finished[1])
    assert result.returncode == 0, result.stderr
    assert "Untrained" not in result.stderr
    assert f"ckpt-{best_epoch}" in result.stderr
    for a, b in zip(weights(model_dir), weights(finished[0])):
        np.testing.assert_array_equal(a, b)
    assert record(model_dir) == record(finished[0])
    assert record(model_dir, "best") == record(finished[0], "best")


def test_checkpoints_replaced_by_a_file_is_refused_and_best_untouched(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path)
    shutil.rmtree(model_dir / "checkpoints")
    (model_dir / "checkpoints").write_text("not a folder")
    before = folder_bytes(model_dir)
    result = train_cli(model_dir, finished[1])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {model_dir / 'checkpoints'} is not a folder, but the run keeps its "
        "checkpoints/ there; move it away (nothing was changed), then run again"]
    after = folder_bytes(model_dir)
    after.pop(str(model_dir / run_folder.LOCK_FILE))
    before.pop(str(model_dir / run_folder.LOCK_FILE))
    assert after == before


def _lose_the_index_of_best(model_dir):
    """What a rebuild of best/ killed before its last file leaves: data, no index."""
    for name in run_folder.checkpoint_files(str(model_dir / "best")):
        if name.endswith(".index"):
            os.remove(model_dir / "best" / name)


BEST_DAMAGES = {
    "deleted": lambda model_dir: shutil.rmtree(model_dir / "best"),
    "index garbled": lambda model_dir: [flip(path) for path in (model_dir / "best").glob(
        "ckpt-*.index")],
    "data garbled": lambda model_dir: [flip(path) for path in (model_dir / "best").glob(
        "ckpt-*.data-*")],
    "index lost": _lose_the_index_of_best,
}


@pytest.mark.parametrize("damage", sorted(BEST_DAMAGES))
def test_a_lost_or_damaged_best_folder_is_rebuilt_from_the_checkpoints(finished, tmp_path,
                                                                       damage, caplog):
    model_dir = copy_run(finished, tmp_path)
    BEST_DAMAGES[damage](model_dir)
    training.train_and_evaluate(tiny_params(), str(model_dir), finished[1])
    assert any(r.getMessage().startswith("Rebuilt") for r in caplog.records)
    for a, b in zip(weights_of_best(model_dir), weights_of_best(finished[0])):
        np.testing.assert_array_equal(a, b)
    assert evaluation.restore_model(str(model_dir), tiny_params(), "best")[1] == str(
        model_dir / "best" / f"ckpt-{record(finished[0], 'best')['epoch']}")


def test_a_best_folder_that_cannot_be_rebuilt_says_what_can_be_done(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path)
    shutil.rmtree(model_dir / "best")
    best_epoch = record(finished[0], "best")["epoch"]
    for name in run_folder.checkpoint_files(str(model_dir / "checkpoints")):
        if name.startswith(f"ckpt-{best_epoch}.") and best_epoch != 2:
            os.remove(model_dir / "checkpoints" / name)
    if best_epoch == 2:  # the last epoch is the resume point: pretend an older best
        values = json.loads((model_dir / "metrics_eval_best.json").read_text())
        (model_dir / "metrics_eval_best.json").write_text(json.dumps({**values, "epoch": 7}))
    result = train_cli(model_dir, finished[1])
    assert result.returncode == 0
    assert "lost the checkpoint of the best epoch" in result.stderr
    result = run_script("evaluate.py", "--model_dir", str(model_dir), "--data_dir",
                        finished[1], "--checkpoint", "best")
    assert result.returncode == 2 and "use --checkpoint latest" in result.stderr


def test_a_deleted_untrained_record_is_rewritten_the_same(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path)
    (model_dir / "metrics_eval_untrained.json").unlink()
    training.train_and_evaluate(tiny_params(), str(model_dir), finished[1])
    assert record(model_dir, "untrained") == record(finished[0], "untrained")


def test_a_checkpoint_writer_killed_mid_write_leaves_no_temp_folder_after_a_rerun(
        finished, tmp_path):
    model_dir = copy_run(finished, tmp_path)
    for folder in ("checkpoints", "best"):
        leftover = model_dir / folder / "ckpt-3_temp"
        leftover.mkdir()
        (leftover / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    assert train_cli(model_dir, finished[1]).returncode == 0
    assert not list(model_dir.rglob("*_temp"))


def test_a_garbage_state_file_is_repaired_quietly(finished, tmp_path):
    model_dir = copy_run(finished, tmp_path)
    (model_dir / "checkpoints" / "checkpoint").write_bytes(os.urandom(64))
    result = train_cli(model_dir, finished[1])
    assert result.returncode == 0
    assert "deprecated" not in result.stderr and "Checkpoint ignored" not in result.stderr
    assert tf.train.get_checkpoint_state(str(model_dir / "checkpoints")).model_checkpoint_path


@pytest.mark.parametrize("change", [{"margin": 0.3}, {"embedding_size": 16}])
def test_the_params_guard_holds_without_params_resolved(finished, tmp_path, change):
    # The checkpoint's own copy of the params is checked before its tensors are loaded:
    # a changed network size gives the guard's message, not a shape error.
    model_dir = copy_run(finished, tmp_path)
    os.remove(model_dir / "params_resolved.json")
    key = next(iter(change))
    with pytest.raises(UserError, match=f"{key}: "):
        training.train_and_evaluate(tiny_params(**change), str(model_dir), finished[1])


@pytest.mark.parametrize("damage", ["missing", "invalid"])
def test_a_lost_best_record_keeps_the_best_score_and_is_rewritten(finished, tmp_path, damage):
    model_dir = copy_run(finished, tmp_path)
    best_file = model_dir / "metrics_eval_best.json"
    original = json.loads(best_file.read_text())
    if damage == "missing":
        best_file.unlink()
    else:
        best_file.write_text("{")
    set_epochs(model_dir, 3)
    run = state.Run(tiny_params(num_epochs=3), str(model_dir))
    run.restore(state.resume_point(tiny_params(num_epochs=3), str(model_dir)))
    assert run.best_score.numpy() == pytest.approx(original["map_at_r"])
    training.train_and_evaluate(tiny_params(num_epochs=3), str(model_dir), finished[1])
    rewritten = json.loads(best_file.read_text())
    assert rewritten["map_at_r"] >= original["map_at_r"]
    if rewritten["epoch"] == original["epoch"]:
        assert rewritten == pytest.approx(original)


def test_a_reader_survives_a_checkpoint_deleted_while_it_reads(finished, tmp_path, monkeypatch):
    model_dir = copy_run(finished, tmp_path)
    folder = str(model_dir / "checkpoints")
    real_damage = checkpoints.damage

    def pruned_after_the_check(prefix):
        reason = real_damage(prefix)
        if prefix.endswith("ckpt-2"):  # a trainer deletes it right after the check
            for name in os.listdir(folder):
                if name.startswith("ckpt-2."):
                    os.remove(os.path.join(folder, name))
        return reason

    monkeypatch.setattr(checkpoints, "damage", pruned_after_the_check)
    _, path = evaluation.restore_model(str(model_dir), tiny_params())
    assert path.endswith("ckpt-1")


# ---------------------------------------------------------------- two processes

def test_a_second_trainer_is_refused_and_a_killed_one_leaves_no_stale_lock(tmp_path,
                                                                          tiny_data_dir):
    model_dir = make_run(tmp_path, num_epochs=1)
    first = train_cli(model_dir, tiny_data_dir, hook="locked:pause", stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while "test hook: locked" not in first.stderr.readline():
            assert time.time() < deadline and first.poll() is None
        second = train_cli(model_dir, tiny_data_dir)
        assert second.returncode == 2
        assert f"is in use by another train.py (pid {first.pid})" in second.stderr
        assert second.stderr.count("\n") == 1
    finally:
        first.kill()
        first.wait()
    third = train_cli(model_dir, tiny_data_dir)
    assert third.returncode == 0, third.stderr
    assert (model_dir / "train.log").read_text().count("epoch 1/1") == 1


@pytest.mark.parametrize("signum, status, words", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_a_plain_kill_stops_like_ctrl_c_with_a_line(tmp_path, tiny_data_dir, signum, status,
                                                    words):
    model_dir = make_run(tmp_path, num_epochs=1)
    process = train_cli(model_dir, tiny_data_dir, hook="after_checkpoint:pause",
                        stderr=subprocess.PIPE,
                        # As in a terminal: a job that a non-interactive shell put in the
                        # background (how CI may run the suite) starts with SIGINT ignored.
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 300
        while "test hook: after_checkpoint" not in process.stderr.readline():
            assert time.time() < deadline and process.poll() is None
        process.send_signal(signum)
        assert process.wait(timeout=60) == status
        assert process.stderr.read().strip() == (
            f"{words}; the last completed epoch's checkpoint is kept")
    finally:
        process.kill()
        process.wait()
    assert train_cli(model_dir, tiny_data_dir).returncode == 0


# ---------------------------------------------------------------- bad input

def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr


def test_model_dir_that_is_a_file(tmp_path, tiny_data_dir):
    path = tmp_path / "params.json"
    path.write_text("{}")
    assert_one_line_error(run_script("train.py", "--model_dir", str(path), "--data_dir",
                                     tiny_data_dir), "is a file, not a folder")


def test_read_only_model_dir(tmp_path, monkeypatch):
    # Root ignores permission bits, so the check is made to see what another user would.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match="is read-only; make it writable"):
        run_folder.check_writable(str(tmp_path))


@pytest.mark.parametrize("num_labels, message", [
    (5, 'train-labels-idx1-ubyte.gz: label 9 is outside [0, num_labels = 5); set '
        '"num_labels": 10'),
    # Refused before a billion class names are listed (7 GB, then a MemoryError).
    (10**9, 'num_labels is 1000000000 but IDX label files hold labels 0-255; set '
            '"num_labels": 10')])
def test_labels_outside_num_labels_name_the_file_and_the_fix(tmp_path, tiny_data_dir,
                                                             num_labels, message):
    model_dir = make_run(tmp_path, num_labels=num_labels)
    result = run_script("train.py", "--model_dir", str(model_dir), "--data_dir", tiny_data_dir)
    assert_one_line_error(result, message)
    assert sorted(os.listdir(model_dir)) == [".lock", "params.json"]


@pytest.mark.parametrize("eval_size", [1, 3])
def test_a_test_set_that_cannot_calibrate_stops_before_training(tmp_path, tiny_data_dir,
                                                               eval_size):
    model_dir = make_run(tmp_path, eval_size=eval_size)
    result = run_script("train.py", "--model_dir", str(model_dir), "--data_dir", tiny_data_dir)
    assert_one_line_error(result, "cannot calibrate the verification threshold; raise eval_size")
    assert not (model_dir / "checkpoints").exists()


def test_data_dir_that_is_a_file_or_missing(tmp_path):
    model_dir = make_run(tmp_path)
    as_file = tmp_path / "data.txt"
    as_file.write_text("x")
    assert_one_line_error(run_script("train.py", "--model_dir", str(model_dir), "--data_dir",
                                     str(as_file)), "is a file, not a folder")
    missing = tmp_path / "nowhere"
    assert_one_line_error(run_script("train.py", "--model_dir", str(model_dir), "--data_dir",
                                     str(missing)), "missing in")
    assert not missing.exists()


def test_embed_given_a_folder(finished, tmp_path):
    assert_one_line_error(run_script("embed.py", "--model_dir", str(finished[0]), str(tmp_path)),
                          "is a folder, not an image")


def truncate_export_weights(model_dir):
    truncate(next((model_dir / "export" / "variables").glob("variables.data-*")))


def garble_threshold(model_dir):
    values = json.loads((model_dir / "verification.json").read_text())
    (model_dir / "verification.json").write_text(json.dumps({**values, "threshold": "x"}))


@pytest.mark.parametrize("damage, message", [
    (truncate_export_weights, "no complete exported model"),
    (garble_threshold, "no valid calibrated threshold")])
def test_a_damaged_export_or_threshold_is_one_line_for_embed_and_repaired_by_train(
        finished, tmp_path, damage, message):
    model_dir = copy_run(finished, tmp_path)
    images = []
    for index in range(2):
        images.append(str(tmp_path / f"{index}.png"))
        tf.io.write_file(images[-1], tf.io.encode_png(np.full((28, 28, 1), 40 * index, np.uint8)))
    damage(model_dir)
    assert_one_line_error(run_script("embed.py", "--model_dir", str(model_dir), *images), message)
    assert train_cli(model_dir, finished[1]).returncode == 0
    result = run_script("embed.py", "--model_dir", str(model_dir), *images)
    assert result.returncode == 0 and "threshold" in result.stdout, result.stderr


def test_disk_full_is_a_one_line_error(capsys):
    import errno

    from model import cli

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/checkpoints/x")

    assert cli.run_cli(full) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No space left on device (/data/run/checkpoints/x)")
    assert err.count("\n") == 1

    def resource_exhausted(argv):
        raise tf.errors.ResourceExhaustedError(None, None, "write failed: disk full")

    assert cli.run_cli(resource_exhausted) == 2
    assert "out of disk space or memory (write failed: disk full)" in capsys.readouterr().err


def test_files_written_atomically_leave_no_temp_file(tmp_path):
    path = tmp_path / "x.json"
    files.write_json(str(path), {"a": 1})
    files.write_json(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and os.listdir(tmp_path) == ["x.json"]
