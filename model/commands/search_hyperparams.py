"""Train one experiment per setting of a grid of params.

    python search_hyperparams.py --parent_dir experiments/margin_search --grid margin=0.2,0.5,1.0

PARENT_DIR/params.json is the base; each setting gets a child folder
(e.g. PARENT_DIR/margin_0.2) with its own params.json, trained by train.py in a
subprocess. Settings already trained are skipped by train.py itself (it resumes or
says the run is finished). Compare them with `python synthesize_results.py --parent_dir
PARENT_DIR` or in TensorBoard's HParams tab (`tensorboard --logdir PARENT_DIR`).

Several searches may run on one PARENT_DIR at once (e.g. one per GPU): each trains the
settings that no other process is training, leaves those that another search or a
train.py is training to it ("being trained by another ..."), and comes back to them at
the end, once that process is done with them (train.py then says they are finished, or
resumes one whose trainer was stopped). Every search ends with the whole table. A
setting whose folder name would be longer than 255 bytes gets a shortened one ending
with a hash of the setting.
"""

import os
import subprocess
import sys

from .. import cli
from ..errors import FROM_CLONE


def _train_command():
    """The train command in a fresh interpreter, whatever the working folder (which may
    hold a model.py of its own): a clone's train.py script, whose folder Python puts first
    on the path, or the installed package's module."""
    if FROM_CLONE:
        clone = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return [sys.executable, os.path.join(clone, "train.py")]
    return [sys.executable, "-m", f"{__package__}.train"]


def _trained(model_dir, data_dir):
    """Run train.py on ``model_dir``; whether it succeeded."""
    command = _train_command() + ["--model_dir", model_dir, "--data_dir", data_dir]
    return subprocess.run(command, check=False).returncode == 0


def parse_args(argv):
    parser = cli.argument_parser(__doc__)
    parser.add_argument("--parent_dir", required=True,
                        help="folder whose params.json is the base of every setting")
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                        help="params key and the values to try; several keys make a product")
    cli.add_data_dir_argument(parser, "the data, passed to train.py")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from .. import search
    from ..errors import UserError
    from ..params import params_from_dict, read_params_file

    path, base = read_params_file(args.parent_dir)
    params_from_dict(base, source=path)
    runs = search.grid(base, [search.parse_axis(axis) for axis in args.grid])
    children = search.write_children(args.parent_dir, runs)
    labels = [f"[{number}/{len(children)}] {child}" for number, child in enumerate(children, 1)]
    failed, later = [], []
    for child, label in zip(children, labels):
        with search.setting_claimed(child) as holder:
            if holder is None:
                print(label, flush=True)
                if not _trained(child, args.data_dir):
                    failed.append(child)
        if holder is not None:
            print(f"{label}: being trained by {holder}; back to it after the other settings",
                  flush=True)
            later.append((child, label))
    for child, label in later:
        print(f"{label}: back to it once the process training it is done", flush=True)
        with search.setting_claimed(child, wait=True):
            if not _trained(child, args.data_dir):
                failed.append(child)
    if failed:
        failed.sort(key=children.index)
        raise UserError(f"{len(failed)} of {len(children)} settings failed ({', '.join(failed)}); "
                        "see their train.log")
    print(search.markdown_table(search.collect_results(args.parent_dir)))
    return 0


def run(argv=None):
    """The command: ``main`` with bad input reported in one line and exit status 2."""
    return cli.run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
