"""Progress of the steps that take more than a few seconds (scanning class folders,
embedding a test set, t-SNE, export, calibration), so that a long silence is never
mistaken for a hang.

On an interactive terminal a step with a known number of parts gets Keras's progress bar
(``keras.utils.Progbar``); in a log file or a pipe, where a bar's redraws would be
noise, and for steps without parts, it gets a start line and an end line with its
duration.
"""

import contextlib
import logging
import sys
import time


class _Silent:
    def update(self, done):
        pass


# For callers that report progress only sometimes.
SILENT = _Silent()


class _Bar:
    def __init__(self, total):
        import keras

        self._bar = keras.utils.Progbar(total, verbose=1)

    def update(self, done):
        self._bar.update(done)


def interactive():
    """Whether progress is drawn as a bar: the console is a terminal."""
    return sys.stdout.isatty()


@contextlib.contextmanager
def step(what, total=None):
    """Report the progress of the step ``what`` ("Embedding 10,000 test images").

    Yields an object whose ``update(done)`` reports ``done`` of ``total`` parts (a bar
    on a terminal when ``total`` is known; nothing otherwise).
    """
    start = time.monotonic()
    logging.info("%s ...", what)
    yield _Bar(total) if total and interactive() else SILENT
    logging.info("%s: done in %.1f s", what, time.monotonic() - start)
