"""The built-in corpus: standard-library docstrings as bytes; batches fixed by (seed, step)."""

from __future__ import annotations

import torch

from tiermem.train.corpus import batch_for_step, load_corpus


def test_corpus_is_deterministic_text():
    a, b = load_corpus(256 << 10), load_corpus(256 << 10)
    assert a.num_tokens == 256 << 10 and torch.equal(a.tokens, b.tokens)
    assert "standard library" in a.source and a.documents > 50
    text = bytes(a.tokens[:20_000]).decode("utf-8", errors="replace")
    assert text.count(" ") > 2_000  # prose, not code or binary
    assert "Return" in text or "return" in text


def test_batches_depend_on_seed_and_step_only():
    corpus = load_corpus(64 << 10)
    kw = dict(micro=0, batch_size=4, seq_len=32)
    x1, y1 = batch_for_step(corpus, step=5, seed=1, **kw)
    x2, y2 = batch_for_step(corpus, step=5, seed=1, **kw)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (4, 32) and x1.dtype == torch.long
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are the inputs shifted by one
    x3, _ = batch_for_step(corpus, step=6, seed=1, **kw)
    x4, _ = batch_for_step(corpus, step=5, seed=2, **kw)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)
