"""The stand-ins keep every object they make; CPython's full collections would walk all of them
on every pass, so the sandbox process freezes what survives a full collection
(sandbox/server.py) and its pauses stay those of the objects made since."""

from __future__ import annotations

import gc

from sandbox.server import _freeze_survivors


def test_what_survives_a_full_collection_is_frozen_out_of_later_ones() -> None:
    kept = [{"id": f"pi_{n}", "metadata": {"n": n}} for n in range(10_000)]
    gc.callbacks.append(_freeze_survivors)
    try:
        gc.collect(1)  # a young collection leaves the survivors where they are
        assert gc.get_freeze_count() == 0
        gc.collect(2)
        frozen = gc.get_freeze_count()
        assert frozen >= 2 * len(kept)  # each object and its metadata dict
    finally:
        gc.callbacks.remove(_freeze_survivors)
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
