"""The one exception type for bad input from the user, and how messages name things."""

import os


class UserError(Exception):
    """Bad input from the user: the message is one line naming the problem and the fix.

    The entry scripts print it and exit with status 2 (see :func:`model.cli.run_cli`);
    nothing on disk is touched.
    """


# Run from a clone (the application is the package ``model`` beside the scripts), not
# from an installed wheel (``tftriplet_app``).
FROM_CLONE = __package__ == "model"


def command(name):
    """How the user runs the command ``name`` ("train", "evaluate", ...), for messages:
    ``python train.py`` in a clone, ``tftriplet-train`` once installed."""
    if FROM_CLONE:
        return f"python {name}.py"
    return "tftriplet-" + name.replace("_", "-")


# Names a message lists before "...".
_SHOWN = 3


def first_names(names):
    """The first few of ``names``, comma-separated, with ", ..." when there are more."""
    names = [str(name) for name in names]
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")


def printable(path):
    """``path`` as it can be printed and logged: bytes that are not UTF-8 (a name written
    in another encoding) as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(path):
    """Whether ``path`` (a str from the file system) was UTF-8 on disk."""
    # Python decodes the bytes of a name that are not UTF-8 to lone surrogates.
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_utf8(path):
    """Refuse a path TensorFlow cannot open: one that is not UTF-8.

    Raises:
        UserError: naming the path (escaped) and the fix.
    """
    if not is_utf8(path):
        raise UserError(f"{printable(path)}: the path is not UTF-8, which TensorFlow needs; "
                        "rename the folders on it in UTF-8")
