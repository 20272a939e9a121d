"""Export the embedding network as a SavedModel.

The SavedModel under ``model_dir/export`` has one function, ``embed(images)``, traced
for uint8 images (0-255) and for float32 images (0-1), each [N, S, S] or [N, S, S, 1];
``serving_default`` is the float32 [N, S, S, 1] version.
"""

import os

import tensorflow as tf

from model.errors import UserError

EXPORT_DIR = "export"


class EmbeddingModule(tf.Module):
    """A tf.Module that maps a batch of images of any of the supported layouts to embeddings."""

    def __init__(self, model, image_size):
        super().__init__()
        self.model = model
        self.image_size = image_size

    @tf.function
    def embed(self, images):
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        images = tf.reshape(tf.cast(images, tf.float32),
                            [-1, self.image_size, self.image_size, 1])
        return self.model(images, training=False)


def export_model(model, params, model_dir):
    """Write the SavedModel to ``model_dir/export`` (replacing an older export); returns its path."""
    module = EmbeddingModule(model, params.image_size)
    size = params.image_size
    signatures = {}
    for dtype in (tf.uint8, tf.float32):
        for shape in ([None, size, size], [None, size, size, 1]):
            concrete = module.embed.get_concrete_function(tf.TensorSpec(shape, dtype))
            if dtype == tf.float32 and len(shape) == 4:
                signatures["serving_default"] = concrete
    path = os.path.join(model_dir, EXPORT_DIR)
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def has_export(model_dir):
    return os.path.isfile(os.path.join(model_dir, EXPORT_DIR, "saved_model.pb"))


def load_exported(model_dir):
    """The exported module of ``model_dir``; call ``.embed(images)`` on it."""
    path = os.path.join(model_dir, EXPORT_DIR)
    if not has_export(model_dir):
        raise UserError(f"no exported model in {path}; finish training first (python train.py "
                        f"--model_dir {model_dir}) or run it again to export")
    return tf.saved_model.load(path)
