"""Hyper-parameter grids and the results table of a folder of experiments."""

import contextlib
import hashlib
import itertools
import json
import logging
import os

from . import files
from .errors import UserError
from .params import PARAMS_FILENAME, params_from_dict
from .run_folder import LOCK_FILE, METRICS_FILES, TEST_BEST_FILE, TEST_UNTRAINED_FILE

# Recall@1 is precision@1: the table shows Recall@2, 4 and 8 beside it.
RESULT_COLUMNS = ("precision_at_1", "r_precision", "map_at_r", "recall_at_2", "recall_at_4",
                  "recall_at_8", "loss")
UNTRAINED_COLUMNS = ("precision_at_1", "map_at_r")
TABLE_COLUMNS = RESULT_COLUMNS + ("train_minutes",) + tuple(
    f"untrained_{name}" for name in UNTRAINED_COLUMNS)
# Folders a run writes into its model_dir: no experiment below them.
RUN_OUTPUT_DIRS = ("checkpoints", "best", "export", "train", "eval", "projector", "cache",
                   "retrieval")
# The longest file name of common file systems (ext4, XFS, Btrfs: 255 bytes).
MAX_NAME_BYTES = 255
# Hex digits of the setting's hash that end a shortened folder name.
_NAME_HASH_DIGITS = 10


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
        list of (folder name, params dict), e.g. ``("learning_rate_0.001-margin_0.2", {...})``;
        see :func:`folder_name`.

    Raises:
        UserError: if any combination is not valid params, before anything runs.
    """
    keys = [key for key, _ in axes]
    if len(set(keys)) != len(keys):
        raise UserError(f"a key appears twice in the grid ({', '.join(keys)}); give each once")
    for key, values in axes:
        if len({json.dumps(value) for value in values}) != len(values):
            raise UserError(f"grid axis {key} lists a value twice ({values}); give each once")
    runs = []
    for values in itertools.product(*(values for _, values in axes)):
        changes = dict(zip(keys, values))
        name = folder_name(changes)
        params_from_dict({**base, **changes}, source=f"grid setting {name}")
        runs.append((name, {**base, **changes}))
    return runs


def folder_name(changes):
    """The child folder of the setting ``changes`` (a dict key -> value): ``key_value``
    joined by ``-``.

    A name that is not one folder name (above :data:`MAX_NAME_BYTES` bytes, or holding a
    slash) is cut to fit and ends with a hash of the whole setting instead, so that it
    stays the same from one search to the next and tells settings apart.
    """
    name = "-".join(f"{key}_{value}" for key, value in changes.items())
    if len(name.encode()) <= MAX_NAME_BYTES and "/" not in name:
        return name
    digest = hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()
    kept = MAX_NAME_BYTES - _NAME_HASH_DIGITS - 1
    # "ignore" drops a character cut in the middle of its UTF-8 bytes.
    start = name.replace("/", "_").encode()[:kept].decode(errors="ignore")
    return f"{start}-{digest[:_NAME_HASH_DIGITS]}"


def write_children(parent_dir, runs):
    """Create one folder per setting with its params.json; keep an existing identical one."""
    paths = []
    for name, values in runs:
        child = os.path.join(parent_dir, name)
        path = os.path.join(child, PARAMS_FILENAME)
        for entry, kind in ((child, "folder"), (path, "file")):
            if os.path.lexists(entry) and os.path.isdir(entry) != (kind == "folder"):
                raise UserError(f"{entry} is in the way of the setting's {kind}; move it away "
                                "or choose another parent folder")
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


@contextlib.contextmanager
def setting_claimed(model_dir, wait=False):
    """Hold the setting folder ``model_dir`` for this search while its train.py runs, unless
    another process trains it.

    Two locks tell: the folder itself, which a search holds while its train.py runs (an
    ``flock`` on the folder, so that a second search on the same grid leaves the setting
    to the first one instead of starting a train.py that would be refused), and the
    run's own lock (:data:`model.run_folder.LOCK_FILE`), held by any train.py, checked
    once the folder is held. Neither is left behind by a killed process.

    Args:
        wait: wait until both are free instead of yielding their holder.

    Yields:
        None when this search holds the setting (until the block ends), else who trains
        it: ``"another search_hyperparams.py"`` or ``"a train.py (pid N)"``.
    """
    import fcntl

    folder = os.open(model_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            held = True
        except BlockingIOError:
            held = False
        except OSError:
            # NFS emulates flock with byte-range locks, which a folder cannot take: there
            # the run lock alone tells.
            held = True
        yield _trainer(model_dir, wait) if held else "another search_hyperparams.py"
    finally:
        os.close(folder)


def _trainer(model_dir, wait):
    """``"a train.py (pid N)"`` while a train.py holds ``model_dir``'s run lock, else None
    (once it is released, with ``wait``)."""
    import fcntl

    try:
        # O_NOFOLLOW: a planted link is for train.py to refuse, in one line.
        lock = os.open(os.path.join(model_dir, LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None  # no run lock yet: nobody has trained here
    try:
        try:
            # Shared and released at once: it only looks. A train.py starting in that
            # instant is refused, as it would be beside another trainer.
            fcntl.flock(lock, fcntl.LOCK_SH | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(lock, 64, 0).decode(errors="replace").strip() or "unknown"
            return f"a train.py (pid {holder})"
        fcntl.flock(lock, fcntl.LOCK_UN)
        return None
    finally:
        os.close(lock)


def collect_results(parent_dir, which="best"):
    """Rows ``(experiment, metrics dict)`` for every folder below ``parent_dir`` with results.

    Reads ``metrics_eval_{which}.json`` (its figures, epoch and ``train_minutes``) and,
    when present, ``metrics_eval_untrained.json`` (as ``untrained_*`` columns). For the
    best epoch of a run with a validation split, the figures are the test set's of the
    checkpoint chosen on validation (``metrics_test_best.json``, and the untrained
    network's test figures, ``metrics_test_untrained.json``), and ``selected_on`` says
    which split chose the epoch; with ``which="last"`` such a run's figures (and
    untrained columns) are its validation split's. A file
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
        untrained_file = METRICS_FILES["untrained"]
        if which == "best" and validated:
            values = _read_figures(os.path.join(root, TEST_BEST_FILE))
            if values is None:
                continue
            values["selected_on"] = "validation"
            untrained_file = TEST_UNTRAINED_FILE
        elif which == "best":
            values["selected_on"] = "test"
        if untrained_file in names:
            untrained = _read_figures(os.path.join(root, untrained_file)) or {}
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
