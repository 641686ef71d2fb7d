"""An nvme_path that cannot be used on one rank fails every rank, naming that rank and path."""

from __future__ import annotations

from zero_helpers import config, make_model, run_ranks


def _initialize(rank: int, world: int, root: str) -> str:
    import tiermem

    # rank 1's nvme_path lies under a regular file: it can never become a directory
    swap = f"{root}/swap" if rank == 0 else f"{root}/not-a-dir/swap"
    nvme = {"device": "nvme", "nvme_path": swap, "buffer_count": 1}
    cfg = config(stage=3, world=world)
    cfg["zero_optimization"].update(offload_param=nvme, offload_optimizer=nvme)
    try:
        engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    except Exception as exc:  # noqa: BLE001 - the error is what the test checks
        return f"{type(exc).__name__}: {exc}"
    engine.close()
    return "started"


def test_bad_nvme_path_on_rank_1_fails_both_ranks(tmp_path):
    (tmp_path / "not-a-dir").write_text("a file where rank 1's swap directory should go")
    rank0, rank1 = run_ranks(_initialize, str(tmp_path))
    key = "zero_optimization.offload_param.nvme_path"
    assert rank1.startswith(f"ConfigError: {key}: "), rank1
    assert "not-a-dir" in rank1 and "is not a directory" in rank1, rank1
    assert rank0.startswith(f"ConfigError: {key}: rank 1 of 2: "), rank0
    assert "not-a-dir" in rank0, rank0
    assert not (tmp_path / "swap" / "tiermem_rank0").exists() or not any(
        (tmp_path / "swap" / "tiermem_rank0").iterdir()
    ), "rank 0 left swap files behind"
