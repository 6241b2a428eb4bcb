"""`freeze_startup_heap`: start-up's garbage is collected, what is left is frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from services.common.startup_heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process is not a service: give its objects back to the collector


def test_garbage_is_collected_first_and_live_objects_are_frozen(unfrozen_after: None) -> None:
    cycle_a, cycle_b = _Node(), _Node()
    cycle_a.other, cycle_b.other = cycle_b, cycle_a  # garbage only a collection can free
    garbage = weakref.ref(cycle_a)
    del cycle_a, cycle_b
    kept = _Node()
    gc.disable()  # no automatic collection between here and the freeze
    try:
        frozen = freeze_startup_heap()
    finally:
        gc.enable()
    assert garbage() is None  # collected, not frozen for the life of the process
    assert frozen == gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects())  # frozen: out of every generation
