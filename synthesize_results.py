"""Print a markdown table of the results of every experiment below a folder.

Its code is model/commands/synthesize_results.py; installed, the same command is
tftriplet-synthesize-results. `python synthesize_results.py --help` explains it.
"""

import sys

from model.commands import synthesize_results

if __name__ == "__main__":
    sys.exit(synthesize_results.run())
