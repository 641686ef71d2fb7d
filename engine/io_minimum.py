"""The NVMe bytes one optimizer step must move at least, given where the engine put things.

[Note: the minimum counts what the placement cannot avoid with a host tier
too small to keep anything between uses, per optimizer step of
``gradient_accumulation_steps`` micro-steps, for this rank's shards:

* parameters on NVMe: each gathered (non-persistent) group's shard read once
  for forward and once for backward per micro-step (an activation-checkpointed
  recompute shares backward's read), and each trainable group's shard written
  once after its update (persistent groups stay gathered: written, never read);
* optimizer states on NVMe: ``[master | m | v]`` (12 bytes per element) read
  once and written once;
* gradient accumulators (with the states on NVMe): nothing when the step
  updates each group as its gradient lands in backward (one micro-step per
  step, no clipping, not fp16: see TiermemEngine.backward), else each landing
  written once and read once (an accumulation, or the step's read).

A host tier larger than the working set can move less (what stays cached is
not read again); the stores' telemetry gives what was moved.]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GroupTraffic", "min_bytes_per_step"]

ADAM_STATE_BYTES = 12  # fp32 master, exp_avg, exp_avg_sq per element
GRAD_BYTES = 4  # fp32 accumulator per element


@dataclass(frozen=True)
class GroupTraffic:
    """What decides one group's share: its shard's elements and how it is used."""

    shard_numel: int
    trainable: bool
    persistent: bool


def min_bytes_per_step(
    groups: Iterable[GroupTraffic],
    *,
    params_on_nvme: bool,
    optimizer_on_nvme: bool,
    param_itemsize: int,
    micro_steps: int = 1,
    update_in_backward: bool = True,
) -> dict[str, int]:
    """``{"read", "write", "total"}`` NVMe bytes one optimizer step needs at least.

    ``micro_steps``: forward/backward passes per optimizer step;
    ``update_in_backward``: whether the step updates each group as its
    gradient lands (no gradient traffic then).
    """
    if micro_steps < 1:
        raise ValueError(f"micro_steps must be >= 1, got {micro_steps}")
    read = write = 0
    for g in groups:
        n = int(g.shard_numel)
        if params_on_nvme:
            if not g.persistent:
                read += 2 * micro_steps * n * param_itemsize
            if g.trainable:
                write += n * param_itemsize
        if optimizer_on_nvme and g.trainable:
            read += n * ADAM_STATE_BYTES
            write += n * ADAM_STATE_BYTES
            if not (update_in_backward and micro_steps == 1):
                read += micro_steps * n * GRAD_BYTES
                write += micro_steps * n * GRAD_BYTES
    return {"read": read, "write": write, "total": read + write}
