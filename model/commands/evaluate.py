"""Evaluate a trained model on the test set and write MODEL_DIR/metrics_eval.json.

    python evaluate.py --model_dir experiments/base_model [--checkpoint best]

Prints the loss and the strategy's summaries averaged over test batches, and the
retrieval metrics (precision@1, R-precision, MAP@R; leave-one-out on the test set).
"""

import logging
import sys

from .. import cli


def parse_args(argv):
    parser = cli.argument_parser(__doc__)
    cli.add_trained_run_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    params = cli.start_reader(args.model_dir)
    from ..evaluation import evaluate_checkpoint

    results = evaluate_checkpoint(params, args.model_dir, args.data_dir, args.checkpoint)
    for name, value in results.items():
        logging.info("%-28s %.4f", name, value)
    return 0


def run(argv=None):
    """The command: ``main`` with bad input reported in one line and exit status 2."""
    return cli.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
