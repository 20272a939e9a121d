"""The run folder (model/run_folder.py): claiming it, the guard on resuming, its layout."""

import logging
import os
import subprocess
import sys

import pytest
from absl import logging as absl_logging

from model import cli, run_folder
from model.errors import UserError
from model.params import RESOLVED_PARAMS_FILENAME, Params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_checkpoint_file(model_dir, folder="checkpoints", number=1):
    os.makedirs(os.path.join(model_dir, folder), exist_ok=True)
    open(os.path.join(model_dir, folder, f"ckpt-{number}.index"), "w").close()


def test_a_claimed_folder_logs_to_train_log_without_tensorflow_chatter(tmp_path):
    model_dir = str(tmp_path / "run")
    cli.set_logger()
    with run_folder.claimed(model_dir):
        logging.info("epoch 1 done")
        logging.getLogger("tensorflow").info("Assets written to: export/assets")
        absl_logging.info("Sharding callback duration: 37 microseconds")
        logging.getLogger("openTSNE.tsne").info("Automatically determined negative gradient")
        logging.getLogger("tensorflow").warning("a TensorFlow warning")
    logging.info("after the run")
    text = open(os.path.join(model_dir, run_folder.TRAIN_LOG)).read()
    assert "epoch 1 done" in text and "a TensorFlow warning" in text
    assert "Assets written" not in text and "Sharding" not in text
    assert "negative gradient" not in text
    assert "after the run" not in text  # the file handler left with the claim


def test_a_claimed_folder_is_refused_to_a_second_claim_which_writes_nothing(tmp_path):
    model_dir = str(tmp_path)
    with run_folder.claimed(model_dir):
        code = ("import sys; from model import run_folder\n"
                "with run_folder.claimed(sys.argv[1]): pass")
        result = subprocess.run([sys.executable, "-c", code, model_dir], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "is in use by another train.py" in result.stderr
    assert not os.path.exists(os.path.join(model_dir, run_folder.TRAIN_LOG))


def test_only_writable_folders_are_claimed(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        run_folder.check_writable(str(tmp_path / "file"))
    run_folder.check_writable(str(tmp_path / "new" / "run"))
    assert os.path.isdir(tmp_path / "new" / "run")
    if os.geteuid() != 0:  # root writes anywhere
        os.chmod(tmp_path / "new", 0o500)
        try:
            with pytest.raises(UserError, match="cannot create"):
                run_folder.check_writable(str(tmp_path / "new" / "other"))
        finally:
            os.chmod(tmp_path / "new", 0o700)


def test_checkpoint_files_are_found_by_name(tmp_path):
    assert run_folder.checkpoint_files(str(tmp_path / "missing")) == []
    for name in ("ckpt-3.index", "ckpt-3.data-00000-of-00001", "ckpt-10.index", "checkpoint",
                 "ckpt-x.index", "notckpt-1.index"):
        (tmp_path / name).write_text("")
    assert run_folder.checkpoint_files(str(tmp_path)) == [
        "ckpt-10.index", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert run_folder.checkpoint_number("ckpt-10.index") == 10
    assert run_folder.checkpoint_number("checkpoint") is None


def test_runs_saved_before_new_keys_existed_still_resume():
    saved = {key: value for key, value in Params().to_dict().items()
             if key not in ("num_conv_blocks", "image_channels", "resize", "augment_flip")}
    # num_labels was saved as the old default, 10, before it was taken from the data.
    run_folder.check_same_params({**saved, "num_labels": 10}, Params().replace(num_labels=7),
                                 "DIR")
    with pytest.raises(UserError, match=r"num_conv_blocks: 2 -> 3"):
        run_folder.check_same_params(saved, Params().replace(num_conv_blocks=3), "DIR")


@pytest.mark.parametrize("name, kind", [("checkpoints", "file"), ("best", "file"),
                                        ("eval", "file"), ("train.log", "folder"),
                                        ("metrics_eval_last.json", "folder"),
                                        ("checkpoints/ckpt-2.index", "folder"),
                                        ("best/ckpt-2.data-00000-of-00001", "folder"),
                                        ("checkpoints/checkpoint", "folder")])
def test_a_layout_name_taken_by_the_wrong_kind_of_entry_is_refused_before_any_write(
        tmp_path, name, kind):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    if kind == "folder":
        (model_dir / name).mkdir(parents=True)
    else:
        (model_dir / name).write_text("x")
    before = sorted(os.listdir(model_dir))
    with pytest.raises(UserError, match=f"{name} is (not )?a folder.*move it away"):
        with run_folder.claimed(str(model_dir)):
            pass
    assert sorted(os.listdir(model_dir)) == sorted(before + [run_folder.LOCK_FILE])


def test_a_log_planted_as_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "someone_elses_file"
    target.write_text("theirs\n")
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / run_folder.TRAIN_LOG).symlink_to(target)
    with pytest.raises(UserError, match="train.log is a symbolic link.*plain file"):
        with run_folder.claimed(str(model_dir)):
            logging.getLogger().warning("must not reach the target")
    assert target.read_text() == "theirs\n"


def test_every_file_a_run_writes_is_named_once_in_the_layout():
    doc = run_folder.__doc__
    names = [run_folder.TRAIN_LOG, run_folder.TEST_BEST_FILE, run_folder.VERIFICATION_FILE,
             run_folder.DATASET_FILE, run_folder.LOCK_FILE, RESOLVED_PARAMS_FILENAME,
             *run_folder.METRICS_FILES.values()]
    folders = [*run_folder.CHECKPOINT_DIRS.values(), *run_folder.SUMMARY_DIRS.values(),
               run_folder.EXPORT_DIR, run_folder.CACHE_DIR, run_folder.RETRIEVAL_DIR]
    for name in names + [folder + "/" for folder in folders]:
        assert name in doc, name
    assert len(set(names + folders)) == len(names + folders)
