"""Tensors read back bit-exact from every tier, for every dtype and odd sizes."""

from __future__ import annotations

import pytest
import torch

from tiermem.store import StoreConfig, TensorStore, TierKind

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SIZES = (1, 3, 1023, 4097, 300_001)


def make_store(tmp_path, **kw):
    cfg = dict(
        device_bytes=2 << 20,
        host_bytes=3 << 20,
        nvme_paths=(tmp_path / "s0", tmp_path / "s1", tmp_path / "s2"),
        stripe_unit=64 << 10,
        prefetch_bytes=0,
    )
    cfg.update(kw)
    return TensorStore(StoreConfig(**cfg))


@pytest.mark.parametrize("home", [TierKind.NVME, TierKind.HOST, TierKind.DEVICE])
@pytest.mark.parametrize("target", [TierKind.HOST, TierKind.DEVICE])
def test_round_trip_every_dtype_and_size(tmp_path, home, target):
    gen = torch.Generator().manual_seed(0)
    ref = {}
    with make_store(tmp_path, device_bytes=6 << 20, host_bytes=6 << 20) as store:
        for dt in DTYPES:
            for n in SIZES:
                name = f"{dt}-{n}"
                ref[name] = torch.randn(n, generator=gen).to(dt)
                store.register(name, n, dt, home=home, init=ref[name])
        # two rounds: the second finds some copies evicted by the first
        for _ in range(2):
            for name, want in ref.items():
                t = store.fetch(name, target).wait()
                assert t.dtype == want.dtype and t.shape == (want.numel(),)
                assert torch.equal(t.cpu(), want), name
                store.release(name)
                assert store.tier(target).used <= store.tier(target).budget


def test_zero_init_and_shaped_init(tmp_path):
    with make_store(tmp_path) as store:
        store.register("z", 5000, torch.bfloat16)
        store.register("m", 12, "float16", init=torch.arange(12.0).reshape(3, 4))
        assert torch.equal(store.fetch("z", TierKind.HOST).wait(), torch.zeros(5000).bfloat16())
        assert torch.equal(
            store.fetch("m", TierKind.DEVICE).wait().cpu(), torch.arange(12.0).half()
        )


def test_streaming_more_than_host_budget_through_nvme(tmp_path):
    # 24 tensors of 512 KiB through a 3 MiB host tier: most reads come from disk
    gen = torch.Generator().manual_seed(1)
    ref = [torch.randn(128 << 10, generator=gen) for _ in range(24)]
    with make_store(tmp_path) as store:
        for i, t in enumerate(ref):
            store.register(f"t{i}", t.numel(), torch.float32, init=t)
        for i, t in enumerate(ref):
            assert torch.equal(store.fetch(f"t{i}", TierKind.HOST).wait(), t)
            store.release(f"t{i}")
        snap = store.telemetry.snapshot()
        assert snap["bytes_moved"]["nvme->host"] >= 18 * t.numel() * 4
        assert snap["evictions"]["host"] >= 18
        assert store.tier(TierKind.HOST).peak <= 3 << 20


def test_bad_arguments_are_clear_errors(tmp_path):
    with make_store(tmp_path) as store:
        with pytest.raises(ValueError, match="dtype: expected one of"):
            store.register("x", 4, torch.int64)
        with pytest.raises(ValueError, match="numel of 'x'"):
            store.register("x", -1, torch.float32)
        with pytest.raises(ValueError, match="expected 4 elements, got 5"):
            store.register("x", 4, torch.float32, init=torch.zeros(5))
        store.register("x", 4, torch.float32)
        with pytest.raises(Exception, match="already registered"):
            store.register("x", 4, torch.float32)
        with pytest.raises(ValueError, match="DEVICE or HOST"):
            store.fetch("x", TierKind.NVME)
        with pytest.raises(KeyError, match="no tensor 'nope'"):
            store.fetch("nope", TierKind.HOST)
        with pytest.raises(Exception, match="not fetched"):
            store.release("x")
    with TensorStore(StoreConfig(host_bytes=1 << 20)) as mem_only:
        with pytest.raises(Exception, match="home NVME needs StoreConfig.nvme_paths"):
            mem_only.register("y", 4, torch.float32)
    with pytest.raises(ValueError, match="StoreConfig.host_bytes"):
        StoreConfig(host_bytes=-1)
    with pytest.raises(ValueError, match="StoreConfig.stripe_unit"):
        StoreConfig(stripe_unit=1000)
