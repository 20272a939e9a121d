"""The run folder (``model_dir``): its layout, claiming it, and the guard on resuming it.

Layout (``params.json`` is the user's; everything else is written by a run):

    params_resolved.json    params with defaults filled in, plus software versions
    train.log               one line per epoch
    checkpoints/            model, optimizer, counters, best score and params, every epoch
    best/                   the checkpoint with the best eval MAP@R
    train/, eval/           TensorBoard event files (eval/ also holds the HParams record)
    metrics_eval_untrained.json, metrics_eval_last.json, metrics_eval_best.json
    metrics_test_best.json  with a validation split: the test figures of the best checkpoint
    metrics_test_untrained.json  and those of the untrained network
    export/, verification.json   the final network and its same / different threshold
    dataset.json            the data the run reads (model.datasets); cache/ its decoded images
    retrieval/              indexes of the galleries retrieve.py searched (model.retrieval)
    projector/              TensorBoard projector files of visualize_embeddings.py
    .lock                   held by the process training in the folder

Every name of that layout is defined here, once. The module loads without TensorFlow,
so a command refuses a folder it cannot use before spending seconds importing it.
"""

import contextlib
import logging
import os
import re

from . import files
from .errors import UserError, first_names
from .params import RESOLVED_PARAMS_FILENAME, Params

TRAIN_LOG = "train.log"
SUMMARY_DIRS = {"train": "train", "eval": "eval"}
CHECKPOINT_DIRS = {"latest": "checkpoints", "best": "best"}
CHECKPOINT_PREFIX = "ckpt"
# TensorFlow's state file in each checkpoint folder: which checkpoints it keeps.
CHECKPOINT_STATE_FILE = "checkpoint"
METRICS_FILES = {kind: f"metrics_eval_{kind}.json" for kind in ("untrained", "last", "best")}
# With a validation split: the test figures of the checkpoint chosen on it, and of the
# untrained network (the eval files then hold the validation split's).
TEST_BEST_FILE = "metrics_test_best.json"
TEST_UNTRAINED_FILE = "metrics_test_untrained.json"
EXPORT_DIR = "export"
VERIFICATION_FILE = "verification.json"
DATASET_FILE = "dataset.json"
CACHE_DIR = "cache"
RETRIEVAL_DIR = "retrieval"
PROJECTOR_DIR = "projector"
LOCK_FILE = ".lock"

_FOLDERS = (*CHECKPOINT_DIRS.values(), *SUMMARY_DIRS.values(), EXPORT_DIR, CACHE_DIR,
            RETRIEVAL_DIR, PROJECTOR_DIR)
_FILES = (TRAIN_LOG, RESOLVED_PARAMS_FILENAME, *METRICS_FILES.values(), TEST_BEST_FILE,
          TEST_UNTRAINED_FILE, VERIFICATION_FILE, DATASET_FILE)

# Keys that may change between a run and its resumption without changing what the
# checkpoints mean (e.g. train for more epochs). num_labels only bounds the labels and P
# (runs saved before it was taken from the data hold the old default, 10); a change of
# the classes themselves is caught by dataset.json.
RESUMABLE_CHANGES = ("num_epochs", "save_summary_steps", "keep_checkpoint_max", "cache",
                     "num_parallel_calls", "num_labels")

_NUMBERED_CHECKPOINT = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)\.")


def metrics_path(model_dir, kind):
    """The path of ``metrics_eval_<kind>.json`` (kind: untrained, last or best)."""
    return os.path.join(model_dir, METRICS_FILES[kind])


def checkpoint_number(name):
    """N of a checkpoint file named ``ckpt-N.<suffix>``; None for any other name."""
    match = _NUMBERED_CHECKPOINT.match(name)
    return int(match.group(1)) if match else None


