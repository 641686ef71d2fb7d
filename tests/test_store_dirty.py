"""Dirty copies are written home before eviction; stale copies never survive."""

from __future__ import annotations

import torch

from tiermem.store import Residency, StoreConfig, TensorStore, TierKind

H, D, N = TierKind.HOST, TierKind.DEVICE, TierKind.NVME


def store_for(tmp_path, **kw):
    cfg = dict(
        device_bytes=1 << 20,
        host_bytes=1 << 20,
        nvme_paths=(tmp_path / "a", tmp_path / "b"),
        stripe_unit=64 << 10,
        prefetch_bytes=0,
    )
    cfg.update(kw)
    return TensorStore(StoreConfig(**cfg))


def modify(store, name, tier, delta):
    t = store.fetch(name, tier).wait()
    t.add_(delta)
    store.release(name, dirty=True, tier=tier)


def test_dirty_host_copy_survives_eviction(tmp_path):
    with store_for(tmp_path) as store:
        for i in range(6):  # 6 x 256 KiB in a 1 MiB host tier
            store.register(f"t{i}", 64 << 10, torch.float32, init=torch.full((64 << 10,), i))
        for i in range(6):
            modify(store, f"t{i}", H, 100)
        assert store.telemetry.write_backs >= 6 + 2  # registration + evicted dirty copies
        for i in range(6):
            assert torch.equal(store.fetch(f"t{i}", H).wait(), torch.full((64 << 10,), i + 100.0))
            store.release(f"t{i}")


def test_dirty_device_copy_goes_home_through_host(tmp_path):
    with store_for(tmp_path, device_bytes=512 << 10) as store:
        for i in range(4):
            store.register(f"t{i}", 64 << 10, torch.float32, init=torch.full((64 << 10,), i))
        for i in range(4):
            modify(store, f"t{i}", D, 10)  # device holds 2: earlier ones are demoted
        store.write_back()
        for i in range(4):
            st = store.info(f"t{i}")["states"]
            assert st[D] in (Residency.ABSENT, Residency.CLEAN)
            assert st[H] in (Residency.ABSENT, Residency.CLEAN)
        # push everything out of memory, then read from disk
        for i in range(4, 12):
            store.register(f"t{i}", 64 << 10, torch.float32)
        for i in range(4):
            assert torch.equal(store.fetch(f"t{i}", H).wait(), torch.full((64 << 10,), i + 10.0))
            store.release(f"t{i}")


def test_write_back_cleans_and_writes_new_extent(tmp_path):
    with store_for(tmp_path) as store:
        store.register("w", 1000, torch.float32, init=torch.ones(1000))
        ext0 = store.info("w")["extent"]
        modify(store, "w", H, 1)
        assert store.info("w")["states"][H] is Residency.DIRTY
        store.write_back("w")
        info = store.info("w")
        assert info["states"][H] is Residency.CLEAN and info["extent"] != ext0
        store.write_back()  # nothing dirty: no new extent
        assert store.info("w")["extent"] == info["extent"]


def test_modifying_one_copy_invalidates_the_other(tmp_path):
    with store_for(tmp_path) as store:
        store.register("w", 1000, torch.float32, init=torch.zeros(1000))
        store.fetch("w", D).wait()
        store.release("w", tier=D)
        assert store.info("w")["states"][H] is Residency.CLEAN
        modify(store, "w", H, 5)  # the device copy is now stale: dropped
        assert store.info("w")["states"][D] is Residency.ABSENT
        assert torch.equal(store.fetch("w", D).wait().cpu(), torch.full((1000,), 5.0))
        store.release("w", tier=D)
        # a pinned stale copy is refreshed instead of dropped
        store.pin("w", D)
        modify(store, "w", H, 1)
        assert store.info("w")["states"][D] is Residency.DIRTY
        assert torch.equal(store.fetch("w", D).wait().cpu(), torch.full((1000,), 6.0))


