"""What the entry scripts share: default paths, common arguments, logging, the error exit.

Each command (``train.py``, ``evaluate.py``, ...) parses its arguments and checks the
params, then calls :func:`import_tensorflow` and imports the rest of ``model`` inside
``main(argv)``, so ``--help`` and a broken params.json answer without loading
TensorFlow (which takes seconds); :func:`run_cli` turns a
:class:`~model.errors.UserError` into one line on stderr and exit status 2.
"""

import errno
import logging
import os
import re
import sys
import tempfile

from .errors import UserError

_APP_DIR = os.path.dirname(os.path.abspath(__file__))
# The shipped MNIST: package data inside the app (tftriplet_app/data/mnist) in an
# installed wheel; data/mnist beside model/ in a clone (and an editable install).
_PACKAGE_DATA_DIR = os.path.join(_APP_DIR, "data", "mnist")
DEFAULT_DATA_DIR = (_PACKAGE_DATA_DIR if os.path.isdir(_PACKAGE_DATA_DIR)
                    else os.path.join(os.path.dirname(_APP_DIR), "data", "mnist"))
CHECKPOINT_CHOICES = ("latest", "best")

# What TensorFlow's C++ core prints while it loads, before its logging is initialised
# (TF_CPP_MIN_LOG_LEVEL cannot hide these): absl's banner and INFO lines such as
# "I0000 00:00:... port.cc:153] oneDNN custom operations are on...".
_START_UP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR|I\d{4} [\d:.]+ +\d+ \S+:\d+\] .*)$")


def add_data_dir_argument(parser, what="the data"):
    parser.add_argument(
        "--data_dir", default=DEFAULT_DATA_DIR,
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
        "--checkpoint", choices=CHECKPOINT_CHOICES, default="latest",
        help="which checkpoint to use: the last epoch's or the one with the best eval MAP@R "
             "(default: %(default)s)")


def import_tensorflow():
    """Import TensorFlow with its start-up noise filtered out of stderr.

    The C++ INFO lines and absl's banner (4 lines, printed twice) would bury the one-line
    messages users need to read; warnings and errors printed while loading are kept.
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


def set_logger(log_path=None, level=logging.INFO):
    """Log to the console and, if given, to ``log_path`` (appending, so resumed runs keep history)."""
    logger = logging.getLogger()
    logger.setLevel(level)
    # TensorFlow's own INFO lines (checkpoint sharding through absl, SavedModel assets)
    # are not about the run: keep their warnings and errors only.
    for library in ("tensorflow", "absl"):
        logging.getLogger(library).setLevel(max(level, logging.WARNING))
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if log_path:
        # delay: the file appears with its first line, not when a run is refused.
        file_handler = logging.FileHandler(log_path, delay=True)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file_handler)
    return logger


def run_cli(main, argv=None):
    """Run an entry script's ``main(argv)``; a :class:`UserError` prints one line and exits 2."""
    # OpenBLAS's spinning helper threads would fight the retrieval metrics' own two
    # worker threads (measured: 1.3 s -> 0.95 s for 10,000 test embeddings).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        print(f"error: {err.strerror} ({err.filename or 'writing a file'}); free some space or "
              "fix the permissions, then run the same command again: completed epochs are "
              "kept", file=sys.stderr)
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
    except KeyboardInterrupt:
        print("interrupted; the last completed epoch's checkpoint is kept", file=sys.stderr)
        return 130


def read_image(path, image_size, resize=False, channels=1, mode="pad"):
    """Read a PNG, JPEG, GIF or BMP file as uint8 [image_size, image_size, channels].

    Colour images become grey (ITU-R 601 luma) for a grey network and grey ones RGB for
    a colour one; an alpha channel is dropped (:func:`model.images.decode`). Another size
    is an error unless ``resize``; then it is resized as ``mode`` (the run's
    ``params.resize``) says, like the class-folder images the network was trained on.
    MNIST digits are light on a dark background: invert dark-on-light images first.
    """
    import tensorflow as tf

    from . import images

    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not an image; pass image files (PNG, JPEG, GIF "
                        "or BMP)")
    try:
        image = images.decode(tf.io.read_file(path), channels)
    except tf.errors.NotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (tf.errors.InvalidArgumentError, ValueError):
        raise UserError(f"{path}: not a PNG, JPEG, GIF or BMP image") from None
    height, width = image.shape[:2]
    if (height, width) != (image_size, image_size):
        if not resize:
            raise UserError(f"{path}: image is {width}x{height}, the model expects "
                            f"{image_size}x{image_size}; resize it or pass --resize")
        image = images.fit(image, image_size, mode)
    return image.numpy()
