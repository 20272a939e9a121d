"""Embed the test images with a trained model and write pictures of the embeddings.

    python visualize_embeddings.py --model_dir experiments/base_model [--checkpoint best]
    tensorboard --logdir experiments/base_model      # then open the Projector tab

Writes into MODEL_DIR:

    projector/               TensorBoard's projector files, a run of its own (shown with
                             --logdir MODEL_DIR or any folder above it, also after a move):
      embeddings.tsv         the test embeddings [N, embedding_size]
      metadata.tsv           the class name of each row (no header: a single column)
      sprite.png             the test images in a square grid, in row order (in colour
                             for colour data; shrunk if the grid would pass 8192 pixels)
      projector_config.pbtxt the projector config tying them together
    embeddings.png           a t-SNE (left) and a PCA (right) of the embeddings,
                             coloured by class, as in the original blog post

In the Projector tab, choose "Color by: label" to colour the points by class (the
config cannot preset it).
"""

import logging
import os
import sys

from .. import cli

PICTURE_FILENAME = "embeddings.png"


def parse_args(argv):
    parser = cli.argument_parser(__doc__)
    cli.add_trained_run_arguments(
        parser, "experiment folder of a trained run; the files are written there")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    params = cli.start_reader(args.model_dir)
    import numpy as np

    from .. import datasets, evaluation, projector, run_folder, visualize

    visualize.check_picture_libraries()
    model, checkpoint = evaluation.restore_model(args.model_dir, params, args.checkpoint)
    images, labels, class_names = evaluation.load_test_split(params, args.model_dir,
                                                             args.data_dir)
    datasets.check_shapes(images, labels, params, "test", args.data_dir)
    embeddings = evaluation.embed_images(model, images, params,
                                         f"Embedding {len(labels):,} test images")

    names = projector.one_line_names(class_names)
    paths = projector.write_projector(os.path.join(args.model_dir, run_folder.PROJECTOR_DIR),
                                      embeddings,
                                      np.array(names, dtype=object)[labels],
                                      projector.sprite_thumbnails(images, params))
    logging.info("Wrote %d embeddings of size %d for the projector: %s", *embeddings.shape,
                 ", ".join(paths.values()))
    count, dims = embeddings.shape
    # Which run, epoch and data the picture shows: it is often looked at far from them.
    title = (f"{os.path.basename(os.path.abspath(args.model_dir))}, epoch "
             f"{checkpoint.rsplit('-', 1)[1]} ({args.checkpoint}): {count:,} test images of "
             f"{os.path.basename(os.path.abspath(args.data_dir))}, {dims} dimensions")
    picture = visualize.plot_embeddings(os.path.join(args.model_dir, PICTURE_FILENAME),
                                        embeddings, labels, dict(enumerate(names)),
                                        seed=params.seed, title=title)
    logging.info("Wrote the t-SNE and PCA picture: %s", picture)
    logging.info("View them with: tensorboard --logdir %s (Projector tab; Color by: label)",
                 args.model_dir)
    return 0


def run(argv=None):
    """The command: ``main`` with bad input reported in one line and exit status 2."""
    return cli.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
