"""Stage 3 with activation checkpointing: the recompute in backward prefetches in backward order.

A checkpointed block's forward runs again inside backward, and its modules'
pre-forward hooks fire then. Prefetching along the *forward* trace there
gathers the groups of the blocks after it, which backward has already
finished with: they stay gathered (and, offloaded, fetched from the store)
until the end of backward, so memory grows with the number of layers.
"""

from __future__ import annotations

from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.partition import GroupState


def test_recompute_prefetches_only_groups_backward_still_needs():
    model = make_model()
    cfg = config(stage=3, extra={"activation_checkpointing": {}})
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    model.checkpoint_fn = engine.checkpoint
    waiting: set[int] = set()  # prefetched in this backward and not acquired since
    in_backward = [False]
    prefetched_in_backward = 0
    for group in engine.groups:

        def prefetch(g=group, orig=group.prefetch):
            nonlocal prefetched_in_backward
            if in_backward[0] and g.state is GroupState.SHARDED:
                waiting.add(g.index)
                prefetched_in_backward += 1
            orig()

        def acquire(g=group, orig=group.acquire):
            orig()  # (gathers through prefetch() itself when nothing was prefetched)
            waiting.discard(g.index)

        group.prefetch, group.acquire = prefetch, acquire
    stray: list[str] = []
    for idx, tgt in make_batches(3):
        loss = engine(idx, tgt)
        in_backward[0] = True
        engine.backward(loss)
        in_backward[0] = False
        stray.extend(engine.groups[gi].layout.module_name for gi in sorted(waiting))
        waiting.clear()
        engine.step()
    assert prefetched_in_backward > 0  # backward did gather ahead (from the second step)
    assert stray == []  # and everything it gathered ahead, it then used
    engine.close()
