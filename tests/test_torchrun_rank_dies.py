"""A rank that dies mid-step: the other exits soon with an error naming itself and the dead rank.

Launched in torchrun's multi-node form, one agent per "node", as two machines
run it: when a node's only worker dies, nothing kills the other node's worker,
so it is the engine that has to notice and say what happened.
"""

from __future__ import annotations

import time

from torchrun_script import SCRIPT, stop_nodes, torchrun_node
from zero_helpers import free_port

LIMIT_S = 120  # a hang is cut off here; the survivor's own bound is the roll call (5 s)


def test_survivor_names_the_dead_rank(tmp_path):
    port = free_port()
    nodes = [
        torchrun_node(
            node,
            port,
            str(SCRIPT),
            "--steps",
            "6",
            "--swap",
            str(tmp_path / f"swap{node}"),
            "--die-at",
            "2",
            output=tmp_path / f"node{node}.txt",
        )  # fmt: skip
        for node in (0, 1)
    ]
    deadline = time.monotonic() + LIMIT_S
    try:
        for proc in nodes:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        stop_nodes(nodes)
    survivor = (tmp_path / "node0.txt").read_text()
    dead = (tmp_path / "node1.txt").read_text()
    assert nodes[1].returncode != 0 and "rank 1: dying on purpose at step 2" in dead, dead[-2000:]
    assert nodes[0].returncode != 0, survivor[-3000:]
    assert "CollectiveError: rank 0 of 2: " in survivor, survivor[-3000:]
    assert "rank 1 did not answer within 5 s: dead, killed, or stuck" in survivor, survivor[-3000:]
