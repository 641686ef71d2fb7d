"""A rank that hangs: the other gives up after TIERMEM_DIST_TIMEOUT, naming the silent rank.

torch's own default for gloo is 30 minutes; the engine's process group uses
the environment's timeout (10 minutes when unset), here 4 s.
"""

from __future__ import annotations

from torchrun_script import SCRIPT, stop_nodes, torchrun_node
from zero_helpers import free_port

LIMIT_S = 120


def test_survivor_times_out_and_names_the_silent_rank(tmp_path):
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
            "--hang-at",
            "2",
            output=tmp_path / f"node{node}.txt",
            timeout_s=4,
        )  # fmt: skip
        for node in (0, 1)
    ]
    try:
        nodes[0].wait(timeout=LIMIT_S)
    finally:
        stop_nodes(nodes)
    survivor = (tmp_path / "node0.txt").read_text()
    assert "rank 1: hanging on purpose at step 2" in (tmp_path / "node1.txt").read_text()
    assert nodes[0].returncode != 0, survivor[-3000:]
    assert "CollectiveError: rank 0 of 2: " in survivor, survivor[-3000:]
    assert "rank 1 did not answer within 5 s: dead, killed, or stuck" in survivor, survivor[-3000:]
