"""What the entry scripts share: common arguments, logging, the error exit.

Each command (``train.py``, ``evaluate.py``, ...) parses its arguments and checks the
params, then calls :func:`import_tensorflow` and imports the rest of ``model`` inside
``main(argv)``, so ``--help`` and a broken params.json answer without loading
TensorFlow (which takes seconds); :func:`run_cli` turns a
:class:`~model.errors.UserError` into one line on stderr and exit status 2.
"""

import argparse
import errno
import logging
import os
import re
import signal
import sys
import tempfile
import unicodedata

from .errors import UserError
from .run_folder import CHECKPOINT_DIRS
from .shipped_data import MNIST_DIR


# What TensorFlow's C++ core prints while it loads, before its logging is initialised
# (TF_CPP_MIN_LOG_LEVEL cannot hide these): absl's banner and INFO lines such as
# "I0000 00:00:... port.cc:153] oneDNN custom operations are on...".
_START_UP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR|I\d{4} [\d:.]+ +\d+ \S+:\d+\] .*)$")


class _OneLineErrors(argparse.ArgumentParser):
    """argparse's usage errors as one line (:class:`UserError`) like every other bad input,
    instead of the usage block, a second line and ``sys.exit``."""

    def error(self, message):
        raise UserError(f"{message} ({self.prog} --help lists the arguments)")


def argument_parser(description):
    """The parser of an entry script, ``description`` (its docstring) shown as written."""
    return _OneLineErrors(description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def positive_int(text):
    """argparse ``type`` of a count: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def add_data_dir_argument(parser, what="the data"):
    parser.add_argument(
        "--data_dir", default=MNIST_DIR,
        help=f"folder with {what}: either the IDX files (train-images-idx3-ubyte[.gz], "
             "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
             "t10k-labels-idx1-ubyte[.gz]) or class folders of images, train/<class>/* and "
             "test/<class>/* (the docs' own_images.md; default: the shipped "
             "MNIST, %(default)s)")


def add_trained_run_arguments(parser, model_dir_help="experiment folder of a trained run"):
    """--model_dir, --data_dir (test files) and --checkpoint of a script reading a trained run."""
    parser.add_argument("--model_dir", required=True, help=model_dir_help)
    add_data_dir_argument(parser, "the test data")
    parser.add_argument(
        "--checkpoint", choices=tuple(CHECKPOINT_DIRS), default="latest",
        help="which checkpoint to use: the last epoch's or the one with the best eval MAP@R "
             "(default: %(default)s)")


def import_tensorflow():
    """Import TensorFlow with its start-up noise filtered out of stderr.

    The C++ INFO lines and absl's banner (4 lines, printed twice) would bury the one-line
    messages users need to read; warnings and errors printed while loading are kept.
    TensorFlow's own settings cannot hide them (measured on TF 2.21: the same 4 lines
    with TF_CPP_MIN_LOG_LEVEL 0 to 3 and GLOG_minloglevel 3); only
    TF_ENABLE_ONEDNN_OPTS=0 would, and it changes the numerics, so the lines are
    filtered at the file descriptor while the import runs.
    """
    if "tensorflow" in sys.modules:
        return
    # Python-level INFO and WARNING lines of TensorFlow's C++ logging, once initialised.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except ModuleNotFoundError as err:
            if err.name != "tensorflow":
                raise
            raise UserError("TensorFlow (>= 2.16) is not installed: pip install tensorflow-cpu "
                            "(or tensorflow, or tensorflow[and-cuda] for NVIDIA GPUs), or "
                            "pip install -r requirements_cpu.txt in a clone") from None
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _START_UP_NOISE.match(line.rstrip("\n")):
                    sys.stderr.write(line)
            sys.stderr.flush()


def start_reader(model_dir):
    """The start of a script that reads a run: the run's validated params (a
    :class:`model.params.Params`, checked before TensorFlow loads so that a broken
    params.json answers at once), then TensorFlow loaded quietly and console logging."""
    from .params import load_params

    params = load_params(model_dir)
    import_tensorflow()
    set_logger()
    return params


def set_logger(level=logging.INFO):
    """Log to the console, one plain line per message (:func:`model.run_folder.claimed`
    adds the run's ``train.log``)."""
    logger = logging.getLogger()
    logger.setLevel(level)
    # TensorFlow's own INFO lines (checkpoint sharding through absl, SavedModel assets),
    # faiss's (which CPU build it loads) and openTSNE's (its gradient method) are not
    # about the run: keep their warnings and errors only.
    # TensorFlow gives its logger a console handler of its own when it loads before the
    # root logger has one: removed, so that its warnings are printed once (through the
    # root logger, which also writes train.log), not twice.
    for library in ("tensorflow", "absl", "faiss", "openTSNE"):
        library_logger = logging.getLogger(library)
        library_logger.setLevel(max(level, logging.WARNING))
        for handler in list(library_logger.handlers):
            library_logger.removeHandler(handler)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    return logger


def run_cli(main, argv=None):
    """Run an entry script's ``main(argv)``; a :class:`UserError` prints one line and exits 2."""
    # OpenBLAS's spinning helper threads would fight the retrieval metrics' own two
    # worker threads (measured: 1.3 s -> 0.95 s for 10,000 test embeddings).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # A plain `kill` stops the command as Ctrl-C does: with a line saying what is kept.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        where = _one_line(str(err.filename or "writing a file"))
        print(f"error: {err.strerror} ({where}); free some space or fix the permissions, then "
              "run the same command again: completed epochs are kept", file=sys.stderr)
        return 2
    except Exception as err:
        # TensorFlow reports a full disk as ResourceExhaustedError, like out of memory.
        if type(err).__name__ != "ResourceExhaustedError":
            raise
        message = " ".join(str(getattr(err, "message", err)).split())[:200]
        print(f"error: out of disk space or memory ({message}); free some, or lower "
              "batch_size, then run the same command again: completed epochs are kept",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}; the last completed "
              "epoch's checkpoint is kept", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def _one_line(message):
    """``message`` with its control characters escaped (a newline in a folder name reads
    ``\\n``): an error stays one line, and no name can forge a line of its own."""
    return "".join(repr(char)[1:-1] if unicodedata.category(char) == "Cc" else char
                   for char in message)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C (files are written atomically, so nothing is
    left half-written)."""


def _terminated(signum, frame):
    raise Terminated()
