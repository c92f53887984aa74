"""Spot first, on-demand when spot fails: a node-type scorer for Ray's autoscaler (v1).

cluster.yaml starts the head's autoscaler with
``RAY_AUTOSCALER_UTILIZATION_SCORER=orchestrator.cluster.spot_first.score`` and
``RAY_enable_autoscaler_v2=0``. Ray 2.60's v1 autoscaler loads that dotted path
(``resource_demand_scheduler.py``, ``ResourceDemandScheduler.__init__``) and calls it for every
worker type that could take the pending resource demand; the type with the highest score is
launched (``get_nodes_for``: ``sorted(scores, reverse=True)[0]``).

Ray's default scorer (``_default_utilization_scorer``) is given the launcher's availability record
(``node_availability_summary``: a type whose last launch raised ``NodeLaunchException``, e.g.
``InsufficientInstanceCapacity`` for a spot request, is ``is_available=False`` for 30 minutes,
``AUTOSCALER_NODE_AVAILABILITY_MAX_STALENESS_S``) but ignores it: the autoscaler would retry the
failed spot type every few seconds and never launch the on-demand one. This scorer puts the
record first, then Ray's own utilization score, then spot before on-demand: a worker type whose
name ends in ``_spot`` wins a tie against the same resources on demand, and loses to it while its
last launch failed.
"""

from __future__ import annotations

from typing import Any

SPOT_SUFFIX = "_spot"
SCORER_PATH = "orchestrator.cluster.spot_first.score"


def score(node_resources: dict[str, float], resources: list[dict[str, float]], node_type: str, *,
          node_availability_summary: Any) -> tuple | None:
    """Ray's utilization score of ``node_type`` for the demand, led by "its last launch worked"
    and followed by "it is spot"; None where the node type fits none of the demand."""
    from orchestrator.library_internals import utilization_score

    utilization = utilization_score(node_resources, resources, node_availability_summary)
    if utilization is None:
        return None
    record = node_availability_summary.node_availabilities.get(node_type)
    launchable = record is None or record.is_available
    return (launchable, *utilization, node_type.endswith(SPOT_SUFFIX))
