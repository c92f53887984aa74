"""Real Ray clusters of several nodes on this machine, for the tests that sweep.

`LocalCluster` starts a head and worker nodes with `ray.cluster_utils.Cluster`: separate raylets,
each with the CPUs and GPUs it advertises (GPUs are only advertised here: Ray hands out their ids
in CUDA_VISIBLE_DEVICES and the trainers fall back to the CPU). Every process is a child of the
pytest process, held by its node's handle: removing a node or shutting the cluster down ends
those processes and no others.
"""

from __future__ import annotations

import psutil
from ray._private.node import Node
from ray.cluster_utils import Cluster

# A removed node is declared dead after about 3 s instead of Ray's default 30 s or more.
FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                          "health_check_failure_threshold": 3}


class LocalCluster:
    """A head (by default one that takes no trials, like cluster.yaml's) and worker nodes."""

    def __init__(self, workers: list[dict] = (), head_cpus: float = 0, head_gpus: float = 0):
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": head_cpus, "num_gpus": head_gpus, "include_dashboard": False,
            "_system_config": FAST_FAILURE_DETECTION})
        self.workers: list[Node] = []
        for resources in workers:
            self.add(**resources)

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def head_id(self) -> str:
        return self.cluster.head_node.node_id

    def add(self, num_cpus: float = 1, num_gpus: float = 0) -> Node:
        node = self.cluster.add_node(num_cpus=num_cpus, num_gpus=num_gpus)
        self.cluster.wait_for_nodes()
        self.workers.append(node)
        return node

    def remove(self, node: Node) -> None:
        """The node dies at once (SIGKILL), as a preempted spot instance or a crashed machine."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def trial_processes(self, node: Node | None = None) -> list[psutil.Process]:
        """The Tune trial processes (`ray::ImplicitFunc`) of one node, or of every node."""
        nodes = [node] if node else [self.cluster.head_node, *self.workers]
        found = []
        for each in nodes:
            raylet = each.all_processes["raylet"][0].process
            for child in psutil.Process(raylet.pid).children(recursive=True):
                try:
                    if "ImplicitFunc" in " ".join(child.cmdline()):
                        found.append(child)
                except psutil.Error:
                    continue
        return found

    def shutdown(self) -> None:
        self.cluster.shutdown()
