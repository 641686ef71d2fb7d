"""The default training text: docstrings of the Python standard library, as bytes.

Every Python installation carries its standard library's sources, and their
docstrings are plain English prose about programming, about 2 MB of it.
They are read from the source files in sorted order, up to a byte budget
(nothing is imported, so no module runs), so the corpus is the same on every
run of the same Python. Tokens are bytes (a vocabulary of 256): no tokenizer
to fetch.

[Note: the text is every triple-quoted string of at least 80 characters,
found with a regular expression, not :mod:`ast`: in the standard library
nearly all of them are docstrings, and the scan takes 0.5 s where parsing
every file takes 8 s on two cores.]

[Note: where the sources are missing (some distributions ship only bytecode)
the fallback is the docstrings of modules already imported in this process
(torch, numpy, the standard library's own), read from ``__doc__``; the corpus
says which source it came from.]
"""

from __future__ import annotations

import inspect
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Corpus", "load_corpus", "batch_for_step"]

DEFAULT_BUDGET = 2 << 20  # bytes of text
_MIN_DOC = 80  # skip one-liners: they are mostly "Return x." and teach little


@dataclass(frozen=True)
class Corpus:
    """Training text as a flat uint8 tensor of bytes, and where it came from."""

    tokens: torch.Tensor
    source: str
    documents: int

    @property
    def num_tokens(self) -> int:
        """Bytes in the corpus."""
        return int(self.tokens.numel())


_TRIPLE_QUOTED = re.compile(r"(?s)(\"\"\"|\'\'\')(.*?)\1")


def _docstrings(text: str) -> list[str]:
    out = []
    for match in _TRIPLE_QUOTED.finditer(text):
        doc = inspect.cleandoc(match.group(2))
        if len(doc) >= _MIN_DOC:
            out.append(doc)
    return out


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3")
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(part in skip for part in rel[:-1]):
            continue
        files.append(path)
    return files


def _from_sources(budget: int) -> tuple[list[str], int]:
    docs: list[str] = []
    size = 0
    for path in _stdlib_files():
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for doc in _docstrings(text):
            docs.append(doc)
            size += len(doc.encode()) + 2
        if size >= budget:
            break
    return docs, size


def _from_loaded_modules(budget: int) -> tuple[list[str], int]:
    docs: list[str] = []
    size = 0
    seen: set[int] = set()
    for name in sorted(sys.modules):
        module = sys.modules.get(name)
        for obj in [module, *vars(module).values()] if module is not None else []:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and len(doc) >= _MIN_DOC and id(doc) not in seen:
                seen.add(id(doc))
                docs.append(doc.strip())
                size += len(doc.encode()) + 2
        if size >= budget:
            break
    return docs, size


def load_corpus(budget: int = DEFAULT_BUDGET) -> Corpus:
    """About ``budget`` bytes of standard-library docstrings (see the module docstring)."""
    docs, _ = _from_sources(budget)
    source = f"Python {sys.version.split()[0]} standard library docstrings"
    if sum(len(d) for d in docs) < budget // 8:
        docs, _ = _from_loaded_modules(budget)
        source = "docstrings of the modules loaded in this process"
    data = "\n\n".join(docs).encode("utf-8")[:budget]
    if len(data) < 4096:
        raise RuntimeError(
            "could not assemble a training corpus: found no standard-library sources "
            f"under {sysconfig.get_paths()['stdlib']} and too few loaded docstrings"
        )
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return Corpus(tokens=tokens, source=source, documents=len(docs))


def batch_for_step(
    corpus: Corpus,
    *,
    step: int,
    micro: int,
    batch_size: int,
    seq_len: int,
    seed: int,
    accumulation: int = 1,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of this rank's micro-batch ``micro`` of optimizer step ``step``.

    ``batch_size`` is the micro-batch of one rank; the step's global batch is
    ``batch_size * accumulation * world_size`` sequences, drawn at once and cut
    into micro-batches (``micro`` of ``accumulation``) and those into rank slices.

    [Note: each step's global batch is a function of (seed, step, its size)
    alone, so a run resumed from a checkpoint at step k sees the batches an
    uninterrupted run would have seen from step k on, and every split of the
    same global batch over ranks and accumulation steps trains on the same
    sequences: 1 process x 16, 2 ranks x 8 and 1 process x 8 x 2 steps give the
    same loss curve. With accumulation 1 on one rank the draw is the one of
    earlier versions, which drew each micro-batch on its own.]
    """
    n = corpus.num_tokens - seq_len - 1
    if n < 1:
        raise ValueError(f"corpus of {corpus.num_tokens} bytes is shorter than seq_len {seq_len}")
    if not (0 <= micro < accumulation and 0 <= rank < world_size):
        raise ValueError(
            f"micro-batch {micro} of {accumulation} on rank {rank} of {world_size}: out of range"
        )
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) * 131)
    starts = torch.randint(0, n, (batch_size * accumulation * world_size,), generator=gen)
    first = (micro * world_size + rank) * batch_size
    starts = starts[first : first + batch_size]
    offsets = torch.arange(seq_len + 1)
    windows = corpus.tokens[starts[:, None] + offsets[None, :]].long()
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
