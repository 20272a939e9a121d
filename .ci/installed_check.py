"""A new user's first minutes with the installed wheel (run by .ci/run from an empty folder).

The folder gets a model.py of its own first: neither the library nor the commands may
import it. Then: the library's TensorFlow Addons names, two model.fit steps with
TripletSemiHardLoss, a .keras round trip, and the installed commands (--help; one-epoch
runs of tftriplet-train and tftriplet-search-hyperparams on the MNIST installed with the
package; tftriplet-evaluate).
"""

import importlib.util
import json
import os
import subprocess
import sys

with open("model.py", "w") as f:
    f.write("USERS_OWN = True\n")
sys.path.insert(0, os.getcwd())

import model  # noqa: E402  (the user's)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tftriplet  # noqa: E402
from tftriplet import TripletHardLoss, TripletSemiHardLoss  # noqa: E402

assert model.USERS_OWN and os.path.dirname(model.__file__) == os.getcwd(), model.__file__
assert "site-packages" in tftriplet.__file__, tftriplet.__file__
# Installed with the cpu extra only: the library must not need the picture's libraries.
assert importlib.util.find_spec("openTSNE") is None, "openTSNE came without the viz extra"
print(f"tftriplet {tftriplet.__version__} from {os.path.dirname(tftriplet.__file__)}")

rng = np.random.default_rng(0)
images = rng.random((64, 8), dtype=np.float32)
labels = rng.integers(0, 4, 64)
net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
                        keras.layers.UnitNormalization()])
net.compile(optimizer="adam", loss=TripletSemiHardLoss())
history = net.fit(images, labels, batch_size=32, epochs=1, verbose=0)
assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
net.save("net.keras")
loaded = keras.models.load_model("net.keras")
assert isinstance(loaded.loss, TripletSemiHardLoss), loaded.loss
np.testing.assert_allclose(loaded.predict(images, verbose=0), net.predict(images, verbose=0))
assert float(TripletHardLoss()(labels[:4], images[:4, :2])) >= 0
print("model.fit with TripletSemiHardLoss, .keras saved and reloaded")

commands = ["train", "evaluate", "visualize-embeddings", "embed", "search-hyperparams",
            "synthesize-results", "retrieve"]
for command in commands:
    result = subprocess.run([f"tftriplet-{command}", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "usage: tftriplet-" in result.stdout, result
# The commands answer --help before importing TensorFlow (so it is instant).
code = ("import sys\nfrom tftriplet_app.commands import train\n"
        "try:\n    train.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow imported for --help'\n")
result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120)
assert result.returncode == 0, result.stderr
print("--help of", ", ".join(f"tftriplet-{command}" for command in commands))

# One quick epoch on the installed MNIST: a small network, a small eval set. With the
# user's folder on PYTHONPATH too: the application must not pick up their model.py.
TINY = {"num_epochs": 1, "num_channels": 4, "embedding_size": 8, "batch_size": 256,
        "eval_size": 1000}
ENV = dict(os.environ, PYTHONPATH=os.getcwd())


def command(*args):
    result = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)
    print(result.stdout + result.stderr)
    assert result.returncode == 0, (args, result.returncode)
    return result.stdout


for folder in ("run", "search"):
    os.makedirs(folder)
    with open(os.path.join(folder, "params.json"), "w") as f:
        json.dump(TINY, f)
command("tftriplet-train", "--model_dir", "run")
with open(os.path.join("run", "metrics_eval_last.json")) as f:
    metrics = json.load(f)
assert metrics["precision_at_1"] > 0.5, metrics
command("tftriplet-evaluate", "--model_dir", "run")
assert os.path.exists(os.path.join("run", "metrics_eval.json"))
# The search trains each setting in a fresh interpreter: it must find the installed app.
table = command("tftriplet-search-hyperparams", "--parent_dir", "search", "--grid", "margin=0.3")
assert "| margin_0.3 | 1 |" in table, table
print(f"tftriplet-train, -evaluate, -search-hyperparams: P@1 {metrics['precision_at_1']:.4f}")
