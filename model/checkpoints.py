"""Finding and restoring a run's checkpoints, whatever a crash or a damaged file left.

``tf.train.latest_checkpoint`` trusts the folder's ``checkpoint`` state file: a missing
or garbled state file makes a folder full of checkpoints look empty (a rerun would then
silently start from scratch), and a damaged newest checkpoint fails with a raw
TensorFlow error although the previous one is intact. Here the checkpoints are found
from the files themselves (``ckpt-N.index``), checked by reading every tensor (each is
checksummed), and the newest one that reads is used, with one line saying which were
skipped and why.
"""

import glob
import logging
import os
import re
import shutil

import tensorflow as tf

from . import files
from .errors import UserError
from .run_folder import (CHECKPOINT_PREFIX, CHECKPOINT_STATE_FILE, checkpoint_files,
                         checkpoint_number)

# A line of the state file as TensorFlow writes it (paths relative to the folder, or
# absolute; timestamps since TF 2.x).
_STATE_LINE = re.compile(r'^(model_checkpoint_path|all_model_checkpoint_paths|'
                         r'all_model_checkpoint_timestamps|last_preserved_timestamp): '
                         r'"?([^"]*)"?$')
# Restores retried when a checkpoint disappears while it is read (a trainer pruning old
# checkpoints under a reader).
_ATTEMPTS = 5


class Unreadable(UserError):
    """A folder holds checkpoint files but none of them reads."""

    def __init__(self, folder, details):
        super().__init__(f"{folder} holds checkpoint files but none of them can be read "
                         f"({details}); restore them from a backup, or move the folder away "
                         "to start over")
        self.folder, self.details = folder, details


def number(prefix):
    """N of the checkpoint at ``prefix`` (``.../ckpt-N``): the epoch it was saved at."""
    return int(prefix.rsplit("-", 1)[1])


def _without_index(folder):
    """Prefixes of the checkpoints in ``folder`` that have data files but no index file."""
    names = checkpoint_files(folder)
    numbers = {checkpoint_number(name) for name in names}
    indexed = {checkpoint_number(name) for name in names if name.endswith(".index")}
    return [os.path.join(folder, f"{CHECKPOINT_PREFIX}-{number}")
            for number in sorted(numbers - indexed)]


def candidates(folder):
    """Prefixes of the checkpoints in ``folder`` that have an index file, newest first."""
    numbers = {checkpoint_number(name) for name in checkpoint_files(folder)
               if name.endswith(".index")}
    return [os.path.join(folder, f"{CHECKPOINT_PREFIX}-{number}")
            for number in sorted(numbers, reverse=True)]


