"""Train a triplet-loss embedding network on MNIST (or any IDX dataset).

    python train.py --model_dir experiments/base_model

Everything is driven by MODEL_DIR/params.json; checkpoints, TensorBoard summaries,
train.log and metrics_eval_*.json are written next to it. Running the same command
again resumes from the latest checkpoint; a finished run exits without training.
"""

import argparse
import logging
import os
import sys

from model.utils import run_cli

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mnist")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True,
                        help="experiment folder holding params.json; outputs go here too")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                        help="folder with the IDX files train-images-idx3-ubyte[.gz], "
                             "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                             "t10k-labels-idx1-ubyte[.gz] (default: the shipped MNIST, %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from model.utils import load_params, set_logger

    params = load_params(args.model_dir)
    from model.distribute import is_chief, make_strategy
    from model.training import train_and_evaluate

    # The strategy comes first: a multi-worker strategy must exist before any other TF op.
    strategy = make_strategy(params)
    set_logger(os.path.join(args.model_dir, "train.log") if is_chief(strategy) else None)
    logging.info("Training %s (%s, margin %s) on %s", args.model_dir,
                 params.triplet_strategy, params.margin, args.data_dir)
    train_and_evaluate(params, args.model_dir, args.data_dir, strategy)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
