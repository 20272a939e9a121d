"""Hyper-parameter grids and the results table of a folder of experiments."""

import itertools
import json
import os
import re

from model.utils import PARAMS_FILENAME, UserError, params_from_dict

RESULT_COLUMNS = ("precision_at_1", "r_precision", "map_at_r", "loss")
# What training.train_and_evaluate logs to train.log (see its logging.info calls).
_EPOCH_TIMES = re.compile(r"\| ([0-9.]+)s \(\+([0-9.]+)s eval\)$", re.MULTILINE)
_UNTRAINED = re.compile(r"Untrained network: .*precision_at_1 ([0-9.]+) .*map_at_r ([0-9.]+)")


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
            with open(path, "w") as f:
                json.dump(values, f, indent=4)
                f.write("\n")
        paths.append(child)
    return paths


def collect_results(parent_dir, which="best"):
    """Rows ``(experiment, metrics dict)`` for every folder below ``parent_dir`` with results."""
    rows = []
    filename = f"metrics_eval_{which}.json"
    for root, dirs, files in os.walk(parent_dir):
        dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "best", "export",
                                                      "train", "eval"))
        if filename in files:
            with open(os.path.join(root, filename)) as f:
                values = json.load(f)
            values.update(_log_summary(os.path.join(root, "train.log")))
            rows.append((os.path.relpath(root, parent_dir), values))
    return rows


def _log_summary(path):
    """Training time and untrained figures of a run, from the lines its train.log holds.

    Returns:
        dict with ``train_minutes`` (training + evaluation of every completed epoch,
        so a resumed run does not count its downtime) and ``untrained_precision_at_1``,
        ``untrained_map_at_r`` when logged.
    """
    try:
        with open(path) as f:
            log = f.read()
    except OSError:
        return {}
    summary = {}
    times = [float(train) + float(evaluation) for train, evaluation in _EPOCH_TIMES.findall(log)]
    if times:
        summary["train_minutes"] = sum(times) / 60
    untrained = _UNTRAINED.search(log)
    if untrained:
        summary["untrained_precision_at_1"] = float(untrained.group(1))
        summary["untrained_map_at_r"] = float(untrained.group(2))
    return summary


def markdown_table(rows, columns=RESULT_COLUMNS + ("train_minutes", "untrained_precision_at_1",
                                                  "untrained_map_at_r")):
    """A markdown table: one row per experiment, figures to 4 decimals (minutes to 1)."""
    header = ["experiment", "epoch", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in rows:
        cells = [name, str(values.get("epoch", ""))]
        cells += ["" if c not in values else f"{values[c]:.1f}" if c == "train_minutes"
                  else f"{values[c]:.4f}" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
