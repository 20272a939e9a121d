"""Search a gallery for the images nearest to each query image, with a trained run.

Its code is model/commands/retrieve.py; installed, the same command is
tftriplet-retrieve. `python retrieve.py --help` explains it.
"""

import sys

from model.commands import retrieve

if __name__ == "__main__":
    sys.exit(retrieve.run())