def test_host_home_gets_device_changes_before_it_is_read(tmp_path):
    with store_for(tmp_path) as store:
        store.register("h", 500, torch.float16, home=H, init=torch.ones(500))
        modify(store, "h", D, 2)
        assert store.info("h")["states"][D] is Residency.DIRTY
        assert torch.equal(store.fetch("h", H).wait(), torch.full((500,), 3.0).half())
        assert store.info("h")["states"][D] is Residency.CLEAN


def test_drop_frees_every_tier(tmp_path):
    with store_for(tmp_path) as store:
        store.register("w", 4096, torch.float32)
        store.fetch("w", D).wait()
        store.release("w")
        used = store.tier(N).used
        assert used > 0 and store.tier(H).used > 0 and store.tier(D).used > 0
        store.drop("w")
        assert store.names() == []
        assert store.tier(H).used == store.tier(D).used == store.tier(N).used == 0


def test_replay_keeps_dirty_copies_that_fit_without_rewriting_them(tmp_path):
    with store_for(tmp_path, host_bytes=4 << 20, prefetch_bytes=1 << 20) as store:
        for i in range(4):
            store.register(f"t{i}", 64 << 10, torch.float32)
        for p in range(3):  # the first pass records, the others replay
            store.begin_pass()
            for i in range(4):
                modify(store, f"t{i}", H, 1)
                # 1 MiB of copies in 3 MiB of room: resident until fetched again
                assert store.info(f"t{i}")["states"][H] is Residency.DIRTY
            store.end_pass()
            if p == 0:
                writes = store.telemetry.write_backs
        assert store.telemetry.write_backs == writes  # nothing rewritten per pass
        store.write_back()
        assert store.telemetry.write_backs == writes + 4
        for i in range(4):
            assert store.info(f"t{i}")["states"][H] is Residency.CLEAN
        store.register("big", 15 << 16, torch.float32)  # 3.75 MiB: evicts three
        assert store.telemetry.write_backs == writes + 5  # only big's own write
        states = [store.info(f"t{i}")["states"][H] for i in range(4)]
        assert states.count(Residency.ABSENT) == 3
        assert torch.equal(store.fetch("t2", H).wait(), torch.full((64 << 10,), 3.0))


def test_replay_writes_behind_what_it_will_evict_and_nothing_else(tmp_path):
    # four 256 KiB tensors cycling through room for two: in each replayed pass
    # the copies that must make room are written as they are released, so the
    # evictions find them clean, and the ones that stay are not written
    with store_for(tmp_path, host_bytes=512 << 10, prefetch_bytes=0) as store:
        for i in range(4):
            store.register(f"t{i}", 64 << 10, torch.float32)
        per_pass = []
        for _ in range(5):
            before = store.telemetry.snapshot()
            store.begin_pass()
            for i in range(4):
                modify(store, f"t{i}", H, 1)
            store.end_pass()
            after = store.telemetry.snapshot()
            per_pass.append(
                (
                    after["write_behinds"] - before["write_behinds"],
                    after["bytes_moved"].get("nvme->host", 0)
                    - before["bytes_moved"].get("nvme->host", 0),
                    after["eviction_writes"] - before["eviction_writes"],
                )
            )
        for writes, read, eviction_writes in per_pass[2:]:
            assert eviction_writes == 0  # every evicted copy was already written
            assert read == 3 * (256 << 10)  # Belady on 4 cycling through 2: 3 misses
            assert writes == 3  # begun for each copy that had to go, none for the one kept
        store.register("filler", 128 << 10, torch.float32)  # the whole host tier
        store.drop("filler")
        for i in range(4):  # from disk: the kept copy was written when it had to go
            assert store.info(f"t{i}")["states"][H] is Residency.ABSENT
            assert torch.equal(store.fetch(f"t{i}", H).wait(), torch.full((64 << 10,), 5.0))
            store.release(f"t{i}")
