"""`freeze_startup_heap`: start-up's garbage is collected, what is left is frozen.

The check runs in a fresh interpreter: `gc.collect()` does nothing while another thread is
collecting, and a test process holds the threads earlier tests left behind (gRPC pollers, log
writers), so in-process the cycle below was now and then frozen instead of collected. A service
calls this once, when it is ready; a collection skipped then costs only a little memory.
"""

from __future__ import annotations

import json
import subprocess
import sys

_CHECK = """
import gc, json, weakref
from services.common.startup_heap import freeze_startup_heap

class Node:
    def __init__(self):
        self.other = None

cycle_a, cycle_b = Node(), Node()
cycle_a.other, cycle_b.other = cycle_b, cycle_a  # garbage only a collection can free
garbage = weakref.ref(cycle_a)
del cycle_a, cycle_b
kept = Node()
gc.disable()  # no automatic collection between here and the freeze
frozen = freeze_startup_heap()
gc.enable()
print(json.dumps({
    "collected": garbage() is None,
    "frozen": frozen,
    "freeze_count": gc.get_freeze_count(),
    "kept_tracked": any(obj is kept for obj in gc.get_objects()),
}))
"""


def test_garbage_is_collected_first_and_live_objects_are_frozen() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, check=True, timeout=60
    )
    outcome = json.loads(result.stdout)
    assert outcome["collected"]  # collected, not frozen for the life of the process
    assert outcome["frozen"] == outcome["freeze_count"] > 0
    assert not outcome["kept_tracked"]  # frozen: out of every generation
