"""Two gloo ranks, each on half of every batch, give the losses of one rank on the whole batch."""

from __future__ import annotations

from zero_helpers import (
    Reference,
    config,
    engine_losses,
    max_rel_diff,
    reference_losses,
    run_ranks,
)

CASES = [(0, "none", 1)] + [(s, o, 1) for s in (1, 2, 3) for o in ("none", "cpu")]
CASES += [(3, "cpu", 2), (3, "nvme", 1)]


def _train_all_cases(rank: int, world: int, nvme_path: str) -> dict:
    out = {}
    for stage, offload, gas in CASES:
        cfg = config(stage=stage, offload=offload, world=world, gas=gas, clip=1.0 if gas > 1 else 0)
        if offload == "nvme":  # parameters and optimizer states, each rank in its own subdir
            nvme = {"device": "nvme", "nvme_path": nvme_path, "buffer_count": 1}
            cfg["zero_optimization"].update(
                offload_param=nvme, offload_optimizer=nvme, sub_group_size=1000
            )
        out[(stage, offload, gas)] = engine_losses(cfg, rank=rank, world=world)
    return out


def test_two_ranks_match_one_rank(tmp_path):
    ranks = run_ranks(_train_all_cases, str(tmp_path))
    single = reference_losses()
    single_gas = reference_losses(Reference(gas=2, clip=1.0))
    for case in CASES:
        ref = single_gas if case[2] > 1 else single
        assert ranks[0][case] == ranks[1][case], case  # the rank-averaged loss agrees
        # half-batch gradients averaged over ranks round differently from the whole batch
        assert max_rel_diff(ranks[0][case], ref) <= 1e-5, case
