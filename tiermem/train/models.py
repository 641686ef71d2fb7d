"""GPT-style causal language models in plain PyTorch, and their size presets.

The model is GPT-2's shape: token and position embeddings, pre-LayerNorm
blocks of causal self-attention and a GELU MLP, a final LayerNorm and an LM
head tied to the token embedding. The vocabulary is bytes (256), so no
tokenizer has to be downloaded. ``forward(idx, targets)`` returns the mean
cross-entropy, which is what the engine's ``backward`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPT", "GPTConfig", "PRESETS", "preset"]


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """The shape of a :class:`GPT`.

    Attributes:
        vocab_size: tokens in the vocabulary (256 for bytes).
        hidden_size: width of the residual stream.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        seq_len: the longest sequence (size of the position embedding).
    """

    vocab_size: int = 256
    hidden_size: int
    num_layers: int
    num_heads: int
    seq_len: int

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name}: expected a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"GPTConfig.num_heads ({self.num_heads}) must divide "
                f"hidden_size ({self.hidden_size})"
            )

    @property
    def num_parameters(self) -> int:
        """Trainable parameters (the LM head is tied to the embedding)."""
        h = self.hidden_size
        block = (
            2 * 2 * h + (3 * h * h + 3 * h) + (h * h + h) + (4 * h * h + 4 * h) + (4 * h * h + h)
        )
        return self.vocab_size * h + self.seq_len * h + self.num_layers * block + 2 * h


# [Note: "tiny" is for tests and smoke runs; "small" is the default of
#  `tiermem train`, sized so that a few hundred steps finish in minutes on two
#  CPU cores and the loss falls visibly; the larger ones are for real machines
#  (1b and up want a GPU and an NVMe drive).]
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(hidden_size=64, num_layers=2, num_heads=2, seq_len=64),
    "small": GPTConfig(hidden_size=128, num_layers=4, num_heads=4, seq_len=128),
    "125m": GPTConfig(hidden_size=768, num_layers=12, num_heads=12, seq_len=1024),
    "350m": GPTConfig(hidden_size=1024, num_layers=24, num_heads=16, seq_len=1024),
    "1b": GPTConfig(hidden_size=2048, num_layers=22, num_heads=16, seq_len=2048),
    "7b": GPTConfig(hidden_size=4096, num_layers=32, num_heads=32, seq_len=2048),
}


def preset(name: str) -> GPTConfig:
    """The preset called ``name``; ``ValueError`` listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; expected one of {', '.join(PRESETS)}"
        ) from None


class Block(nn.Module):
    """One pre-LayerNorm transformer block: causal self-attention, then a GELU MLP."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.proj = nn.Linear(h, h)
        self.ln2 = nn.LayerNorm(h)
        self.fc = nn.Linear(h, 4 * h)
        self.out = nn.Linear(4 * h, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, time, hidden) -> same shape."""
        b, t, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=-1)
        q, k, v = (
            z.view(b, t, self.num_heads, h // self.num_heads).transpose(1, 2) for z in (q, k, v)
        )
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, h))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """A GPT-2-style causal LM; ``forward(idx, targets)`` returns the mean cross-entropy,
    ``forward(idx)`` the logits."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.hidden_size)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        self.register_buffer("positions", torch.arange(cfg.seq_len), persistent=False)
        # GPT-2's initialisation, with the residual projections scaled by depth.
        # [Note: through Module.apply, which tiermem.init_context gathers around
        #  each call; a loop over named_modules() wrote into the placeholders of
        #  already partitioned blocks there, and the init was silently lost. The
        #  leaves are visited in the same order, so the weights are unchanged.]
        residual_std = 0.02 / (2 * cfg.num_layers) ** 0.5
        residual = {id(m) for n, m in self.named_modules() if n.endswith((".proj", ".out"))}

        def init(module: nn.Module) -> None:
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = residual_std if id(module) in residual else 0.02
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

        self.apply(init)

    @property
    def config(self) -> GPTConfig:
        """The model's shape (``config.hidden_size`` resolves the engine's ``"auto"`` values)."""
        return self.cfg

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """``idx``, ``targets``: (batch, time) token ids -> scalar loss; without
        ``targets``, the logits (batch, time, vocab) (for inference)."""
        t = idx.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than seq_len {self.cfg.seq_len}")
        x = self.wte(idx) + self.wpe(self.positions[:t])
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
