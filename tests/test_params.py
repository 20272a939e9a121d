"""Params schema, loading and validation (model/params.py)."""

import dataclasses
import argparse
import json
import math
import os
import re
from typing import List, Optional

import pytest

from model import params as params_module
from model.errors import UserError
from model.params import Params, load_params, params_from_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    import subprocess

    # The experiments git tracks, not a half-edited one of the user's own beside them.
    paths = subprocess.run(["git", "ls-files", "experiments/*/params.json"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(paths) >= 6
    for path in paths:
        load_params(os.path.join(REPO, path))


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
    ({"num_classes_per_batch": 11, "num_images_per_class": 2, "batch_size": 22,
      "num_labels": 10}, "only num_labels = 10"),
    ({"image_channels": 2}, "use 1 (grey) or 3 (RGB)"),
    ({"image_channels": 4}, "'image_channels' is 4; it must be >= 1 and <= 3"),
    ({"num_conv_blocks": 5}, "lower num_conv_blocks or raise image_size to at least 32"),
    ({"augment_translate": 28}, "'augment_translate' is 28 pixels, the whole image"),
    ({"augment_crop": 0}, "'augment_crop' is 0.0; it must be > 0.0"),
    ({"resize": "fill"}, "choose one of pad, crop, stretch"),
    ({"cache": "disk"}, "choose one of memory, file"),
    ({"test_fraction": 1.0}, "'test_fraction' is 1.0; it must be > 0.0 and <= 0.9"),
    ({"triplet_strategy": "batch_semihard", "soft_margin": True}, "not batch_semihard"),
    ({"triplet_strategy": "contrastive", "soft_margin": True}, "not contrastive"),
    ('{"margin": NaN}', "'margin' is nan; it must be a finite number"),
    ('{"learning_rate": Infinity}', "'learning_rate' is inf; it must be a finite number"),
    ('{"bn_momentum": -Infinity}', "it must be a finite number"),
    ('{"margin": 0.2, "margin": 0.5}', "key 'margin' appears twice"),
    ('{"num_epochs": ' + "9" * 5000 + "}", "holds a value that cannot be read"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ({"num_classes_per_batch": 1.5}, "'num_classes_per_batch' must be an integer or null"),
    ({"embedding_size": 2**40}, "'embedding_size' is 1099511627776; it must be >= 1 and <= "),
    ({"num_parallel_calls": 2**40}, "'num_parallel_calls' is 1099511627776"),
    ({"batch_size": 2**24 + 1}, "it must be >= 1 and <= 16777216"),
    ({"distance": "cosine"}, "choose one of L2, squared-L2, angular"),
    ({"distance": "angular", "squared": True}, 'use "distance": "squared-L2" alone'),
])
def test_bad_params_name_the_problem(tmp_path, content, fragment):
    path = write(tmp_path, content)
    with pytest.raises(UserError) as info:
        load_params(str(path))
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_a_params_file_that_is_not_utf8_says_so(tmp_path):
    path = tmp_path / "params.json"
    path.write_bytes(b'{"margin": 0.2, "note": "caf\xe9"}')
    with pytest.raises(UserError, match=r"is not UTF-8 text \(at byte offset 28\); save it as UTF-8"):
        load_params(str(path))


def test_a_run_folder_whose_path_is_not_utf8_is_refused_before_tensorflow_writes(tmp_path):
    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.makedirs(folder)
    with open(os.path.join(folder, b"params.json"), "w") as f:
        f.write("{}")
    with pytest.raises(UserError, match=r"caf\\xe9: the path is not UTF-8"):
        load_params(os.fsdecode(folder))


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no params file"):
        load_params(str(tmp_path / "nowhere"))


def test_replace_validates():
    assert Params().replace(batch_size=32).batch_size == 32
    with pytest.raises(UserError):
        Params().replace(batch_size=-1)


def test_save_params_records_versions(tmp_path):
    import tensorflow as tf
    path = params_module.save_params(params_from_dict({"margin": 0.3}), str(tmp_path))
    record = json.loads(open(path).read())
    assert record["params"]["margin"] == 0.3 and record["params"]["seed"] == 230
    assert record["versions"]["tensorflow"] == tf.__version__
    assert params_from_dict(record["params"]) == params_from_dict({"margin": 0.3})


def test_every_key_has_a_help_and_its_default_passes_validation():
    for field in dataclasses.fields(Params):
        assert field.metadata["help"], field.name
    assert params_from_dict({}) == Params()


@pytest.mark.parametrize("annotation", [List[int], Optional[List[int]], dict, Optional[str]])
def test_unsupported_or_unchecked_annotations_are_refused(annotation):
    if annotation == Optional[str]:  # supported: a control that must pass
        @dataclasses.dataclass(frozen=True)
        class Fine:
            name: annotation = params_module._key(None, "a name")
        params_module.check_schema(Fine)
        return

    @dataclasses.dataclass(frozen=True)
    class Broken:
        value: annotation = params_module._key(None, "a value")

    with pytest.raises(TypeError, match="Broken.value: unsupported params annotation"):
        params_module.check_schema(Broken)


def test_schema_refuses_bounds_on_strings_and_bad_defaults():
    @dataclasses.dataclass(frozen=True)
    class Bounded:
        name: str = params_module._key("a", "a name", at_least=1)

    with pytest.raises(TypeError, match="bounds on a str"):
        params_module.check_schema(Bounded)

    @dataclasses.dataclass(frozen=True)
    class OutOfRange:
        size: int = params_module._key(0, "a size", at_least=1)

    with pytest.raises(UserError, match="OutOfRange default: 'size' is 0"):
        params_module.check_schema(OutOfRange)


def test_optional_float_is_checked_as_a_number():
    @dataclasses.dataclass(frozen=True)
    class WithOptionalFloat:
        rate: Optional[float] = params_module._key(None, "a rate", above=0.0)

    params_module.check_schema(WithOptionalFloat)
    field = dataclasses.fields(WithOptionalFloat)[0]
    assert params_module._check_value(field, None, "f") is None
    assert params_module._check_value(field, 2, "f") == 2.0
    for bad, message in (("0.1", "must be a number or null"), (0, "must be > 0.0"),
                         (math.nan, "finite")):
        with pytest.raises(UserError, match=message):
            params_module._check_value(field, bad, "f")


def documented_params_table(column=0):
    """{key: default cell (column 0) or meaning cell (column 1)} of the params table in
    docs/params.md."""
    with open(os.path.join(REPO, "docs", "params.md")) as f:
        text = f.read()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", text, re.MULTILINE)
    return {key: cells[column].strip() for key, *cells in rows}


def test_docs_document_every_key_with_its_default():
    table = documented_params_table()
    assert set(table) == set(params_module.FIELDS)
    for key, field in params_module.FIELDS.items():
        default = field.default
        written = (f"`{default}`" if isinstance(default, str) else
                   json.dumps(default) if not isinstance(default, float) else repr(default))
        assert table[key] == written, key


def test_name_lists_agree_across_the_schema_the_library_the_docs_and_the_cli():
    """The schema is the app's one list of each key's choices (it loads without
    TensorFlow); the library's tables, the docs and the commands must say the same."""
    from tftriplet import blocked, distances, triplet_loss
    from model import cli, images

    assert params_module.STRATEGIES == tuple(triplet_loss.STRATEGIES)
    assert params_module.DISTANCES == tuple(distances.METRICS)
    assert params_module.MAX_BATCH == blocked.MAX_BATCH
    assert images.RESIZE_MODES is params_module.RESIZE_MODES
    meanings = documented_params_table(column=1)
    for key, field in params_module.FIELDS.items():
        for choice in field.metadata["choices"] or ():
            assert f"`{choice}`" in meanings[key], (key, choice)
    parser = argparse.ArgumentParser()
    cli.add_trained_run_arguments(parser)
    checkpoint = next(action for action in parser._actions if action.dest == "checkpoint")
    assert tuple(checkpoint.choices) == ("latest", "best")
