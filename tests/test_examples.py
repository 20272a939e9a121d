"""examples/keras_fit.py: TFA's tutorial flow with model.losses, end to end on tiny data."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_keras_fit_example_trains_scores_and_writes_projector_files(tmp_path, tiny_data_dir):
    output = tmp_path / "projector"
    result = subprocess.run(
        [sys.executable, os.path.join("examples", "keras_fit.py"), "--epochs", "1",
         "--data_dir", tiny_data_dir, "--output_dir", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "test retrieval: precision_at_1" in result.stdout and "map_at_r" in result.stdout
    assert {"metadata.tsv", "sprite.png", "projector_config.pbtxt"} <= set(os.listdir(output))
    with open(output / "metadata.tsv") as f:
        assert len(f.read().splitlines()) == 100
