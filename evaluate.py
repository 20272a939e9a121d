"""Evaluate a trained model on the test set and write MODEL_DIR/metrics_eval.json.

Its code is model/commands/evaluate.py; installed, the same command is
tftriplet-evaluate. `python evaluate.py --help` explains it.
"""

import sys

from model.commands import evaluate

if __name__ == "__main__":
    sys.exit(evaluate.run())
