"""An autoscaling Ray cluster on this machine with the node types of cluster.yaml.

Ray's fake multi-node provider (`ray.autoscaler._private.fake_multi_node`) starts each "node" the
autoscaler launches as a raylet on this machine with the node type's resources (GPUs are only
advertised), and stops it when it has been idle for `idle_timeout_minutes`. The head runs
autoscaler v2, as `ray up` starts it since Ray 2.50.

Not `ray.cluster_utils.AutoscalingCluster`: it runs `ray stop --force`, which ends every Ray on the
machine. The head here is started in a session of its own; the monitor starts the worker nodes
from inside it, so `processes.stop_session` ends the whole cluster and nothing else.
The provider is named as `external` with the fake provider's class: `type: fake_multinode` makes
the autoscaler read defaults from `fake_multi_node/example.yaml`, which the wheel lacks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from processes import session_members, stop_session

from orchestrator.cluster import node_types

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"
HEAD_TYPE = "ray.head.default"  # the fake provider's name for the head's type
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"  # ray.autoscaler._private.fake_multi_node.node_provider
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
# The keys the cluster launcher fills in from a provider's defaults; the monitor reads them all.
LAUNCHER_KEYS: dict[str, Any] = {
    "docker": {}, "auth": {}, "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
}


def head_env(cluster: dict[str, Any]) -> dict[str, str]:
    """The RAY_* variables cluster.yaml exports before `ray start --head` (autoscaler version,
    node-type scorer...), except RAY_AUTH_MODE: this throwaway cluster runs without auth."""
    env = {}
    for command in cluster.get("head_start_ray_commands") or []:
        for part in re.split(r";|&&", command):
            words = shlex.split(part.strip())
            if words[:1] == ["export"]:
                env.update(w.split("=", 1) for w in words[1:] if "=" in w)
    return {k: v for k, v in env.items() if k.startswith("RAY_") and k != "RAY_AUTH_MODE"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_config(cluster: dict[str, Any], gcs_address: str, max_workers_cap: int = 2,
                idle_timeout_minutes: float = 0.1) -> dict[str, Any]:
    """cluster.yaml's node types (names, resources, min/max workers) for the fake provider."""
    head = cluster["head_node_type"]
    types = {HEAD_TYPE: {"resources": dict(cluster["available_node_types"][head].get("resources") or {}),
                         "node_config": {}, "max_workers": 0}}
    for name, spec in cluster["available_node_types"].items():
        if name != head:
            types[name] = {"resources": dict(spec["resources"]), "node_config": {},
                           "min_workers": spec.get("min_workers", 0),
                           "max_workers": min(spec.get("max_workers", max_workers_cap), max_workers_cap)}
    return {
        "cluster_name": "gansweep-fake",
        "max_workers": 2 * max_workers_cap,  # at most 2 raylets more on this machine
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "external", "module": FAKE_PROVIDER, "gcs_address": gcs_address,
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True,
                     # autoscaler v2 asks for several nodes in one call (v1 calls once per node)
                     "launch_multiple": True, "head_node_id": FAKE_HEAD_NODE_ID},
        "head_node_type": HEAD_TYPE,
        "available_node_types": types,
        **LAUNCHER_KEYS,
    }


@dataclass(frozen=True)
class WorkerNode:
    node_id: str
    node_type: str
    resources: dict[str, float]


