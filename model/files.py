"""Writing and reading the small files of a run (every write is atomic), and its lock.

A file is written to a temporary name in its own folder, flushed to disk, then renamed
over the target (``os.replace`` is atomic on POSIX and Windows): a reader, or a run
killed half-way, sees the old content or the new one, never a truncated file.
"""

import contextlib
import functools
import glob
import json
import os
import tempfile

from . import test_hooks
from .errors import UserError


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then rename)."""
    write_bytes(path, text.encode())


def write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    with replaced_atomically(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def replaced_atomically(path):
    """A temporary file name beside ``path``, renamed over ``path`` when the block ends
    without an exception (removed otherwise).

    The name holds this process's id: temporary files of writers killed before their
    rename are removed by the next write of the same file, a live writer's are kept.
    """
    folder = os.path.dirname(path) or "."
    prefix = f".{os.path.basename(path)}."
    _remove_dead_writers_files(folder, prefix)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp", dir=folder)
    # mkstemp makes the file private (0600); results are meant to be shared like any
    # file the user creates, so they follow the umask as open() would.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield tmp
        test_hooks.reached(f"before_replace:{os.path.basename(path)}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@functools.lru_cache(maxsize=None)
def _umask():
    """The process's umask (read once: reading it means setting it, briefly)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_dead_writers_files(folder, prefix):
    """Remove the temporary files of writes killed before their rename (``PREFIX<pid>.*.tmp``
    whose process is gone); another live writer's file is left alone."""
    for leftover in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*.tmp")):
        pid = os.path.basename(leftover)[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, another user's
        try:
            os.remove(leftover)
        except FileNotFoundError:
            pass


def write_json(path, values):
    """Write a dict of plain values as pretty JSON (sorted keys), atomically."""
    write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) else None


@contextlib.contextmanager
def exclusive_lock(folder, lock_name, what="train.py"):
    """Hold an exclusive lock on ``folder`` (through its file ``lock_name``) for the block.

    ``fcntl.flock``: the operating system releases it when the process ends, however it
    ends (a SIGKILL cannot leave a stale lock), and the file holds the holder's PID so
    that a second process can name it. Not re-entrant: a second claim, even from the
    same process, is refused.

    Raises:
        UserError: the lock is held already.
    """
    import fcntl

    path = os.path.join(folder, lock_name)
    try:
        # O_NOFOLLOW: a symbolic link planted as the lock file would have the pid written
        # into (and the file truncated) wherever it points.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        what_is_there = "a symbolic link" if os.path.islink(path) else err.strerror
        raise UserError(f"cannot use {path} as the lock file ({what_is_there}); remove it, "
                        "then run again") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"{folder} is in use by another {what} (pid {holder}); wait for it "
                            "to finish or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        test_hooks.reached("locked")
        yield
    finally:
        os.close(fd)
