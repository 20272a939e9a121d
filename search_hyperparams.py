"""Train one experiment per setting of a grid of params.

    python search_hyperparams.py --parent_dir experiments/margin_search --grid margin=0.2,0.5,1.0

PARENT_DIR/params.json is the base; each setting gets a child folder
(e.g. PARENT_DIR/margin_0.2) with its own params.json, trained by train.py in a
subprocess. Settings already trained are skipped by train.py itself (it resumes or
says the run is finished). Compare them with `python synthesize_results.py --parent_dir
PARENT_DIR` or in TensorBoard's HParams tab (`tensorboard --logdir PARENT_DIR`).
"""

import argparse
import os
import subprocess
import sys

from model import cli

TRAIN_SCRIPT = os.path.join(cli.REPO_DIR, "train.py")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent_dir", required=True,
                        help="folder whose params.json is the base of every setting")
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                        help="params key and the values to try; several keys make a product")
    cli.add_data_dir_argument(parser, "the data, passed to train.py")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from model import search
    from model.errors import UserError
    from model.params import params_from_dict, read_params_file

    path, base = read_params_file(args.parent_dir)
    params_from_dict(base, source=path)
    runs = search.grid(base, [search.parse_axis(axis) for axis in args.grid])
    children = search.write_children(args.parent_dir, runs)
    failed = []
    for number, child in enumerate(children, 1):
        print(f"[{number}/{len(children)}] {child}", flush=True)
        command = [sys.executable, TRAIN_SCRIPT, "--model_dir", child, "--data_dir", args.data_dir]
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(child)
    if failed:
        raise UserError(f"{len(failed)} of {len(children)} settings failed ({', '.join(failed)}); "
                        "see their train.log")
    print(search.markdown_table(search.collect_results(args.parent_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
