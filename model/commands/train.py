"""Train a triplet-loss embedding network on MNIST, any IDX dataset or class folders of images.

    python train.py --model_dir experiments/base_model

Everything is driven by MODEL_DIR/params.json; checkpoints, TensorBoard summaries,
train.log and metrics_eval_*.json are written next to it. Running the same command
again resumes from the latest checkpoint; a finished run exits without training.
"""

import sys

from .. import cli
from ..params import load_params


def parse_args(argv):
    parser = cli.argument_parser(__doc__)
    parser.add_argument("--model_dir", required=True,
                        help="experiment folder holding params.json; outputs go here too")
    cli.add_data_dir_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Checked before TensorFlow loads (seconds): a broken params.json answers at once.
    params = load_params(args.model_dir)
    cli.import_tensorflow()
    from .. import training
    from ..distribute import make_strategy

    # The strategy comes first: a multi-worker strategy must exist before any other TF op.
    strategy = make_strategy(params)
    cli.set_logger()
    training.train_and_evaluate(params, args.model_dir, args.data_dir, strategy)
    return 0


def run(argv=None):
    """The command: ``main`` with bad input reported in one line and exit status 2."""
    return cli.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
