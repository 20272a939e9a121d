"""Progress of the steps that can take more than a few seconds (scanning class folders,
embedding a test set, t-SNE, export, calibration), so that a long silence is never
mistaken for a hang.

A step that is still running after :data:`QUIET_SECONDS` says so: on an interactive
terminal, with Keras's progress bar (``keras.utils.Progbar``) when its number of parts
is known; in a log file or a pipe (where a bar's redraws would be noise), and for
steps without parts, with a start line, then an end line with its duration. Quicker
steps print nothing, so a one-line error stays one line.
"""

import contextlib
import logging
import sys
import threading
import time

# Steps quicker than this print nothing.
QUIET_SECONDS = 2.0


def interactive():
    """Whether progress is drawn as a bar: the console is a terminal."""
    return sys.stdout.isatty()


class _Reporter:
    def __init__(self, what, total):
        self.what, self.total = what, total
        self.started = time.monotonic()
        self.begun = False
        self.bar = None
        self.done = 0
        self._lock = threading.Lock()

    def begin(self):
        with self._lock:
            self.begun = True
            logging.info("%s ...", self.what)
            if self.total and interactive():
                import keras

                self.bar = keras.utils.Progbar(self.total, verbose=1)
                self.bar.update(self.done)

    def update(self, done):
        with self._lock:
            self.done = done
            if self.bar is not None:
                self.bar.update(done)

    def end(self):
        with self._lock:
            if self.begun:
                logging.info("%s: done in %.1f s", self.what, time.monotonic() - self.started)


class _Silent:
    def update(self, done):
        pass


# For callers that report progress only sometimes.
SILENT = _Silent()


@contextlib.contextmanager
def step(what, total=None):
    """Report the progress of the step ``what`` ("Embedding 10,000 test images") once it
    has run for :data:`QUIET_SECONDS`.

    Yields an object whose ``update(done)`` reports ``done`` of ``total`` parts. A step
    that fails prints no end line (its error says what happened).
    """
    reporter = _Reporter(what, total)
    timer = threading.Timer(QUIET_SECONDS, reporter.begin)
    timer.daemon = True
    if QUIET_SECONDS <= 0:
        reporter.begin()
    else:
        timer.start()
    try:
        yield reporter
    finally:
        timer.cancel()
    reporter.end()
