"""What a run writes for TensorBoard (model/summaries.py)."""

import json
import re
import shutil

import tensorflow as tf
from tensorboard.plugins.hparams.hparams_plugin import HParamsPlugin
from werkzeug.test import Client

from conftest import as_tensorboard_serves_it, tiny_params
from model import summaries
from model.params import Params
from tftriplet import triplet_loss


def test_the_hparams_are_every_key_and_the_distance_in_types_the_dashboard_takes():
    values = summaries.hparams_of(Params().replace(
        augment_translate=2, squared=True, train_classes=[0, 1], test_classes=[2, 3]))
    assert set(values) == {*Params().to_dict(), "distance"}
    assert values["augment_translate"] == 2 and values["distance"] == "squared-L2"
    assert values["train_classes"] == "[0, 1]"  # the dashboard takes no lists
    assert values["validation_classes"] == "null"


def test_every_summary_a_strategy_returns_is_named_for_the_dashboard():
    labels = tf.constant([0, 0, 1, 1])
    embeddings = tf.random.stateless_normal((4, 3), seed=(1, 2))
    for strategy, loss in triplet_loss.STRATEGIES.items():
        assert tuple(loss(labels, embeddings, 0.5)[1]) == triplet_loss.SUMMARY_NAMES[strategy]


def post(plugin, route, body):
    """POST a route of the HParams plugin the way the TensorBoard front end does."""
    response = Client(plugin.get_plugin_apps()[route]).post(
        route, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data())


def test_the_dashboard_lists_the_key_columns_first_and_keeps_same_named_runs_apart(tmp_path):
    """TensorBoard's table shows the first five hyper-parameters and the first five
    metrics: they must be those that matter, for runs of two searches under one logdir,
    each run a row of its own (named by its path) with its own figures."""
    written = {}
    for parent, strategy, score in (("a", "batch_all", 0.25), ("b", "batch_hard", 0.75)):
        model_dir = tmp_path / parent / "margin_0.2"
        writer = tf.summary.create_file_writer(str(model_dir / "eval"))
        summaries.write_dashboards(writer, tiny_params(triplet_strategy=strategy))
        summaries.write_scalars(writer, {name: score for name in summaries.metric_names()}, 1)
        writer.close()
        written[f"{parent}/margin_0.2/eval"] = score
    # A copy of a run (to compare with, or as a backup) is a row of its own too.
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    written["copy/margin_0.2/eval"] = written["a/margin_0.2/eval"]
    plugin = as_tensorboard_serves_it(HParamsPlugin, tmp_path)
    experiment = post(plugin, "/experiment", {"experimentName": ""})
    hparams = [info["name"] for info in experiment["hparamInfos"]]
    assert hparams[:5] == sorted(summaries.HPARAMS_FIRST)
    assert set(hparams) == {*Params().to_dict(), "distance"}
    metrics = [(info["name"]["tag"], info.get("displayName")) for info in
               experiment["metricInfos"]]
    assert metrics[:3] == [("precision_at_1", "P@1"), ("r_precision", "R-precision"),
                           ("map_at_r", "MAP@R")]
    assert {"fraction_positive_triplets", "hardest_negative_dist"} <= {tag for tag, _ in metrics}
    groups = post(plugin, "/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"],
        "colParams": [{"metric": {"tag": "map_at_r"}, "order": "ORDER_ASC"}]})["sessionGroups"]
    found = {group["name"]: {value["name"]["tag"]: value["value"]
                             for value in group["metricValues"]} for group in groups}
    assert {name: values["map_at_r"] for name, values in found.items()} == written
    assert found["b/margin_0.2/eval"]["hardest_negative_dist"] == 0.75


def test_the_custom_scalars_tab_charts_every_eval_scalar_in_open_categories(tmp_path):
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin

    for name in ("a", "b"):  # every run writes the layout: TensorBoard merges them
        writer = tf.summary.create_file_writer(str(tmp_path / name / "eval"))
        summaries.write_dashboards(writer, tiny_params())
        writer.close()
    plugin = as_tensorboard_serves_it(CustomScalarsPlugin, tmp_path)
    response = Client(plugin.get_plugin_apps()["/layout"]).get("/layout")
    categories = json.loads(response.get_data())["category"]
    assert categories[0]["title"] == "retrieval (eval)"
    assert not any(category.get("closed") for category in categories)
    charts = [chart for category in categories for chart in category["chart"]]
    assert len(charts) == len({chart["title"] for chart in charts})  # merged, not repeated
    patterns = [re.compile(tag) for chart in charts for tag in chart["multiline"]["tag"]]
    for name in summaries.metric_names():
        assert sum(bool(pattern.search(name)) for pattern in patterns) == 1, name
