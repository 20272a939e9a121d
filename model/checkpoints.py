"""Finding and restoring a run's checkpoints, whatever a crash or a damaged file left.

``tf.train.latest_checkpoint`` trusts the folder's ``checkpoint`` state file: a missing
or garbled state file makes a folder full of checkpoints look empty (a rerun would then
silently start from scratch), and a damaged newest checkpoint fails with a raw
TensorFlow error although the previous one is intact. Here the checkpoints are found
from the files themselves (``ckpt-N.index``), checked by reading every tensor (each is
checksummed), and the newest one that reads is used, with one line saying which were
skipped and why.
"""

import logging
import os

import tensorflow as tf

from .errors import UserError
from .run_folder import CHECKPOINT_PREFIX, checkpoint_files, checkpoint_number

STATE_FILE = "checkpoint"
# Restores retried when a checkpoint disappears while it is read (a trainer pruning old
# checkpoints under a reader).
_ATTEMPTS = 5


def _number(prefix):
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


def repair_state(folder):
    """Rewrite ``folder/checkpoint`` from the checkpoints present when it is missing,
    unreadable or names a checkpoint that is not there (CheckpointManager reads it to
    know which old checkpoints to delete; a bad one would make it forget them)."""
    found = candidates(folder)
    if not found:
        return
    state = None
    try:
        state = tf.train.get_checkpoint_state(folder)
    except (tf.errors.OpError, ValueError):
        pass
    listed = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and all(
            os.path.exists(path + ".index") for path in listed):
        return
    tf.compat.v1.train.update_checkpoint_state(
        folder, found[0], all_model_checkpoint_paths=list(reversed(found)))


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


def restore(checkpoint, folder, check=None):
    """Restore ``checkpoint`` (a ``tf.train.Checkpoint``) from the newest readable
    checkpoint in ``folder``.

    Args:
        check: called with the prefix before its tensors are loaded (e.g. to refuse a
            checkpoint of another network with a clear message rather than a shape error).

    Returns:
        the prefix restored, or None when ``folder`` holds no checkpoint file at all.

    Raises:
        UserError: when the folder holds checkpoint files but none of them reads.
    """
    for _ in range(_ATTEMPTS):
        # Checkpoints that lost their index file are skipped too, and said so.
        skipped = [(prefix, "no index file") for prefix in _without_index(folder)]
        for prefix in candidates(folder):
            reason = damage(prefix)
            if reason is None:
                if check is not None:
                    check(prefix)
                try:
                    checkpoint.restore(prefix).expect_partial()
                except tf.errors.NotFoundError:  # deleted between the check and the read
                    break
                newer = [(path, why) for path, why in skipped
                         if _number(path) > _number(prefix)]
                if newer:
                    logging.warning("Skipped %s; restored %s instead",
                                    "; ".join(f"{path} ({why})" for path, why in newer),
                                    prefix)
                return prefix
            if os.path.exists(prefix + ".index"):
                skipped.append((prefix, reason))
        else:
            break
    if checkpoint_files(folder):
        details = "; ".join(f"{os.path.basename(path)}: {why}" for path, why in skipped)
        raise UserError(
            f"{folder} holds checkpoint files but none of them can be read "
            f"({details or 'no index file'}); restore them from a backup, or move the folder "
            "away to start over")
    return None
