"""A flipped byte in a swap extent under the engine: the read that meets it raises one
StoreCorruptionError naming the tensor and the swap file; the bad bytes never reach the
model or the optimizer (the steps before are exact), close() is clean, and the last
checkpoint resumes the run bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from zero_helpers import make_batches, make_model, nvme_offload_config, train_steps

import tiermem
from tiermem.store import Residency, StoreCorruptionError, TierKind
from tiermem.store.nvme import Extent

STEPS, SAVED_AT = 5, 2


def flip_in_extent(store, name: str) -> Path:
    """Flip one byte in the middle of ``name``'s extent on disk; the file it is in."""
    nvme = store.tier(TierKind.NVME)
    offset, length = store.info(name)["extent"]
    stripe, foff, _, n = nvme.pieces(Extent(offset, length), length)[0]
    path = nvme.stripes[stripe].path
    fd = os.open(path, os.O_RDWR)
    try:
        pos = foff + n // 2
        os.pwrite(fd, bytes([os.pread(fd, 1, pos)[0] ^ 0x10]), pos)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[float]]:
    """The checkpoint after SAVED_AT steps and the losses of all STEPS, uninterrupted."""
    root = tmp_path_factory.mktemp("ckpt")
    engine, *_ = tiermem.initialize(
        model=make_model(), config=nvme_offload_config(tmp_path_factory.mktemp("swap"))
    )
    batches = make_batches(STEPS)
    losses = train_steps(engine, batches[:SAVED_AT], [])
    engine.save_checkpoint(root)
    train_steps(engine, batches[SAVED_AT:], losses)
    engine.close()
    return root, losses


@pytest.mark.parametrize("kind", ["param", "adam"])
def test_flipped_swap_byte_stops_training_with_the_tensor_named(tmp_path, run, kind):
    checkpoint, expected = run
    engine, *_ = tiermem.initialize(
        model=make_model(seed=4), config=nvme_offload_config(tmp_path / "s")
    )
    engine.load_checkpoint(checkpoint)
    batches = make_batches(STEPS)[SAVED_AT:]
    losses = train_steps(engine, batches[:1], [])
    store = engine.placements.stores[0]
    # a tensor that lives only on disk now: its next read is the first use of the bad byte
    name = next(
        n
        for n in sorted(store.names())
        if n.startswith(kind + ".") and store.info(n)["states"][TierKind.HOST] is Residency.ABSENT
    )
    path = flip_in_extent(store, name)
    with pytest.raises(StoreCorruptionError) as err:
        train_steps(engine, batches[1:], losses)
    msg = str(err.value)
    assert f"tensor {name!r}" in msg and str(path) in msg and "checksum mismatch" in msg, msg
    assert losses == expected[SAVED_AT : SAVED_AT + len(losses)]
    engine.close()

    again, *_ = tiermem.initialize(
        model=make_model(seed=5), config=nvme_offload_config(tmp_path / "t")
    )
    again.load_checkpoint(checkpoint)
    assert train_steps(again, make_batches(STEPS)[SAVED_AT:], []) == expected[SAVED_AT:]
    again.close()
