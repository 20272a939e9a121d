"""Train a triplet-loss embedding network on MNIST, any IDX dataset or class folders of images.

Its code is model/commands/train.py; installed, the same command is
tftriplet-train. `python train.py --help` explains it.
"""

import sys

from model.commands import train

if __name__ == "__main__":
    sys.exit(train.run())