def checkpoint_files(folder):
    """Names of the checkpoint files (``ckpt-N.*``) in ``folder``; [] if it does not exist."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name for name in names if checkpoint_number(name) is not None)


def holds_checkpoints(model_dir):
    """Whether ``checkpoints/`` or ``best/`` holds any checkpoint file."""
    return any(checkpoint_files(os.path.join(model_dir, folder))
               for folder in CHECKPOINT_DIRS.values())


def check_writable(model_dir):
    """Create ``model_dir`` if needed; refuse a path that is a file or a read-only folder."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise UserError(f"--model_dir {model_dir} is a file, not a folder; pass the experiment "
                        "folder that holds params.json")
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {model_dir} ({err.strerror}); choose a folder you can "
                        "write to") from None
    if not os.access(model_dir, os.W_OK | os.X_OK):
        raise UserError(f"{model_dir} is read-only; make it writable (chmod u+w) or copy the "
                        "experiment to a folder you can write to")


def check_layout(model_dir):
    """Refuse a folder where a name of the layout is taken by the wrong kind of entry (a
    file named ``checkpoints``, a folder named ``train.log``): a run would otherwise fail
    half-way, or start over beside checkpoints it cannot see. Checked before anything is
    written."""
    for name in _FOLDERS:
        path = os.path.join(model_dir, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise UserError(f"{path} is not a folder, but the run keeps its {name}/ there; "
                            "move it away (nothing was changed), then run again")
    for name in _FILES:
        path = os.path.join(model_dir, name)
        if os.path.isdir(path):
            raise UserError(f"{path} is a folder, but the run writes its file {name} there; "
                            "move it away (nothing was changed), then run again")
    for folder in CHECKPOINT_DIRS.values():
        for name in [*checkpoint_files(os.path.join(model_dir, folder)), CHECKPOINT_STATE_FILE]:
            path = os.path.join(model_dir, folder, name)
            if os.path.isdir(path):
                raise UserError(f"{path} is a folder where a checkpoint file belongs; move it "
                                "away (nothing was changed), then run again")
    # The other files are replaced (a link is replaced, not followed); the log is appended.
    log = os.path.join(model_dir, TRAIN_LOG)
    if os.path.islink(log):
        raise UserError(f"{log} is a symbolic link, and the run appends its log to it (it never "
                        "writes through a link); replace it with a plain file, then run again")


@contextlib.contextmanager
def claimed(model_dir):
    """Hold ``model_dir`` for one training process: the folder is checked writable, locked
    (:func:`model.files.exclusive_lock`), and the log appended to its ``train.log`` for
    the duration of the block.

    Locked before the log is opened: a refused second process writes nothing there.
    """
    check_writable(model_dir)
    with files.exclusive_lock(model_dir, LOCK_FILE):
        check_layout(model_dir)
        # delay: the file appears with its first line.
        log_file = logging.FileHandler(os.path.join(model_dir, TRAIN_LOG), delay=True)
        log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger = logging.getLogger()
        logger.addHandler(log_file)
        try:
            yield
        finally:
            logger.removeHandler(log_file)
            log_file.close()


def check_same_classes(model_dir, class_names):
    """Refuse to resume a run trained on other classes than ``class_names`` (from
    ``dataset.json``), before anything is written. The params are checked against the
    checkpoint's own copy (:func:`model.state.resume_point`).

    Raises:
        UserError: naming the classes and the fix.
    """
    if not holds_checkpoints(model_dir):
        return
    saved_data = files.read_json(os.path.join(model_dir, DATASET_FILE))
    if saved_data and saved_data.get("class_names") != class_names:
        old = saved_data.get("class_names") or []
        raise UserError(
            f"{model_dir} was trained on {len(old)} classes ({first_names(old)}) "
            f"but the data now has {len(class_names)} ({first_names(class_names)}); pass the "
            "--data_dir it was trained on, or train in a new folder")


def check_same_params(saved, params, model_dir):
    """Refuse ``params`` when they differ from the ``saved`` dict in a key that changes
    what the checkpoints mean (:data:`RESUMABLE_CHANGES` may change)."""
    current = params.to_dict()
    # Keys added since the run was saved held their (unchanged) defaults then.
    saved = {**Params().to_dict(), **saved}
    changed = sorted(k for k in set(saved) | set(current)
                     if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise UserError(
            f"{model_dir} already holds a run trained with other params ({diffs}); "
            "copy params.json to a new folder for a new experiment, or undo the change to resume")
