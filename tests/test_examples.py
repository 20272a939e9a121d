"""examples/keras_fit.py: TFA's tutorial flow with tftriplet's losses, end to end on tiny data."""

import os
import subprocess
import sys

import pytest

# End to end: scripts in subprocesses and whole trainings (pytest -m "not e2e" skips them).
pytestmark = pytest.mark.e2e

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


def test_make_colour_mnist_writes_class_folders_the_app_reads(tmp_path, tiny_data_dir):
    out = tmp_path / "colour"
    command = [sys.executable, os.path.join("examples", "make_colour_mnist.py"), "--out",
               str(out), "--data_dir", tiny_data_dir, "--train_per_class", "4",
               "--test_per_class", "2"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(out / "train"))
    assert names == ["0_zero", "1_one", "2_two", "3_three", "4_four", "5_five", "6_six",
                     "7_seven", "8_eight", "9_nine"]  # digit order: the legend's order
    assert sorted(os.listdir(out / "test")) == names
    seven = sorted(os.listdir(out / "train" / "7_seven"))
    assert len(seven) == 4 and {name.rsplit(".", 1)[1] for name in seven} == {"jpg", "png"}
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "already holds a train/ folder" in again.stderr


def test_offline_triplets_example_prints_both_runs_side_by_side(tiny_data_dir):
    result = subprocess.run(
        [sys.executable, os.path.join("examples", "offline_triplets.py"), "--seconds", "2",
         "--data_dir", tiny_data_dir],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("| training (2 s each) | steps | P@1 | R-precision | MAP@R |")[1]
    rows = [line for line in table.splitlines() if line.startswith("| o")]
    assert [row.split(" | ")[0] for row in rows] == ["| offline random triplets",
                                                     "| online batch-all"]
    for row in rows:
        steps, *figures = row.strip("| ").split(" | ")[1:]
        assert int(steps) > 0 and all(0.0 <= float(value) <= 1.0 for value in figures)
