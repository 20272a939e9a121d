"""The one exception type for bad input from the user, and how to name a fix's command."""


class UserError(Exception):
    """Bad input from the user: the message is one line naming the problem and the fix.

    The entry scripts print it and exit with status 2 (see :func:`model.cli.run_cli`);
    nothing on disk is touched.
    """


def command(name):
    """How the user runs the command ``name`` ("train", "evaluate", ...), for messages:
    ``python train.py`` in a clone (the package is ``model``), ``tftriplet-train`` once
    installed (``tftriplet_app``)."""
    if __package__ == "model":
        return f"python {name}.py"
    return "tftriplet-" + name.replace("_", "-")
