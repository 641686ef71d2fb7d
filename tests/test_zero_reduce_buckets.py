"""reduce_bucket_size batches groups into one collective and overlap_comm only changes timing:
two gloo ranks give bit-identical losses whatever the bucket size, with or without overlap."""

from __future__ import annotations

from zero_helpers import config, engine_losses, run_ranks

STEPS = 4
# (stage, reduce_bucket_size, overlap_comm)
CASES = [(s, b, o) for s in (2, 3) for b, o in ((1, True), (1, False), (10**9, True))]


def _train(rank: int, world: int) -> dict:
    out = {}
    for stage, bucket, overlap in CASES:
        cfg = config(
            stage=stage,
            world=world,
            extra={"zero_optimization": {"reduce_bucket_size": bucket, "overlap_comm": overlap}},
        )
        seen = {}

        def after_step(engine, step, seen=seen):
            seen["collectives"] = engine.reducer.collectives
            seen["peak"] = engine.reducer.peak_in_flight
            seen["groups"] = len(engine.reducer.trainable)

        losses = engine_losses(cfg, steps=STEPS, rank=rank, world=world, after_step=after_step)
        out[(stage, bucket, overlap)] = (losses, seen)
    return out


def test_bucket_size_and_overlap_do_not_change_the_result():
    ranks = run_ranks(_train)
    for stage in (2, 3):
        per_group, sync, one_bucket = (ranks[0][c] for c in CASES if c[0] == stage)
        assert per_group[0] == sync[0] == one_bucket[0], stage
        assert ranks[0][(stage, 1, True)][0] == ranks[1][(stage, 1, True)][0]
        groups = per_group[1]["groups"]
        assert per_group[1]["collectives"] == STEPS * groups  # one collective per group
        assert one_bucket[1]["collectives"] == STEPS  # everything in one collective
        assert sync[1]["peak"] == 0  # no overlap: nothing left in flight
        assert per_group[1]["peak"] == 2  # overlap: up to two collectives in flight
