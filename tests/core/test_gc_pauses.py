"""core.gc_pauses with the real collector: what a process built during start-up is frozen out of
later full collections, and what start-up left as garbage is collected rather than frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from core.gc_pauses import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.partner: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    """Each test starts and ends with nothing frozen (the test process's own heap included),
    and no automatic collection (another thread's allocations) moves objects meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()


def test_the_startup_heap_is_frozen_so_full_collections_walk_only_what_came_after(
    thawed: None,
) -> None:
    startup = [{"sku": f"SKU-{n:05d}", "levels": [n]} for n in range(10_000)]

    frozen = freeze_startup_heap()

    assert frozen >= 2 * len(startup)  # each dict and its list
    assert gc.get_objects(generation=2) == []  # a full collection has nothing old to walk
    later = [Node() for _ in range(100)]
    tracked = gc.get_objects()
    assert all(any(obj is node for obj in tracked) for node in later[:3])
    assert not any(obj is startup[0] for obj in tracked)


def test_garbage_left_by_startup_is_collected_not_frozen(thawed: None) -> None:
    a, b = Node(), Node()
    a.partner, b.partner = b, a  # a cycle only the collector can free
    gone = weakref.ref(a)
    del a, b

    freeze_startup_heap()

    assert gone() is None
