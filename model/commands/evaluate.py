"""Evaluate a trained model on the test set and write MODEL_DIR/metrics_eval.json.

    python evaluate.py --model_dir experiments/base_model [--checkpoint best]
        [--reference train [--k 5]]

Prints the loss and the strategy's summaries averaged over test batches, and the
retrieval metrics (precision@1, R-precision, MAP@R; leave-one-out on the test set).
With --reference train, also the k-NN accuracy: each test image classified by the vote
of its k nearest training images (scikit-learn's KNeighborsClassifier, uniform weights).
"""

import logging
import sys

from .. import cli


def parse_args(argv):
    parser = cli.argument_parser(__doc__)
    cli.add_trained_run_arguments(parser)
    parser.add_argument(
        "--reference", choices=("none", "train"), default="none",
        help="train: also classify each test image by a vote of its nearest training "
             "images, reported as knn_accuracy (default: %(default)s)")
    parser.add_argument("--k", type=cli.positive_int, default=1,
                        help="neighbours that vote with --reference train (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.k != 1 and args.reference == "none":
        parser.error("--k is for the k-NN vote: add --reference train")
    return args


def main(argv=None):
    args = parse_args(argv)
    params = cli.start_reader(args.model_dir)
    from ..evaluation import evaluate_checkpoint

    results = evaluate_checkpoint(params, args.model_dir, args.data_dir, args.checkpoint,
                                  knn_k=args.k if args.reference == "train" else None)
    for name, value in results.items():
        logging.info("%-28s %.4f", name, value)
    return 0


def run(argv=None):
    """The command: ``main`` with bad input reported in one line and exit status 2."""
    return cli.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
