"""The garbage-collector controls learners use: paused while loading, frozen while training, restored after."""

from __future__ import annotations

import gc
import weakref

import pytest

from llmenv.agents import gc_control


class Cycle:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def test_paused_stops_automatic_collection_and_restores_it():
    assert gc.isenabled()
    with gc_control.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_control.paused():
            pass
        assert not gc.isenabled()  # a caller that had disabled it keeps it disabled
    finally:
        gc.enable()


def test_paused_restores_the_collector_when_the_block_raises():
    with pytest.raises(RuntimeError):
        with gc_control.paused():
            raise RuntimeError("load failed")
    assert gc.isenabled()


def test_frozen_hides_objects_from_collections_until_the_block_ends():
    gc.collect()
    before = Cycle()
    ref = weakref.ref(before)
    with gc_control.frozen():
        assert gc.get_freeze_count() > 0
        del before
        gc.collect()
        assert ref() is not None  # frozen on entry: the collector does not look at it
        during = Cycle()
        during_ref = weakref.ref(during)
        del during
        gc.collect()
        assert during_ref() is None  # created inside the block: collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None  # tracked again after the block
