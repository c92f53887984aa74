"""Can the joined Ray cluster run one trial of a space? Checked before any trial starts."""

from __future__ import annotations

import ray

from orchestrator.space import SearchSpace


def problem(space: SearchSpace) -> str | None:
    """Why no node of the joined cluster can run one trial (or None)."""
    need = {"CPU": space.resources.cpu, "GPU": space.resources.gpu}
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(all(res.get(k, 0) >= v for k, v in need.items() if v) for res in nodes):
        return None
    have = "; ".join(f"{r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for r in nodes) or "no nodes"
    return (f"resources: a trial needs {need['CPU']:g} CPU and {need['GPU']:g} GPU but no node has that "
            f"({have}). Lower resources, or add GPU workers to the cluster.")
