"""Grids, child folders and the results table (model/search.py and its two CLIs)."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import TINY
from model import files, run_folder, search
from model.errors import UserError

# End to end: scripts in subprocesses and whole trainings (pytest -m "not e2e" skips them).
pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_axis_types():
    assert search.parse_axis("margin=0.2,1") == ("margin", [0.2, 1])
    assert search.parse_axis("squared=true,false") == ("squared", [True, False])
    assert search.parse_axis("triplet_strategy=batch_hard, batch_all") == (
        "triplet_strategy", ["batch_hard", "batch_all"])
    for bad in ("margin", "=1", "margin="):
        with pytest.raises(UserError, match="KEY=VALUE"):
            search.parse_axis(bad)


def test_grid_is_the_product_and_validates_every_setting():
    runs = search.grid({"batch_size": 32}, [("margin", [0.2, 0.5]), ("squared", [True, False])])
    assert [name for name, _ in runs] == [
        "margin_0.2-squared_True", "margin_0.2-squared_False",
        "margin_0.5-squared_True", "margin_0.5-squared_False"]
    assert runs[1][1] == {"batch_size": 32, "margin": 0.2, "squared": False}
    with pytest.raises(UserError, match="margin_-1"):
        search.grid({}, [("margin", [0.5, -1])])
    with pytest.raises(UserError, match="did you mean 'margin'"):
        search.grid({}, [("margn", [0.5])])
    with pytest.raises(UserError, match="twice"):
        search.grid({}, [("margin", [0.5]), ("margin", [0.2])])


@pytest.mark.parametrize("text", ["margin=NaN", "margin=0.2,Infinity", "learning_rate=-Infinity"])
def test_a_grid_of_non_finite_values_is_refused_before_anything_runs(text):
    with pytest.raises(UserError, match="must be a finite number"):
        search.grid({}, [search.parse_axis(text)])


def test_a_setting_too_long_for_a_folder_name_gets_a_bounded_deterministic_one(tmp_path):
    long_names = [json.dumps([name]) for name in ("c" * 300 + "1", "c" * 300 + "2")]
    axes = [search.parse_axis(f"train_classes={','.join(long_names)}"),
            ("margin", [0.2, 0.5])]
    runs = search.grid({}, axes)
    names = [name for name, _ in runs]
    assert names == [name for name, _ in search.grid({}, axes)]  # the same every time
    assert len(set(names)) == 4
    for name in names:
        assert len(name.encode()) <= 255 and name.startswith("train_classes_['ccc")
    # Names that fit are kept, whatever their length: existing searches keep their folders.
    fits = "x" * (255 - len("train_classes_['']"))
    assert search.grid({}, [("train_classes", [[fits]])])[0][0] == f"train_classes_['{fits}']"
    children = search.write_children(str(tmp_path), runs)
    assert [os.path.basename(child) for child in children] == names
    assert json.load(open(os.path.join(children[3], "params.json"))) == {
        "train_classes": ["c" * 300 + "2"], "margin": 0.5}
    # A value holding a slash gets one folder too, not nested ones.
    name = search.grid({}, [("train_classes", [["a/b"]])])[0][0]
    assert "/" not in name and name.startswith("train_classes_['a")


def test_a_setting_held_by_another_process_is_reported_not_claimed(tmp_path):
    child = str(tmp_path / "margin_0.2")
    os.makedirs(child)
    with search.setting_claimed(child) as holder:
        assert holder is None
        # flock locks belong to the open file: a second claim, even in this process,
        # finds the first one.
        with search.setting_claimed(child) as second:
            assert second == "another search_hyperparams.py"
    with files.exclusive_lock(child, run_folder.LOCK_FILE):
        with search.setting_claimed(child) as holder:
            assert holder == f"a train.py (pid {os.getpid()})"
    with search.setting_claimed(child, wait=True) as holder:
        assert holder is None


def test_write_children_keeps_identical_and_refuses_different(tmp_path):
    runs = search.grid({}, [("margin", [0.2])])
    (child,) = search.write_children(str(tmp_path), runs)
    assert json.load(open(os.path.join(child, "params.json"))) == {"margin": 0.2}
    assert search.write_children(str(tmp_path), runs) == [child]
    with open(os.path.join(child, "params.json"), "w") as f:
        json.dump({"margin": 0.3}, f)
    with pytest.raises(UserError, match="exists with other params"):
        search.write_children(str(tmp_path), runs)


@pytest.mark.parametrize("in_the_way", ["margin_0.2", "margin_0.2/params.json"])
def test_write_children_refuses_an_entry_of_the_wrong_kind_in_the_way(tmp_path, in_the_way):
    runs = search.grid({}, [("margin", [0.2])])
    if in_the_way.endswith(".json"):
        (tmp_path / in_the_way).mkdir(parents=True)
    else:
        (tmp_path / in_the_way).write_text("a file")
    with pytest.raises(UserError, match=f"{in_the_way} is in the way of the setting's"):
        search.write_children(str(tmp_path), runs)


def test_a_value_listed_twice_in_an_axis_is_refused():
    with pytest.raises(UserError, match=r"grid axis margin lists a value twice"):
        search.grid({}, [("margin", [0.2, 0.5, 0.2])])


def test_collect_results_and_table(tmp_path):
    for name, p1 in (("b", 0.5), ("a/inner", 0.25)):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / "metrics_eval_best.json").write_text(json.dumps(
            {"epoch": 3, "precision_at_1": p1, "map_at_r": 0.125}))
    (tmp_path / "a" / "inner" / "checkpoints").mkdir()
    (tmp_path / "b" / "metrics_eval_best.json").write_text(json.dumps(
        {"epoch": 3, "precision_at_1": 0.5, "map_at_r": 0.125, "recall_at_8": 0.75,
         "train_minutes": 1.5}))
    (tmp_path / "b" / "metrics_eval_untrained.json").write_text(json.dumps(
        {"epoch": 0, "loss": 0.3, "precision_at_1": 0.9453, "r_precision": 0.4,
         "map_at_r": 0.3245}))
    # A log is not read: rewording its lines cannot empty the table.
    (tmp_path / "b" / "train.log").write_text("epoch 1/2 | 99.0s (+1.0s eval)\n")
    rows = search.collect_results(str(tmp_path))
    assert [name for name, _ in rows] == ["a/inner", "b"]
    table = search.markdown_table(rows).splitlines()
    assert table[0] == ("| experiment | epoch | selected_on | precision_at_1 | r_precision | "
                        "map_at_r | recall_at_2 | recall_at_4 | recall_at_8 | loss | "
                        "train_minutes | untrained_precision_at_1 | untrained_map_at_r |")
    assert table[2] == "| a/inner | 3 | test | 0.2500 |  | 0.1250 |  |  |  |  |  |  |  |"
    assert table[3] == ("| b | 3 | test | 0.5000 |  | 0.1250 |  |  | 0.7500 |  | 1.5 | 0.9453 "
                        "| 0.3245 |")
    # A run with a validation split shows the test figures of its chosen checkpoint.
    (tmp_path / "b" / "metrics_test_best.json").write_text(json.dumps(
        {"epoch": 3, "precision_at_1": 0.375, "map_at_r": 0.0625, "train_minutes": 1.5}))
    table = search.markdown_table(search.collect_results(str(tmp_path))).splitlines()
    assert table[3] == "| b | 3 | validation | 0.3750 |  | 0.0625 |  |  |  |  | 1.5 |  |  |"


@pytest.mark.parametrize("content", ["", "{", "[1, 2]", '{"map_at_r": "high"}',
                                     '{"epoch": true, "map_at_r": 0.5}'])
def test_an_invalid_metrics_file_is_skipped_with_a_warning(tmp_path, caplog, content):
    for name in ("good", "bad"):
        (tmp_path / name).mkdir()
    (tmp_path / "good" / "metrics_eval_best.json").write_text('{"epoch": 1, "map_at_r": 0.5}')
    bad = tmp_path / "bad" / "metrics_eval_best.json"
    bad.write_text(content)
    rows = search.collect_results(str(tmp_path))
    assert [name for name, _ in rows] == ["good"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "\n" not in warnings[0]


def hparams_dashboard(logdir):
    """(run names, HParams session group names) as TensorBoard serves them for ``logdir``."""
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from werkzeug.test import Client

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    plugin = hparams_plugin.HParamsPlugin(base_plugin.TBContext(
        logdir=logdir, multiplexer=multiplexer,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, logdir)))
    request = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN"], "colParams": [],
               "startIndex": 0, "sliceSize": 100}
    response = Client(plugin.get_plugin_apps()["/session_groups"]).post(
        "/session_groups", data=json.dumps(request), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    groups = json.loads(response.get_data())["sessionGroups"]
    return sorted(multiplexer.Runs()), sorted(group["name"] for group in groups)


def test_search_cli_trains_each_setting(tmp_path, tiny_data_dir):
    parent = tmp_path / "search"
    parent.mkdir()
    (parent / "params.json").write_text(json.dumps(dict(
        batch_size=32, num_epochs=1, num_channels=2, embedding_size=4, train_size=240,
        eval_size=100, save_summary_steps=4)))
    # Started from another folder that has a model.py of its own: each setting's training
    # must still find the project's package.
    (tmp_path / "model.py").write_text("raise ImportError('the user model.py was imported')\n")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "search_hyperparams.py"), "--parent_dir",
         str(parent), "--grid", "margin=0.2,0.4", "--data_dir", tiny_data_dir],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for child in ("margin_0.2", "margin_0.4"):
        assert (parent / child / "metrics_eval_best.json").exists()
        assert json.load(open(parent / child / "params.json"))["margin"] == float(child[-3:])
    assert "| margin_0.2 | 1 |" in result.stdout
    runs, session_groups = hparams_dashboard(str(parent))
    # Named by their runs' paths under the logdir opened (here the parent).
    assert session_groups == ["margin_0.2/eval", "margin_0.4/eval"]
    # Every run is a train/ or eval/ folder: no empty run for a model_dir itself.
    assert runs == [f"margin_0.{i}/{kind}" for i in (2, 4) for kind in ("eval", "train")]
    summary = subprocess.run(
        [sys.executable, "synthesize_results.py", "--parent_dir", str(parent)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0 and "| margin_0.4 | 1 |" in summary.stdout
    empty = subprocess.run(
        [sys.executable, "synthesize_results.py", "--parent_dir", str(tmp_path / "none")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "no metrics_eval_best.json" in empty.stderr


def test_two_searches_of_one_grid_share_its_settings_and_both_succeed(tmp_path, tiny_data_dir):
    parent = tmp_path / "search"
    parent.mkdir()
    (parent / "params.json").write_text(json.dumps(dict(TINY, num_epochs=6)))
    command = [sys.executable, os.path.join(REPO, "search_hyperparams.py"), "--parent_dir",
               str(parent), "--grid", "margin=0.2,0.4", "--data_dir", tiny_data_dir]
    # Files, not pipes: nobody reads the first search's output while the second runs.
    with open(tmp_path / "first.out", "w+") as out, open(tmp_path / "first.err", "w+") as err:
        first = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, text=True)
        try:
            # The second search starts while the first one's train.py trains margin_0.2
            # (its train.log appears once that train.py holds the folder).
            deadline = time.monotonic() + 300
            while not (parent / "margin_0.2" / "train.log").exists():
                assert first.poll() is None and time.monotonic() < deadline, err.read()
                time.sleep(0.05)
            second = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                    timeout=600)
            first.wait(timeout=600)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        out.seek(0)
        err.seek(0)
        first_out, first_err = out.read(), err.read()
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert (f"{parent}/margin_0.2: being trained by another search_hyperparams.py; back to it "
            "after the other settings") in second.stdout
    for output in (first_out, second.stdout):
        assert "| margin_0.2 |" in output and "| margin_0.4 |" in output
    for child in ("margin_0.2", "margin_0.4"):
        # Each setting was trained once: the other search found it finished.
        log = (parent / child / "train.log").read_text()
        assert log.count("epoch 1/6 ") == 1, log
