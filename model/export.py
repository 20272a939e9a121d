"""Export the embedding network as a SavedModel.

The SavedModel under ``model_dir/export`` has one function, ``embed(images)``, traced
for uint8 images (0-255) and for float32 images (0-1), each [N, S, S, C] (C =
``image_channels``) and, for grey networks, [N, S, S]; ``serving_default`` is the float32
[N, S, S, C] version. ``export/source.json`` records the epoch whose network it holds
and the SHA-256 of ``saved_model.pb`` (its variables carry TensorFlow's own checksums).
"""

import glob
import hashlib
import os
import shutil
import tempfile

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

from . import checkpoints, files, test_hooks
from .errors import UserError, command
from .network import input_shape
from .run_folder import EXPORT_DIR

# Written last into the export: the epoch of the network it holds.
SOURCE_FILE = "source.json"
GRAPH_FILE = "saved_model.pb"


class EmbeddingModule(tf.Module):
    """A tf.Module that maps a batch of images of any of the supported layouts to embeddings."""

    def __init__(self, model, input_shape):
        super().__init__()
        self.model = model
        self.input_shape = list(input_shape)

    @tf.function
    def embed(self, images):
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        images = tf.reshape(tf.cast(images, tf.float32), [-1, *self.input_shape])
        return self.model(images, training=False)


def export_model(model, params, model_dir, epoch):
    """Write the SavedModel of ``epoch`` to ``model_dir/export``, replacing an older export.

    The SavedModel is written into a temporary folder beside it, with ``source.json``
    (the epoch it belongs to) last, then renamed into place: a crash leaves either the
    previous export or the new one, never a partial one in ``export/``.

    Returns:
        the export's path.
    """
    shape = input_shape(params)
    module = EmbeddingModule(model, shape)
    layouts = [[None, *shape]] + ([[None, *shape[:2]]] if shape[2] == 1 else [])
    signatures = {}
    for dtype in (tf.uint8, tf.float32):
        for layout in layouts:
            concrete = module.embed.get_concrete_function(tf.TensorSpec(layout, dtype))
            if dtype == tf.float32 and len(layout) == 4:
                signatures["serving_default"] = concrete
    path = os.path.join(model_dir, EXPORT_DIR)
    remove_leftovers(model_dir)
    staging = tempfile.mkdtemp(prefix=EXPORT_DIR + ".new-", dir=model_dir)
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the export from other users
    tf.saved_model.save(module, staging, signatures=signatures)
    test_hooks.reached("export_staged")
    files.write_json(os.path.join(staging, SOURCE_FILE),
                     {"epoch": epoch, "sha256": _sha256(os.path.join(staging, GRAPH_FILE))})
    if os.path.exists(path):
        retired = tempfile.mkdtemp(prefix=EXPORT_DIR + ".old-", dir=model_dir)
        os.replace(path, os.path.join(retired, EXPORT_DIR))
        os.replace(staging, path)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, path)
    return path


def remove_leftovers(model_dir):
    """Remove the temporary folders of an export killed half-way (``export.new-*``,
    ``export.old-*``)."""
    for pattern in (".new-*", ".old-*"):
        for leftover in glob.glob(os.path.join(glob.escape(model_dir), EXPORT_DIR + pattern)):
            shutil.rmtree(leftover, ignore_errors=True)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _graph_intact(path, source):
    """Whether ``path/saved_model.pb`` is what the export wrote: its SHA-256 as recorded,
    or, for exports made before the checksum was recorded, a SavedModel proto that parses."""
    graph = os.path.join(path, GRAPH_FILE)
    if not os.path.isfile(graph):
        return False
    if "sha256" in source:
        return _sha256(graph) == source["sha256"]
    try:
        with open(graph, "rb") as f:
            return bool(saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs)
    except DecodeError:
        return False


def exported_epoch(model_dir):
    """The epoch whose network ``model_dir/export`` holds, or None if there is no complete
    one: ``source.json`` missing, ``saved_model.pb`` missing or damaged, or weights that do
    not read back (a damaged export is then replaced by the next ``train.py``)."""
    path = os.path.join(model_dir, EXPORT_DIR)
    source = files.read_json(os.path.join(path, SOURCE_FILE))
    if (source is None or not _graph_intact(path, source)
            or checkpoints.damage(os.path.join(path, "variables", "variables")) is not None):
        return None
    return source.get("epoch")


def load_exported(model_dir):
    """The exported module of ``model_dir``; call ``.embed(images)`` on it."""
    path = os.path.join(model_dir, EXPORT_DIR)
    if exported_epoch(model_dir) is None:
        raise UserError(f"no complete exported model in {path}; run {command('train')} "
                        f"--model_dir {model_dir} to finish training and export it (again)")
    try:
        return tf.saved_model.load(path)
    # The checkpoint reader under it raises IndexError for a truncated file.
    except (tf.errors.OpError, ValueError, OSError, IndexError) as err:
        message = " ".join(str(getattr(err, "message", err)).split())[:200]
        raise UserError(f"{path} cannot be loaded ({message}); delete it and run "
                        f"{command('train')} --model_dir {model_dir} to export it again") from None
