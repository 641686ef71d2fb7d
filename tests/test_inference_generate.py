"""Greedy generation through the streamed model gives the in-memory model's
tokens, and its report has tokens/s and an I/O-wait fraction."""

from __future__ import annotations

import copy

import torch

from tiermem.inference import InferenceConfig, StreamingModel
from tiermem.store import StoreConfig, TierKind
from tiermem.train.models import GPT, GPTConfig

CFG = GPTConfig(hidden_size=64, num_layers=3, num_heads=2, seq_len=12)


def _greedy(model: GPT, ids: torch.Tensor, new: int, context: int) -> torch.Tensor:
    with torch.no_grad():
        for _ in range(new):
            logits = model(ids[:, -context:])
            ids = torch.cat([ids, logits[:, -1, :].argmax(dim=-1, keepdim=True)], dim=1)
    return ids


def test_greedy_tokens_equal_in_memory(tmp_path):
    torch.manual_seed(5)
    model = GPT(CFG)
    ref = copy.deepcopy(model).eval()
    prompt = torch.randint(0, CFG.vocab_size, (2, 4), generator=torch.Generator().manual_seed(6))
    new = 10  # runs past seq_len: the context is cropped to the last 12 tokens
    want = _greedy(ref, prompt, new, CFG.seq_len)
    budget = 2 * 200_000
    cfg = InferenceConfig(
        store=StoreConfig(host_bytes=budget, nvme_paths=(tmp_path,), prefetch_bytes=150_000),
        compute_tier=TierKind.HOST,
    )
    with StreamingModel(model, cfg) as streamed:
        assert streamed.weight_bytes > budget
        got = streamed.generate(prompt, new, max_context=CFG.seq_len)
        report = streamed.report
        peak = streamed.store.tier(TierKind.HOST).peak
    assert got.shape == (2, 4 + new)
    assert torch.equal(got[:, :4], prompt)
    assert torch.equal(got, want)
    # the tokens are not all one value (a degenerate check would pass on garbage)
    assert got[:, 4:].unique().numel() > 1
    assert peak <= budget
    assert report.passes == new and report.tokens == 2 * new
    assert report.tokens_per_second > 0
    assert abs(report.tokens_per_second - report.tokens / report.seconds) < 1e-6
    assert 0.0 <= report.io_wait_fraction <= 1.0
    assert report.io_wait_seconds <= report.seconds
    assert report.prefetch_hits > 0  # passes after the first replay the schedule
    assert report.bytes_moved["nvme->host"] >= new * streamed.weight_bytes * 0.5
    d = report.to_dict()
    assert d["tokens_per_second"] == report.tokens_per_second
    assert set(d) >= {"io_wait_fraction", "bytes_moved", "peak_bytes", "budget_bytes"}


def test_zero_new_tokens_returns_prompt(tmp_path):
    torch.manual_seed(7)
    cfg = InferenceConfig(store=StoreConfig(host_bytes=4 << 20, nvme_paths=(tmp_path,)))
    prompt = torch.tensor([[1, 2, 3]])
    with StreamingModel(GPT(CFG), cfg) as streamed:
        out = streamed.generate(prompt, 0)
        assert streamed.report.tokens == 0 and streamed.report.tokens_per_second == 0
    assert torch.equal(out, prompt)
