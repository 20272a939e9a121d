"""Embed images with a trained model; with two images, say whether they show the same class.

Its code is model/commands/embed.py; installed, the same command is
tftriplet-embed. `python embed.py --help` explains it.
"""

import sys

from model.commands import embed

if __name__ == "__main__":
    sys.exit(embed.run())
