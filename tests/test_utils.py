"""Params loading and validation (model/utils.py)."""

import json
import logging

import pytest
from absl import logging as absl_logging

from model import utils
from model.utils import Params, UserError, load_params, params_from_dict

ORIGINAL_BATCH_ALL = {
    "learning_rate": 1e-3, "batch_size": 64, "num_epochs": 20, "num_channels": 32,
    "use_batch_norm": False, "bn_momentum": 0.9, "margin": 0.5, "embedding_size": 64,
    "triplet_strategy": "batch_all", "squared": False, "image_size": 28, "num_labels": 10,
    "train_size": 50000, "eval_size": 10000, "num_parallel_calls": 4, "save_summary_steps": 50,
}


def write(tmp_path, content):
    path = tmp_path / "params.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_original_files_load_with_new_defaults(tmp_path):
    for strategy, lr in (("batch_all", 1e-3), ("batch_hard", 1e-4)):
        values = {**ORIGINAL_BATCH_ALL, "triplet_strategy": strategy, "learning_rate": lr}
        params = load_params(str(write(tmp_path, values)))
        assert params.triplet_strategy == strategy and params.learning_rate == lr
        assert params.seed == 230 and params.l2_normalize is False
        assert params.num_classes_per_batch is None and params.distribution == "none"


def test_folder_path_and_int_for_float(tmp_path):
    write(tmp_path, {"learning_rate": 1, "margin": 0})
    params = load_params(str(tmp_path))
    assert params.learning_rate == 1.0 and isinstance(params.learning_rate, float)
    assert params.margin == 0.0


def test_shipped_experiments_load():
    import glob
    paths = sorted(glob.glob("experiments/*/params.json"))
    assert len(paths) >= 6
    for path in paths:
        load_params(path)


@pytest.mark.parametrize("content, fragment", [
    ("{", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"learning_rat": 0.1}, "did you mean 'learning_rate'"),
    ({"foo": 1}, "unknown key 'foo'"),
    ({"batch_size": "64"}, "'batch_size' must be an integer"),
    ({"batch_size": 64.0}, "'batch_size' must be an integer"),
    ({"batch_size": True}, "'batch_size' must be an integer"),
    ({"squared": 1}, "'squared' must be true or false"),
    ({"margin": "0.5"}, "'margin' must be a number"),
    ({"batch_size": 0}, "'batch_size' is 0; it must be >= 1"),
    ({"learning_rate": 0}, "it must be > 0"),
    ({"margin": -1}, "it must be >= 0"),
    ({"bn_momentum": 1.5}, "<= 1.0"),
    ({"triplet_strategy": "hard"}, "choose one of batch_all, batch_hard, batch_semihard"),
    ({"distribution": "tpu"}, "choose one of none, mirrored, multi_worker"),
    ({"num_classes_per_batch": 4}, "need both"),
    ({"num_classes_per_batch": 4, "num_images_per_class": 4}, "make batch_size 16"),
    ({"num_classes_per_batch": 11, "num_images_per_class": 2, "batch_size": 22},
     "only num_labels = 10"),
    ({"triplet_strategy": "batch_semihard", "soft_margin": True}, "not batch_semihard"),
])
def test_bad_params_name_the_problem(tmp_path, content, fragment):
    path = write(tmp_path, content)
    with pytest.raises(UserError) as info:
        load_params(str(path))
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no params file"):
        load_params(str(tmp_path / "nowhere"))


def test_replace_validates():
    assert Params().replace(batch_size=32).batch_size == 32
    with pytest.raises(UserError):
        Params().replace(batch_size=-1)


def test_save_params_records_versions(tmp_path):
    import tensorflow as tf
    path = utils.save_params(params_from_dict({"margin": 0.3}), str(tmp_path))
    record = json.loads(open(path).read())
    assert record["params"]["margin"] == 0.3 and record["params"]["seed"] == 230
    assert record["versions"]["tensorflow"] == tf.__version__
    assert params_from_dict(record["params"]) == params_from_dict({"margin": 0.3})


def test_run_cli_turns_user_error_into_exit_2(capsys):
    def main(argv):
        raise UserError("bad thing; fix it")
    assert utils.run_cli(main) == 2
    assert capsys.readouterr().err == "error: bad thing; fix it\n"


def test_logger_writes_file(tmp_path):
    log = tmp_path / "train.log"
    utils.set_logger(str(log))
    logging.info("epoch 1 done")
    logging.getLogger("tensorflow").info("Assets written to: export/assets")
    absl_logging.info("Sharding callback duration: 37 microseconds")
    logging.getLogger("tensorflow").warning("a TensorFlow warning")
    utils.set_logger()
    text = log.read_text()
    assert "epoch 1 done" in text and "a TensorFlow warning" in text
    assert "Assets written" not in text and "Sharding" not in text
