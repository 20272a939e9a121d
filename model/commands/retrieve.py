"""Search a gallery for the images nearest to each query image, with a trained run.

    python retrieve.py --model_dir experiments/best_model --gallery data/mnist digit.png

The gallery is a folder of images, of class folders (DIR/<class>/<image>), a dataset of
class folders (its test/ split) or IDX files (their test split). It is embedded with
the run's exported network (MODEL_DIR/export) and indexed with faiss (exact search up
to 200,000 images, approximate above); the index is kept in MODEL_DIR/retrieval/ and
reused while the network and the gallery's files are unchanged. For each query the k
nearest are listed: rank, distance (the run's distance), same / different by the run's
calibrated threshold (MODEL_DIR/verification.json), class (when the gallery has
classes) and path. Images of another size are resized as the run's params.resize says.
Gallery files that are not regular files, whose names are not UTF-8, above 50 megapixels
or that do not decode are skipped with a warning, as in class-folder datasets.
"""

import logging
import sys

from .. import cli


def parse_args(argv):
    parser = cli.argument_parser(__doc__)
    parser.add_argument("--model_dir", required=True, help="experiment folder of a trained run")
    parser.add_argument("--gallery", required=True,
                        help="folder of images, of class folders, or of IDX files to search")
    parser.add_argument("--k", type=cli.positive_int, default=5,
                        help="neighbours listed per query (default: %(default)s)")
    parser.add_argument("--picture", metavar="PNG",
                        help="also draw each query and its neighbours into this PNG file")
    parser.add_argument("queries", nargs="+", metavar="QUERY",
                        help="PNG, JPEG, GIF or BMP files to search for")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    params = cli.start_reader(args.model_dir)
    import numpy as np

    from .. import evaluation, retrieval, visualize
    from ..errors import printable
    from ..images import read_image

    retrieval.check_faiss()
    if args.picture:
        visualize.check_picture_libraries()
    threshold = evaluation.read_verification(args.model_dir)["threshold"]
    queries = np.stack([read_image(path, params.image_size, True, params.image_channels,
                                   params.resize) for path in args.queries])
    gallery, distances, indices = retrieval.search(args.model_dir, args.gallery, queries,
                                                   params, args.k)
    for path, row_distances, row_indices in zip(args.queries, distances, indices):
        print(f"{printable(path)}:")
        print("\n".join(retrieval.describe(gallery, row_distances, row_indices, threshold)))
    if args.picture:
        retrieval.draw_neighbours(args.picture, queries, args.queries, gallery, distances,
                                  indices, threshold)
        logging.info("Wrote the neighbours' picture: %s", args.picture)
    return 0


def run(argv=None):
    """The command: ``main`` with bad input reported in one line and exit status 2."""
    return cli.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
