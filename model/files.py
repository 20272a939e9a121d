"""Writing and reading the small files of a run: every write is atomic.

A file is written to a temporary name in its own folder, flushed to disk, then renamed
over the target (``os.replace`` is atomic on POSIX and Windows): a reader, or a run
killed half-way, sees the old content or the new one, never a truncated file.
"""

import json
import os
import tempfile


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then rename)."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
