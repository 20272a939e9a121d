"""Hyper-parameter grids and the results table of a folder of experiments."""

import itertools
import json
import logging
import os

from . import files
from .errors import UserError
from .params import PARAMS_FILENAME, params_from_dict
from .run_folder import METRICS_FILES, TEST_BEST_FILE

# Recall@1 is precision@1: the table shows Recall@2, 4 and 8 beside it.
RESULT_COLUMNS = ("precision_at_1", "r_precision", "map_at_r", "recall_at_2", "recall_at_4",
                  "recall_at_8", "loss")
UNTRAINED_COLUMNS = ("precision_at_1", "map_at_r")
TABLE_COLUMNS = RESULT_COLUMNS + ("train_minutes",) + tuple(
    f"untrained_{name}" for name in UNTRAINED_COLUMNS)
# Folders a run writes into its model_dir: no experiment below them.
RUN_OUTPUT_DIRS = ("checkpoints", "best", "export", "train", "eval")


def parse_axis(text):
    """``"key=v1,v2"`` -> ``("key", [v1, v2])``; values are JSON (1e-3, true) or bare strings."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise UserError(f"grid axis '{text}' is not KEY=VALUE[,VALUE...]; e.g. margin=0.2,0.5")

    def parse(value):
        try:
            return json.loads(value)
        except ValueError:
            return value

    return key.strip(), [parse(v.strip()) for v in values.split(",")]


def grid(base, axes):
    """Every combination of ``axes`` applied to the ``base`` params dict, validated.

    Args:
        base: dict of params (the parent folder's params.json).
        axes: list of (key, values) pairs.

    Returns:
        list of (folder name, params dict), e.g. ``("learning_rate_0.001-margin_0.2", {...})``.

    Raises:
        UserError: if any combination is not valid params, before anything runs.
    """
    keys = [key for key, _ in axes]
    if len(set(keys)) != len(keys):
        raise UserError(f"a key appears twice in the grid ({', '.join(keys)}); give each once")
    runs = []
    for values in itertools.product(*(values for _, values in axes)):
        changes = dict(zip(keys, values))
        name = "-".join(f"{key}_{value}" for key, value in changes.items())
        params_from_dict({**base, **changes}, source=f"grid setting {name}")
        runs.append((name, {**base, **changes}))
    return runs


def write_children(parent_dir, runs):
    """Create one folder per setting with its params.json; keep an existing identical one."""
    paths = []
    for name, values in runs:
        child = os.path.join(parent_dir, name)
        path = os.path.join(child, PARAMS_FILENAME)
        if os.path.exists(path):
            with open(path) as f:
                try:
                    existing = json.load(f)
                except ValueError:
                    existing = None
            if existing != values:
                raise UserError(f"{path} exists with other params; remove it or choose "
                                "another parent folder")
        else:
            os.makedirs(child, exist_ok=True)
            files.write_text(path, json.dumps(values, indent=4) + "\n")
        paths.append(child)
    return paths


def collect_results(parent_dir, which="best"):
    """Rows ``(experiment, metrics dict)`` for every folder below ``parent_dir`` with results.

    Reads ``metrics_eval_{which}.json`` (its figures, epoch and ``train_minutes``) and,
    when present, ``metrics_eval_untrained.json`` (as ``untrained_*`` columns). For the
    best epoch of a run with a validation split, the figures are the test set's of the
    checkpoint chosen on validation (``metrics_test_best.json``; no untrained columns:
    those were measured on validation), and ``selected_on`` says which split chose the
    epoch; with ``which="last"`` such a run's figures are its validation split's. A file
    that is not a JSON object of figures is skipped with a one-line warning naming it.
    """
    rows = []
    filename = f"metrics_eval_{which}.json"
    for root, dirs, names in os.walk(parent_dir):
        dirs[:] = sorted(d for d in dirs if d not in RUN_OUTPUT_DIRS)
        if filename not in names:
            continue
        values = _read_figures(os.path.join(root, filename))
        if values is None:
            continue
        validated = TEST_BEST_FILE in names  # its eval figures are the validation split's
        if which == "best" and validated:
            values = _read_figures(os.path.join(root, TEST_BEST_FILE))
            if values is None:
                continue
            values["selected_on"] = "validation"
        else:
            if which == "best":
                values["selected_on"] = "test"
            if METRICS_FILES["untrained"] in names:
                untrained = _read_figures(os.path.join(root, METRICS_FILES["untrained"])) or {}
                values.update({f"untrained_{name}": value for name, value in untrained.items()
                               if name in UNTRAINED_COLUMNS})
        rows.append((os.path.relpath(root, parent_dir), values))
    return rows


def _read_figures(path):
    values = files.read_json(path)
    numbers = TABLE_COLUMNS + ("epoch",)
    if values is None or not all(isinstance(values[name], (int, float))
                                 and not isinstance(values[name], bool)
                                 for name in numbers if name in values):
        logging.warning("skipping %s: not a JSON object of figures (damaged or not written by "
                        "train.py); train the run again to rewrite it", path)
        return None
    return values


def markdown_table(rows, columns=TABLE_COLUMNS):
    """A markdown table: one row per experiment, figures to 4 decimals (minutes to 1)."""
    header = ["experiment", "epoch", "selected_on", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in rows:
        cells = [name, str(values.get("epoch", "")), values.get("selected_on", "")]
        cells += ["" if c not in values else f"{values[c]:.1f}" if c == "train_minutes"
                  else f"{values[c]:.4f}" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
