"""Named crash points, for fault tests that must kill a process at an exact step.

``BP_CRASH_AT=NAME[:N]`` in the environment makes the process kill itself with SIGKILL
the N-th time (default the first) it reaches ``crash_point(NAME)``: no flush, no commit,
no ``finally``, as ``kill -9`` would. Unset (always, in production), a crash point costs
one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "BP_CRASH_AT"
_reached: Counter = Counter()


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here if ``BP_CRASH_AT`` names this point (and count)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
