"""Soak: NVMe budgets so small that (nearly) every store tensor is evicted and read back
from disk on every step; memory, descriptors and swap space stay flat and the results
equal a run whose budget holds everything.

``test_soak_short`` (20 steps) runs by default; ``test_soak_long`` (200 steps) only
with ``pytest -m soak``. Flat means: after a warm-up mark (step 5 / 50) the RSS grows
by less than 1 MiB, the number of open descriptors does not grow, the allocated bytes
of the swap directory grow by at most 64 KiB (ext4 extent-tree blocks), and the NVMe
tier's allocated extents stay within 25% of their peak before the mark (extents are
written copy-on-write, so their total moves).
"""

from __future__ import annotations

import time

import pytest
import torch
from soak_helpers import SoakRecord, soak

RSS_MARGIN = 1 << 20
# [Note: the swap file is preallocated, but on ext4 its allocated blocks include the
#  extent tree, which gains a 4 KiB block now and then as writes split the unwritten
#  extents; a few such blocks are the filesystem's, not growth of the swap space.]
SWAP_DISK_MARGIN = 64 << 10


def check_soak(rec: SoakRecord, ref: SoakRecord, mark: int) -> None:
    # the budget holds under a third of the state, and only what fits in it can stay:
    # the tensors a step does not read back from NVMe (those the store's write-behind
    # plan keeps resident across steps) add up to at most the host budget, over the
    # whole run and in every step; every step reads back at least 90% of the tensors.
    assert 3 * rec.host_budget < rec.store_bytes
    steps = len(rec.losses)
    assert rec.reads_total.keys() == rec.store_names
    kept = {name: n for name, n in rec.reads_total.items() if n < steps}
    assert sum(rec.nbytes[name] for name in kept) <= rec.host_budget, kept
    for step, missing in enumerate(rec.not_read):
        assert sum(rec.nbytes[name] for name in missing) <= rec.host_budget, (step, missing)
        assert len(missing) <= 0.1 * rec.store_tensors, (step, missing)  # disk really used
    assert sum(ref.evictions) == 0  # the reference budget really holds everything
    # same results as with the budget that holds everything
    assert rec.losses == ref.losses
    assert rec.final.keys() == ref.final.keys()
    for name, value in ref.final.items():
        assert torch.equal(rec.final[name], value), name
    # flat
    assert rec.rss[-1] - rec.rss[mark] < RSS_MARGIN, (rec.rss[mark], rec.rss[-1])
    assert max(rec.fds[mark:]) == rec.fds[mark] and rec.fds[-1] == rec.fds[mark]
    assert max(rec.swap_disk[mark:]) <= rec.swap_disk[mark] + SWAP_DISK_MARGIN
    assert max(rec.swap_used[mark:]) <= 1.25 * max(rec.swap_used[: mark + 1])
    # and nothing left on disk after close
    assert rec.leftover_files == [] and ref.leftover_files == []


def test_soak_short(tmp_path):
    rec = soak(tmp_path / "tight", 20)
    ref = soak(tmp_path / "roomy", 20, tight=False)
    check_soak(rec, ref, mark=5)


@pytest.mark.soak
@pytest.mark.timeout(1800)  # minutes on a loaded 2-core machine
def test_soak_long(tmp_path):
    start = time.perf_counter()
    rec = soak(tmp_path / "tight", 200)
    seconds = time.perf_counter() - start
    ref = soak(tmp_path / "roomy", 200, tight=False)
    mark = 50
    print(
        f"\nsoak 200 steps: RSS step {mark} {rec.rss[mark] / 2**20:.1f} MiB -> step 200 "
        f"{rec.rss[-1] / 2**20:.1f} MiB ({(rec.rss[-1] - rec.rss[mark]) / 1024:+.0f} KiB); "
        f"fds {rec.fds[mark]} -> {rec.fds[-1]}; swap dir {rec.swap_disk[mark]} -> "
        f"{rec.swap_disk[-1]} B; NVMe extents {rec.swap_used[mark]} -> {rec.swap_used[-1]} B "
        f"(peak {max(rec.swap_used)}); {rec.store_tensors} tensors, {rec.store_bytes} B, "
        f"host budget {rec.host_budget} B; mean NVMe reads {sum(rec.reads) / len(rec.reads):.0f} "
        f"B/step; {seconds:.0f} s"
    )
    check_soak(rec, ref, mark=mark)
