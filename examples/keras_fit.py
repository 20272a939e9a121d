"""TensorFlow Addons' triplet-loss tutorial, with this project's Keras losses: model.fit on MNIST.

    python examples/keras_fit.py [--epochs 5] [--output_dir experiments/keras_fit]

The flow of TFA's "TensorFlow Addons Losses: TripletSemiHardLoss" tutorial: a small
CNN ending in an L2-normalised 256-d embedding (``keras.layers.UnitNormalization``),
compiled with ``TripletSemiHardLoss()`` and trained with ``model.fit`` on batches of 32
shuffled MNIST training images. The only change from the tutorial is the import line.
Then the 10,000 test images are embedded and scored with this project's retrieval
metrics (precision@1, R-precision, MAP@R, leave-one-out), and TensorBoard projector files
are written to OUTPUT_DIR (``tensorboard --logdir OUTPUT_DIR``, Projector tab).
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import cli  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="epochs (default: %(default)s, "
                        "as the tutorial)")
    parser.add_argument("--batch_size", type=int, default=32,
                        help="batch size (default: %(default)s, as the tutorial)")
    parser.add_argument("--output_dir", default=os.path.join("experiments", "keras_fit"),
                        help="where the projector files go (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=230, help="seeds weights and shuffling")
    cli.add_data_dir_argument(parser)
    return parser.parse_args(argv)


def build_model():
    """The tutorial's network: two conv blocks, a 256-d dense layer, L2 normalisation."""
    import keras

    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(64, 2, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Dropout(0.3),
        keras.layers.Conv2D(32, 2, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Dropout(0.3),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation=None),
        keras.layers.UnitNormalization(),
    ])


def main(argv=None):
    args = parse_args(argv)
    cli.import_tensorflow()
    import keras
    import numpy as np

    from model import mnist_dataset, projector
    from tftriplet import TripletSemiHardLoss  # was: from tensorflow_addons.losses import ...
    from tftriplet import metrics

    cli.set_logger()
    keras.utils.set_random_seed(args.seed)
    train_images, train_labels = mnist_dataset.load_split(args.data_dir, "train")
    test_images, test_labels = mnist_dataset.load_split(args.data_dir, "test")
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss=TripletSemiHardLoss())
    start = time.time()
    model.fit(train_images[..., None].astype(np.float32) / 255, train_labels,
              batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=2)
    train_seconds = time.time() - start
    embeddings = model.predict(test_images[..., None].astype(np.float32) / 255,
                               batch_size=1000, verbose=0)
    results = metrics.retrieval_metrics(embeddings, test_labels)
    print(f"{args.epochs} epochs in {train_seconds / 60:.1f} min; test retrieval: "
          + ", ".join(f"{name} {value:.4f}" for name, value in results.items()))
    paths = projector.write_projector(args.output_dir, embeddings, test_labels, test_images)
    print(f"projector files in {args.output_dir}: tensorboard --logdir {args.output_dir} "
          f"({os.path.basename(paths['config'])})")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
