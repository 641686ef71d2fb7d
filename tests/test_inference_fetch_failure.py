"""A unit whose second store tensor cannot be fetched gives back the tensors it
already fetched: the error reaches the caller and no store reference leaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiermem.inference import InferenceConfig, StreamingModel
from tiermem.store import StoreConfig, StoreError, StoreScheduleWarning, TierKind


class _Mixed(nn.Module):
    """One unit with an fp32 and a bf16 parameter: two store tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8))
        self.scale = nn.Parameter(torch.ones(8, dtype=torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w) * self.scale.float()


def test_failed_fetch_releases_the_tensors_fetched_before(tmp_path, monkeypatch):
    torch.manual_seed(0)
    cfg = InferenceConfig(store=StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path,)))
    x = torch.randn(2, 8)
    with StreamingModel(_Mixed(), cfg) as streamed:
        want = streamed(x)
        store = streamed.store
        first, second = sorted(store.names(), key=lambda n: "bfloat16" in n)
        real_fetch = store.fetch

        def fetch(name, tier):
            if name == second:
                raise StoreError(f"injected: cannot fetch {name}")
            return real_fetch(name, tier)

        monkeypatch.setattr(store, "fetch", fetch)
        # the failed pass ends early, so its recorded schedule is dropped (warned)
        with (
            pytest.raises(StoreError, match="injected"),
            pytest.warns(StoreScheduleWarning, match="schedule invalidated"),
        ):
            streamed(x)
        # the tensor fetched before the failure was released: it is not held any more
        with pytest.raises(StoreError, match="not fetched"):
            store.release(first, tier=TierKind.HOST)
        monkeypatch.undo()
        assert torch.equal(streamed(x), want)
