"""The one exception type for bad input from the user."""


class UserError(Exception):
    """Bad input from the user: the message is one line naming the problem and the fix.

    The entry scripts print it and exit with status 2 (see :func:`model.cli.run_cli`);
    nothing on disk is touched.
    """