def damage(prefix):
    """Why the checkpoint at ``prefix`` cannot be read (None when every tensor reads back)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_dtype_map():
            reader.get_tensor(key)
    except Exception as err:  # noqa: BLE001 - the reader raises IndexError, OpError, ...
        return " ".join(str(getattr(err, "message", err)).split())[:200] or type(err).__name__
    return None


def _listed_in_state(folder):
    """The checkpoint paths that ``folder/checkpoint`` names (the newest first), or None
    when it is missing or not what TensorFlow writes. Parsed here rather than by
    ``tf.train.get_checkpoint_state``, which prints warnings for a damaged file."""
    try:
        with open(os.path.join(folder, CHECKPOINT_STATE_FILE), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    newest, listed = None, []
    for line in lines:
        match = _STATE_LINE.match(line)
        if not match:
            return None
        key, value = match.groups()
        if key == "model_checkpoint_path":
            newest = value
        elif key == "all_model_checkpoint_paths":
            listed.append(value)
    if newest is None:
        return None
    return [os.path.join(folder, path) for path in [newest, *listed]]


def repair_state(folder):
    """Rewrite ``folder/checkpoint`` from the checkpoints present when it is missing,
    damaged or names a checkpoint that is not there (CheckpointManager reads it to know
    which old checkpoints to delete; a bad one would make it forget them)."""
    found = candidates(folder)
    if not found:
        return
    listed = _listed_in_state(folder)
    if listed and all(os.path.exists(path + ".index") for path in listed):
        return
    names = [os.path.basename(path) for path in found]  # newest first
    files.write_text(os.path.join(folder, CHECKPOINT_STATE_FILE),
                     f'model_checkpoint_path: "{names[0]}"\n' + "".join(
                         f'all_model_checkpoint_paths: "{name}"\n' for name in reversed(names)))


def remove_leftovers(folder):
    """Remove what TensorFlow's checkpoint writer leaves when killed mid-write: the
    ``<prefix>_temp/`` folder it writes the shards into before renaming them."""
    for leftover in glob.glob(os.path.join(glob.escape(folder), f"{CHECKPOINT_PREFIX}-*_temp")):
        shutil.rmtree(leftover, ignore_errors=True)


def copy_checkpoint(prefix, folder):
    """Copy the checkpoint at ``prefix`` into ``folder`` (created if needed) and list it
    in the folder's state file. Each file is copied atomically, the index last: a copy
    killed half-way leaves no index, so no checkpoint that looks complete."""
    os.makedirs(folder, exist_ok=True)
    names = sorted(glob.glob(glob.escape(prefix) + ".*"), key=lambda path: path.endswith(".index"))
    for path in names:
        with files.replaced_atomically(os.path.join(folder, os.path.basename(path))) as tmp:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
    repair_state(folder)


def value(prefix, name):
    """The value saved for the ``tf.train.Checkpoint`` attribute ``name`` (a variable) in
    the checkpoint at ``prefix``, or None if it has none or cannot be read."""
    try:
        return tf.train.load_checkpoint(prefix).get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")
    except Exception:  # noqa: BLE001 - absent key, damaged file: no value
        return None


def newest_value(folder, name):
    """:func:`value` of the newest readable checkpoint in ``folder`` (None if none)."""
    for prefix in candidates(folder):
        if damage(prefix) is None:
            return value(prefix, name)
    return None


def newest_readable(folder):
    """The prefix of the newest checkpoint in ``folder`` that reads (every tensor), with one
    warning line naming the newer ones skipped and why; None when ``folder`` holds no
    checkpoint file at all.

    Raises:
        Unreadable: the folder holds checkpoint files but none of them reads.
    """
    # Checkpoints that lost their index file are skipped too, and said so.
    skipped = [(prefix, "no index file") for prefix in _without_index(folder)]
    for prefix in candidates(folder):
        reason = damage(prefix)
        if reason is None:
            newer = [(path, why) for path, why in skipped if number(path) > number(prefix)]
            if newer:
                logging.warning("Skipped %s; using %s instead",
                                "; ".join(f"{path} ({why})" for path, why in newer), prefix)
            return prefix
        skipped.append((prefix, reason))
    if not checkpoint_files(folder):
        return None
    raise Unreadable(folder, "; ".join(f"{os.path.basename(path)}: {why}"
                                       for path, why in skipped) or "no index file")


def restore(checkpoint, folder, check=None):
    """Restore ``checkpoint`` (a ``tf.train.Checkpoint``) from the newest readable
    checkpoint in ``folder`` (:func:`newest_readable`).

    Args:
        check: called with the prefix before its tensors are loaded (e.g. to refuse a
            checkpoint of another network with a clear message rather than a shape error).

    Returns:
        the prefix restored, or None when ``folder`` holds no checkpoint file at all.

    Raises:
        UserError: when the folder holds checkpoint files but none of them can be read.
    """
    for _ in range(_ATTEMPTS):
        prefix = newest_readable(folder)
        if prefix is None:
            return None
        if check is not None:
            check(prefix)
        try:
            checkpoint.restore(prefix).expect_partial()
            return prefix
        except tf.errors.NotFoundError:  # deleted between the check and the read: again
            continue
    raise UserError(f"the checkpoints of {folder} kept disappearing while they were read; "
                    "stop the process that deletes them, then run again")