class FakeAutoscalingCluster:
    """`with FakeAutoscalingCluster(tmp) as cluster:` ... `cluster.address`, `cluster.worker_nodes()`."""

    def __init__(self, tmp: Path, cluster_yaml: Path = CLUSTER_YAML, publish_node_types: bool = True,
                 **config_changes: Any) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cluster = yaml.safe_load(cluster_yaml.read_text())
        self.config = fake_config(self.cluster, self.address, **config_changes)
        self.env = head_env(self.cluster)
        # `ray up` exports RAY_enable_autoscaler_v2=1 (Ray >= 2.50) unless the command says otherwise
        self.v2 = self.env.get("RAY_enable_autoscaler_v2", "1") == "1"
        self.publish_node_types = publish_node_types
        self.head: subprocess.Popen | None = None
        # Ray's own temp dir: short, since socket paths under it may not exceed 107 bytes
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="gansweep-ray-"))

    def start(self, timeout_s: float = 60.0) -> FakeAutoscalingCluster:
        os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster, for this driver too
        config_file = self.tmp / "fake_cluster.json"
        config_file.write_text(json.dumps(self.config))
        resources = dict(self.config["available_node_types"][HEAD_TYPE]["resources"])
        env = {**os.environ, **self.env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_enable_autoscaler_v2": "1" if self.v2 else "0"}
        if self.v2:  # what `ray up` sets for v2 (not RAY_NODE_TYPE_NAME: fake workers would inherit it)
            env["RAY_CLOUD_INSTANCE_ID"] = FAKE_HEAD_NODE_ID
        ray = str(Path(sys.executable).parent / "ray")
        command = [ray, "start", "--head", "--block", f"--port={self.port}",
                   f"--num-cpus={resources.pop('CPU', 0):g}", f"--num-gpus={resources.pop('GPU', 0):g}",
                   "--dashboard-agent-listen-port=0",
                   "--include-dashboard=false", "--disable-usage-stats",
                   f"--temp-dir={self.ray_tmp}", f"--autoscaling-config={config_file}"]
        if resources:
            command.append(f"--resources={json.dumps(resources)}")
        log = open(self.tmp / "head.log", "wb")  # noqa: SIM115 - closed with the process
        self.head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        try:
            self._wait_for_head(timeout_s)
            if self.publish_node_types:  # what cluster.yaml's head start commands do after `ray start`
                node_types.publish(self.config, self.address)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_head(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.head.poll() is not None:
                raise RuntimeError(f"the Ray head exited:\n{self.log_tail()}")
            try:
                if any(n.state == 0 for n in self._gcs().get_all_node_info().values()):
                    return
            except Exception:  # noqa: BLE001 - the GCS is not up yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Ray head after {timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def _gcs(self):
        from ray._raylet import GcsClient

        return GcsClient(address=self.address)

    def worker_nodes(self) -> list[WorkerNode]:
        """The alive nodes the autoscaler started, with their node type as the autoscaler knows it.

        Not the nodes' `ray.io/node-group` label: the fake provider starts its nodes from the
        monitor's process, so they carry the head's RAY_NODE_TYPE_NAME (or none).
        """
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(self.address)
        return [WorkerNode(node.node_id, node.ray_node_type_name,
                           {u.resource_name: u.total for u in (node.resource_usage.usage
                                                               if node.resource_usage else [])})
                for node in status.active_nodes + status.idle_nodes if node.node_id != FAKE_HEAD_NODE_ID]

    def node_ids_ever(self) -> set[str]:
        """Every node the GCS has seen in this cluster, dead ones included."""
        return {node_id.hex() for node_id in self._gcs().get_all_node_info()}

    def wait_for(self, condition, what: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; "
                                     f"workers: {self.worker_nodes()}\n{self.monitor_log_tail()}")
            time.sleep(0.5)

    def session_processes(self) -> list:
        return session_members(self.head.pid) if self.head else []

    def log_tail(self, chars: int = 3000) -> str:
        path = self.tmp / "head.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def monitor_log_tail(self, chars: int = 3000) -> str:
        logs = sorted(self.ray_tmp.glob("session_*/logs/monitor.log"))
        return logs[-1].read_text(errors="replace")[-chars:] if logs else ""

    def stop(self) -> None:
        if self.head is not None:
            # `ray start --block` stops its head processes on SIGTERM (the quicker way); what is
            # left of the session (worker nodes the monitor started) goes with the session
            self.head.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.head.wait(timeout=15)
            stop_session(self.head, grace_s=2)
            self.head = None
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def __enter__(self) -> FakeAutoscalingCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
