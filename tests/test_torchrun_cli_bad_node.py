"""`tiermem train` on two nodes where one node's --nvme-path is missing: both ranks stop at
once, each error naming its rank, rank 0's naming rank 1 and the cause."""

from __future__ import annotations

from torchrun_script import stop_nodes, torchrun_node
from zero_helpers import free_port

LIMIT_S = 120  # without the agreement rank 0 would wait in its first collective


def test_missing_nvme_path_on_one_node_names_the_rank(tmp_path):
    port = free_port()
    paths = [tmp_path, tmp_path / "absent"]
    train = ["-m", "tiermem.cli", "train", "--model", "tiny", "--steps", "2", "--no-checkpoint"]
    nodes = [
        torchrun_node(
            node,
            port,
            *train,
            "--nvme-path",
            str(paths[node]),
            output=tmp_path / f"node{node}.txt",
        )  # fmt: skip
        for node in (0, 1)
    ]
    try:
        for proc in nodes:
            proc.wait(timeout=LIMIT_S)
    finally:
        stop_nodes(nodes)
    rank0 = (tmp_path / "node0.txt").read_text()
    rank1 = (tmp_path / "node1.txt").read_text()
    cause = f"tiermem train: --nvme-path: {paths[1]} is not a directory"
    assert f"[rank 1/2] {cause}" in rank1, rank1[-2000:]
    assert (
        f"[rank 0/2] tiermem: error: checking the command line failed on rank 1 of 2: "
        f"UsageError: {cause}" in rank0
    ), rank0[-2000:]
    assert nodes[1].returncode != 0 and nodes[0].returncode != 0
    assert "step 1/2" not in rank0  # no rank started training
