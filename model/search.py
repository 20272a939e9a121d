"""Hyper-parameter grids and the results table of a folder of experiments."""

import itertools
import json
import os

from model.utils import PARAMS_FILENAME, UserError, params_from_dict

RESULT_COLUMNS = ("precision_at_1", "r_precision", "map_at_r", "loss")


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
                rows.append((os.path.relpath(root, parent_dir), json.load(f)))
    return rows


def markdown_table(rows, columns=RESULT_COLUMNS):
    """A markdown table: one row per experiment, metrics to 4 decimals (epoch as an integer)."""
    header = ["experiment", "epoch", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in rows:
        cells = [name, str(values.get("epoch", ""))]
        cells += [f"{values[c]:.4f}" if c in values else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
