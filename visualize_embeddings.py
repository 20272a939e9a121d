"""Embed the test images with a trained model and write pictures of the embeddings.

    python visualize_embeddings.py --model_dir experiments/base_model [--checkpoint best]
    tensorboard --logdir experiments/base_model      # then open the Projector tab

Writes into MODEL_DIR:

    test_embeddings.ckpt.*   the test embeddings [N, embedding_size] as a checkpoint
    metadata.tsv             the label of each row (no header: a single column)
    sprite.png               the test images in a square grid, in row order
    projector_config.pbtxt   the projector config tying them together
    embeddings_pca.png       a 2-D PCA of the embeddings coloured by label, with a
                             legend of the mean image of each label

The projector config holds the checkpoint's absolute path: after moving MODEL_DIR,
run this script again.
"""

import argparse
import logging
import os
import sys

from model.utils import run_cli
from evaluate import add_test_data_arguments

PCA_FILENAME = "embeddings_pca.png"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True,
                        help="experiment folder of a trained run; the files are written there")
    add_test_data_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing so that --help answers without loading TensorFlow.
    from model import input_fn, mnist_dataset, training, visualize
    from model.utils import load_params, set_logger

    set_logger()
    params = load_params(args.model_dir)
    model = training.restore_model(args.model_dir, params, args.checkpoint)
    images, labels = mnist_dataset.load_split(args.data_dir, "test")
    input_fn.check_shapes(images, labels, params)
    embeddings = training.embed_images(model, images)

    paths = visualize.write_projector(args.model_dir, embeddings, labels, images)
    pca_path = os.path.join(args.model_dir, PCA_FILENAME)
    visualize.scatter_png(pca_path, visualize.pca_2d(embeddings), labels,
                          legend_images=visualize.label_mean_images(images, labels))
    logging.info("Wrote %d embeddings of size %d for the projector: %s", *embeddings.shape,
                 ", ".join(paths.values()))
    logging.info("Wrote the PCA picture: %s", pca_path)
    logging.info("View them with: tensorboard --logdir %s (Projector tab)", args.model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
