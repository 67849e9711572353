"""Named points where a crash test can stop a real build: ``ETALAGE_PAUSE_AT=<point>``.

The SIGKILL tests must kill a build at an exact moment (while the snapshot is
being written, just before the switch), not after a guessed delay. With the
variable set to a point's name, the process prints ``paused at <point>`` on
stderr and sleeps until it is killed; unset, a point costs one lookup.
"""

from __future__ import annotations

import os
import sys
import time

POINTS = ("ingested", "compute", "counted", "stored", "snapshot-write", "before-switch")


def reach(point: str) -> None:
    """Pause here for good when ``ETALAGE_PAUSE_AT`` names ``point``."""
    if os.environ.get("ETALAGE_PAUSE_AT") == point:
        sys.stderr.write(f"paused at {point}\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)
