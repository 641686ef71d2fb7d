"""The host buffer pool keeps released buffers for reuse only within its budget."""

from __future__ import annotations

from tiermem.buffers import HostBufferPool

KiB = 1024


def test_released_buffers_are_unmapped_when_a_new_size_needs_the_room():
    pool = HostBufferPool(256 * KiB, pin=False)
    small = [pool.allocate(64 * KiB) for _ in range(3)]
    for buf in small:
        buf.release()
    assert pool.stats().bytes_cached == 192 * KiB  # kept for reuse
    big = pool.allocate(128 * KiB)  # another size: no cached buffer fits it
    stats = pool.stats()
    assert stats.bytes_in_use == 128 * KiB
    assert stats.bytes_in_use + stats.bytes_cached <= 256 * KiB  # mapped stays within budget
    assert stats.bytes_cached == 128 * KiB  # two of the cached buffers were unmapped
    again = pool.allocate(64 * KiB)  # a cached one is reused
    assert pool.stats().bytes_cached == 64 * KiB
    big.release()
    again.release()
    stats = pool.stats()
    assert stats.bytes_in_use == 0 and stats.bytes_cached <= 256 * KiB


def test_a_released_buffer_is_cached_only_within_the_budget():
    pool = HostBufferPool(128 * KiB, pin=False)
    a = pool.allocate(64 * KiB)
    a.release()
    b = pool.allocate(128 * KiB)  # needs the whole budget: the cached 64 KiB goes
    assert pool.stats().bytes_cached == 0
    b.release()
    assert pool.stats().bytes_cached == 128 * KiB
