"""SavedModel export and embed.py (model/export.py)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from model import evaluation, export, run_folder
from model.params import load_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_export_embeds_uint8_and_float_like_the_model(trained_run):
    model_dir, _ = trained_run
    params = load_params(model_dir)
    model, _ = evaluation.restore_model(model_dir, params)
    module = export.load_exported(model_dir)
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    expected = evaluation.embed_images(model, images, params)
    for batch in (images, images[..., None], images / np.float32(255),
                  (images / np.float32(255))[..., None]):
        np.testing.assert_allclose(module.embed(tf.constant(batch)).numpy(), expected,
                                   rtol=1e-5, atol=1e-5)
    serving = module.signatures["serving_default"]
    output = list(serving(tf.constant(images[..., None] / np.float32(255))).values())[0]
    np.testing.assert_allclose(output.numpy(), expected, rtol=1e-5, atol=1e-5)
    verification = json.load(open(os.path.join(model_dir, run_folder.VERIFICATION_FILE)))
    assert 0.5 <= verification["held_out_accuracy"] <= 1 and verification["threshold"] > 0


# Without a recorded checksum (older exports) only what stops the proto parsing is seen.
@pytest.mark.parametrize("damage,recorded", [
    ("truncated", True), ("one byte changed", True), ("deleted", True),
    ("truncated", False), ("deleted", False)])
def test_a_damaged_graph_file_makes_the_export_incomplete(trained_run, tmp_path, damage,
                                                          recorded):
    """train.py re-exports when exported_epoch is None: it must see a damaged
    saved_model.pb, whether source.json records its checksum or (older exports) not."""
    export_dir = tmp_path / run_folder.EXPORT_DIR
    shutil.copytree(os.path.join(trained_run[0], run_folder.EXPORT_DIR), export_dir)
    source = json.loads((export_dir / export.SOURCE_FILE).read_text())
    assert set(source) == {"epoch", "sha256"}
    if not recorded:
        (export_dir / export.SOURCE_FILE).write_text(json.dumps({"epoch": source["epoch"]}))
    assert export.exported_epoch(str(tmp_path)) == source["epoch"]
    graph = export_dir / export.GRAPH_FILE
    data = bytearray(graph.read_bytes())
    if damage == "truncated":
        graph.write_bytes(data[:len(data) // 2])
    elif damage == "one byte changed":
        data[len(data) // 3] ^= 0x01
        graph.write_bytes(bytes(data))
    else:
        graph.unlink()
    assert export.exported_epoch(str(tmp_path)) is None


def write_png(path, array):
    tf.io.write_file(str(path), tf.io.encode_png(array))
    return str(path)


@pytest.mark.e2e
def test_embed_cli_two_images(trained_run, tmp_path):
    model_dir, _ = trained_run
    rng = np.random.default_rng(2)
    paths = [write_png(tmp_path / f"{i}.png", rng.integers(0, 256, (28, 28, 1), dtype=np.uint8))
             for i in range(2)]
    result = subprocess.run([sys.executable, "embed.py", "--model_dir", model_dir, *paths],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(paths[0] + ": [") and len(lines[0].split(",")) == 8
    assert "threshold" in lines[2] and ("same" in lines[2] or "different" in lines[2])
    bad = subprocess.run([sys.executable, "embed.py", "--model_dir", model_dir,
                          str(tmp_path / "missing.png")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no such file" in bad.stderr
