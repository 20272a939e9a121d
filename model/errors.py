"""The one exception type for bad input from the user, and how messages name things."""


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
