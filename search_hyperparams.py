"""Train one experiment per setting of a grid of params.

Its code is model/commands/search_hyperparams.py; installed, the same command is
tftriplet-search-hyperparams. `python search_hyperparams.py --help` explains it.
"""

import sys

from model.commands import search_hyperparams

if __name__ == "__main__":
    sys.exit(search_hyperparams.run())
