"""jobqueue.heap, which the queue service and the worker call once they have started: what was
alive then is out of every later full collection, and what was garbage then is gone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from jobqueue import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector can free it


@pytest.fixture
def thawed() -> Iterator[None]:
    # Only the passes the tests make run meanwhile (an automatic one could free a cycle early).
    enabled = gc.isenabled()
    gc.disable()
    yield
    gc.unfreeze()  # the test process keeps collecting its own heap
    if enabled:
        gc.enable()


def walked() -> set[int]:
    return {id(thing) for thing in gc.get_objects()}


def test_what_lives_at_start_up_is_skipped_by_later_passes(thawed: None) -> None:
    start_up = [[n] for n in range(10_000)]
    assert {id(x) for x in start_up} <= walked()

    heap.freeze_startup_heap()

    assert not {id(x) for x in start_up} & walked()
    later = [[n] for n in range(10)]
    assert {id(x) for x in later} <= walked()


def test_start_up_garbage_is_collected_not_kept(thawed: None) -> None:
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    assert gone() is not None  # a cycle outlives its last reference until a pass

    heap.freeze_startup_heap()

    assert gone() is None


def test_cycles_made_after_the_freeze_are_still_collected(thawed: None) -> None:
    heap.freeze_startup_heap()
    later = _Node()
    gone = weakref.ref(later)
    del later

    gc.collect()

    assert gone() is None
