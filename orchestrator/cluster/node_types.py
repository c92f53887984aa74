"""Can the joined Ray cluster run one trial of a space? Checked before any trial starts.

An autoscaling cluster may have no worker at all when the sweep starts, so the check reads the
cluster's node types, not only its alive nodes. Ray's channel for them is the cluster config in the
GCS (orchestrator/library_internals.py), which Ray Train and Ray Data read to know what an
autoscaling cluster can grow to. Ray's own autoscaler (v1 and v2, Ray 2.60) does not write it, so
the head does, once after `ray start`:

    python -m orchestrator.cluster.node_types publish ~/ray_bootstrap_config.yaml

(`ray up` copies the cluster config, filled out, to that file on the head.) A cluster without it
(`ray start` by hand, `ray.cluster_utils.Cluster`) is judged by its alive nodes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from orchestrator import library_internals
from orchestrator.space.search_space import SearchSpace

NODE_TYPE_LABEL = "ray.io/node-group"  # the autoscaler's node type of a node, set on every node it starts


@dataclass(frozen=True)
class NodeShape:
    """A node type (or an alive node) and what one node of it offers."""

    name: str
    cpu: float
    gpu: float
    launchable: bool = True  # False for a type with max_workers 0 and no node alive

    def fits(self, cpu: float, gpu: float) -> bool:
        return self.launchable and self.cpu >= cpu and self.gpu >= gpu

    def describe(self) -> str:
        text = f"{self.name}: {self.cpu:g} CPU, {self.gpu:g} GPU"
        return text if self.launchable else f"{text} (max_workers 0)"


def node_types() -> list[NodeShape] | None:
    """The node types published to the joined cluster's GCS, or None if none were."""
    groups = library_internals.published_node_groups()
    if groups is None:
        return None
    return [NodeShape(group.name, group.resources.get("CPU", 0), group.resources.get("GPU", 0),
                      group.max_count != 0) for group in groups]


def alive_nodes() -> list[NodeShape]:
    """Every alive node, named by its node type where an autoscaler started it."""
    shapes = []
    for node in ray.nodes():
        if node.get("Alive"):
            res, labels = node["Resources"], node.get("Labels") or {}
            name = labels.get(NODE_TYPE_LABEL) or f"node {node['NodeManagerAddress']}"
            shapes.append(NodeShape(name, res.get("CPU", 0), res.get("GPU", 0)))
    return shapes


def cluster_shapes() -> tuple[list[NodeShape], bool]:
    """The node types (and alive nodes of no listed type), and whether types were known."""
    types = node_types()
    if types is None:
        return alive_nodes(), False
    known = {t.name for t in types}
    return types + [n for n in alive_nodes() if n.name not in known], True


def problem(space: SearchSpace) -> str | None:
    """Why no node (type) of the joined cluster can run one trial, or None."""
    cpu, gpu = space.resources.cpu, space.resources.gpu
    shapes, typed = cluster_shapes()
    if any(shape.fits(cpu, gpu) for shape in shapes):
        return None
    usable = [s for s in shapes if s.launchable]
    lower = [f"resources.{key}" for key, need, best in
             (("cpu", cpu, max((s.cpu for s in usable), default=0)),
              ("gpu", gpu, max((s.gpu for s in usable), default=0))) if need > best]
    kind = "node type" if typed else "node"
    where = "to cluster.yaml" if typed else "to the cluster"
    have = "; ".join(s.describe() for s in shapes) or "no nodes"
    return (f"resources: a trial needs {cpu:g} CPU and {gpu:g} GPU, but no {kind} of the cluster offers "
            f"that ({have}). Lower {' or '.join(lower) or 'resources'} in {space.path}, or add a "
            f"{kind} with at least {cpu:g} CPUs and {gpu:g} GPUs {where}.")


def node_groups_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """A cluster launcher config's node types (`available_node_types`...) as the node groups of Ray's
    cluster config: whole-number resources, and the head as one node."""
    head = config.get("head_node_type")
    groups = []
    for name, spec in config["available_node_types"].items():
        resources = {k: int(v) for k, v in (spec.get("resources") or {}).items()
                     if float(v) == int(v) and v >= 0}  # the protobuf holds whole numbers
        low, high = (1, 1) if name == head else (spec.get("min_workers", 0),
                                                  spec.get("max_workers", config.get("max_workers", -1)))
        groups.append({"name": name, "resources": resources, "min_count": low, "max_count": high})
    return groups


def publish(config: dict[str, Any], address: str) -> None:
    """Write a cluster launcher config's node types into the GCS of the Ray head at address."""
    library_internals.publish_node_groups(node_groups_of(config), address)


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(prog="python -m orchestrator.cluster.node_types",
                                     description="Tell the Ray cluster its node types (run on the head "
                                                 "after `ray start`), so a sweep can check them.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("publish", help="publish the node types of a cluster config")
    command.add_argument("config", type=Path, help="e.g. ~/ray_bootstrap_config.yaml")
    command.add_argument("--address", default="auto", help="the Ray head's GCS (default: auto)")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.expanduser().read_text())
    publish(config, args.address)
    print(f"published node types {', '.join(config['available_node_types'])} to {args.address}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
