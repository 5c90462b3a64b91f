"""Keeping Python's cyclic garbage collector off the objects a training run holds for its whole life.

Importing torch and transformers and loading a model leaves ~4 x 10^5 objects tracked by the
collector. Every full (generation 2) collection walks all of them: ~0.1-0.2 s each on this
machine, three of them while a model class is imported and loaded, one every few training steps,
and more at interpreter shutdown. None of those objects is garbage. Learners load with the
collector paused and train with everything that existed after loading frozen (moved out of the
collector's view, `gc.freeze`); both are undone on the way out, so a caller's process keeps its
usual collection behaviour.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No automatic collections inside the block (explicit `gc.collect()` still works)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """Objects alive on entry are skipped by collections inside the block; on exit they are tracked again."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
