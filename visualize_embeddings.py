"""Embed the test images with a trained model and write pictures of the embeddings.

Its code is model/commands/visualize_embeddings.py; installed, the same command is
tftriplet-visualize-embeddings. `python visualize_embeddings.py --help` explains it.
"""

import sys

from model.commands import visualize_embeddings

if __name__ == "__main__":
    sys.exit(visualize_embeddings.run())
