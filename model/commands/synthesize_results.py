"""Print a markdown table of the results of every experiment below a folder.

    python synthesize_results.py --parent_dir experiments

Reads each experiment's metrics_eval_best.json (or metrics_eval_last.json with
--which last): precision@1, R-precision, MAP@R, the eval loss, the training time, and
the untrained network's figures (metrics_eval_untrained.json). For a run with a
validation split (validation_size > 0) the best row shows the test figures of the
checkpoint chosen on validation (metrics_test_best.json); the selected_on column says
which split chose it. A metrics file that cannot be read is skipped with a warning
naming it.
"""

import sys

from .. import cli


def parse_args(argv):
    parser = cli.argument_parser(__doc__)
    parser.add_argument("--parent_dir", default="experiments", help="folder to search (default: "
                        "%(default)s)")
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="the best epoch's metrics or the last epoch's (default: %(default)s)")
    parser.add_argument("--output", help="also write the table to this file")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from .. import files, search
    from ..errors import UserError

    cli.set_logger()
    rows = search.collect_results(args.parent_dir, args.which)
    if not rows:
        raise UserError(f"no metrics_eval_{args.which}.json below {args.parent_dir}; train an "
                        "experiment first")
    table = search.markdown_table(rows)
    print(table)
    if args.output:
        files.write_text(args.output, table + "\n")
    return 0


def run(argv=None):
    """The command: ``main`` with bad input reported in one line and exit status 2."""
    return cli.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
