"""What a run writes for TensorBoard (model/summaries.py)."""

from model import summaries
from model.params import Params


def test_the_hparams_are_the_core_keys_the_distance_and_whatever_differs_from_defaults():
    assert set(summaries.hparams_of(Params())) == {*summaries.HPARAMS_ALWAYS, "distance"}
    values = summaries.hparams_of(Params().replace(
        augment_translate=2, squared=True, train_classes=[0, 1], test_classes=[2, 3]))
    assert values["augment_translate"] == 2 and values["distance"] == "squared-L2"
    assert values["train_classes"] == "[0, 1]"  # the dashboard takes no lists
    assert "augment_crop" not in values and "seed" not in values


def test_same_named_runs_of_two_searches_get_two_session_names(tmp_path):
    names = {summaries.session_name(str(tmp_path / parent / "margin_0.2"))
             for parent in ("a", "b")}
    assert names == {"a/margin_0.2", "b/margin_0.2"}
