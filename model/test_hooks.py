"""Named points at which the recovery tests kill or pause a run (``TRIPLET_LOSS_TEST_HOOK``).

``TRIPLET_LOSS_TEST_HOOK=POINT:kill`` sends SIGKILL to the process when it reaches
``POINT``; ``POINT:pause`` prints ``test hook: POINT`` to stderr and sleeps, so that a
test can act while the process holds its state (e.g. its lock). Unset, as for every
user, :func:`reached` does nothing.
"""

import os
import signal
import sys
import time

ENV = "TRIPLET_LOSS_TEST_HOOK"


def reached(point):
    """Kill or pause the process here if the test hook names ``point``."""
    hook = os.environ.get(ENV)
    if not hook:
        return
    name, _, action = hook.rpartition(":")
    if name != point:
        return
    if action == "pause":
        print(f"test hook: {point}", file=sys.stderr, flush=True)
        time.sleep(3600)
    else:
        os.kill(os.getpid(), signal.SIGKILL)
