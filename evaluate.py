"""Evaluate a trained model on the test set and write MODEL_DIR/metrics_eval.json.

    python evaluate.py --model_dir experiments/base_model [--checkpoint best]

Prints the loss and the strategy's figures averaged over test batches, and the
retrieval metrics (precision@1, R-precision, MAP@R; leave-one-out on the test set).
"""

import argparse
import logging
import sys

from model.utils import run_cli
from train import DEFAULT_DATA_DIR


def add_test_data_arguments(parser):
    """--data_dir and --checkpoint, shared with visualize_embeddings.py."""
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                        help="folder with the IDX test files (default: %(default)s)")
    parser.add_argument("--checkpoint", choices=("latest", "best"), default="latest",
                        help="which checkpoint to use: the last epoch's or the one with the "
                             "best eval MAP@R (default: %(default)s)")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="experiment folder of a trained run")
    add_test_data_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from model.utils import load_params, set_logger
    from model.training import evaluate_checkpoint

    set_logger()
    params = load_params(args.model_dir)
    results = evaluate_checkpoint(params, args.model_dir, args.data_dir, args.checkpoint)
    for name, value in results.items():
        logging.info("%-28s %.4f", name, value)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
