"""Sweeps on several real Ray nodes of this machine: a head that takes no trials and GPU workers
(`tests/clusters.py`), real Optuna, real MLflow stores, S3 on moto's server. What a cluster user
relies on: trials spread over the workers and packed per GPU as the space says, a node lost in the
middle of a sweep costs no trial and no record, checkpoints in S3 survive a killed driver."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from clusters import LocalCluster
from mlflow.tracking import MlflowClient
from processes import stop_session
from services import BUCKET, FAKE_AWS
from test_chain import saved_discriminator
from test_sweep import (
    children,
    epochs_logged,
    resumed_to_the_end,
    run_in_background,
    sweep_args,
    wait_for,
    write_space,
)

from orchestrator.cli import main

pytestmark = [pytest.mark.sweep, pytest.mark.multinode, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3_env(s3):
    """What a user of an S3-compatible store sets (AWS_ENDPOINT_URL is honoured by boto3 and by
    pyarrow, which Ray Tune writes through), set before the cluster starts so that its nodes
    inherit it as they would inherit an instance profile."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**FAKE_AWS, "AWS_ENDPOINT_URL": s3[0]}.items():
            patch.setenv(key, value)
        yield s3


@pytest.fixture(scope="module")
def cluster(s3_env):
    """A head with no CPU or GPU for trials, a worker with 2 GPUs and one with 1."""
    cluster = LocalCluster(workers=[{"num_cpus": 3, "num_gpus": 2}, {"num_cpus": 2, "num_gpus": 1}])
    yield cluster
    cluster.shutdown()


def placements(run) -> list[dict]:
    return json.loads(run.data.tags["gansweep.placements"])


def scored_by_one_evaluator(parent, kids, storage: Path) -> str:
    """Every trial run, wherever it ran or was retried, names the one evaluator network the sweep
    staged in its storage; its digest."""
    staged = json.loads(parent.data.tags["gansweep.evaluators"])
    (digest,) = staged.values()
    assert {kid.data.tags.get("gansweep.evaluator") for kid in kids} == {digest}
    (network,) = storage.glob("*/evaluators/*.pt")
    assert network.stem in staged and hashlib.sha256(network.read_bytes()).hexdigest()[:12] == digest
    return digest


def test_fractional_gpus_pack_on_the_workers_never_on_the_head(tmp_path, tiny, cluster):
    # 6 trials of half a GPU on 3 GPUs: all run at once, two per GPU. Each in a worker of its own:
    # with reused workers a trial that ends first hands its worker (and GPU) to a later one.
    space = write_space(tmp_path, tiny, num_samples=6, max_concurrent=6, resources={"cpu": 0.5, "gpu": 0.5},
                        sampler={"type": "random", "seed": 0}, scheduler={"type": "fifo"},
                        fixed={**tiny, "epochs": 2}, reuse_actors=False)
    assert main(sweep_args(tmp_path, space, cluster.address)) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    _, kids = children(client, "tiny")
    assert len(kids) == 6 and all(k.info.status == "FINISHED" for k in kids)
    scored_by_one_evaluator(children(client, "tiny")[0], kids, tmp_path / "sweeps")
    gpus_of = {w.node_id: {"0", "1"} if w is cluster.workers[0] else {"0"} for w in cluster.workers}
    per_gpu: dict[tuple[str, str], list] = defaultdict(list)
    for kid in kids:
        (where,) = placements(kid)  # never moved
        assert where["node_id"] != cluster.head_id, "no trial on the head"
        assert where["gpus"] in gpus_of[where["node_id"]], "one GPU id, one its node has"
        per_gpu[where["node_id"], where["gpus"]].append(kid)
    assert len(per_gpu) == 3, "every GPU of the cluster used"
    for runs in per_gpu.values():
        assert len(runs) == 2, "gpu: 0.5 puts two trials on each GPU"
    # Whether the two trials of a GPU overlap in time depends on how fast Ray starts their workers
    # (a tiny trial can end before its neighbour starts on a loaded machine), so it is not asserted.


def test_a_node_lost_mid_sweep_costs_no_trial_and_no_record(tmp_path, tiny, cluster):
    lost = cluster.add(num_cpus=2, num_gpus=1)
    try:
        # Whole GPUs, epochs of a few tenths of a second: the loss lands while trials run.
        space = write_space(tmp_path, tiny, num_samples=4, max_concurrent=4, resources={"cpu": 1, "gpu": 1},
                            sampler={"type": "random", "seed": 0}, scheduler={"type": "fifo"},
                            fixed={**tiny, "epochs": 6, "batch_size": 4, "max_train": None})
        driver = run_in_background(tmp_path, sweep_args(tmp_path, space, cluster.address))
        wait_for(lambda: trials_with_a_checkpoint(tmp_path) == 4, "a checkpoint of each of the 4 trials")
        assert cluster.trial_processes(lost), "4 GPUs for 4 trials: one of them runs on the doomed node"
        cluster.remove(lost)
        lost = None
        assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if lost is not None:
            cluster.remove(lost)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent, kids = children(client, "tiny")
    assert parent.info.status == "FINISHED"
    assert len(kids) == 4, "one MLflow run per trial, retries included"
    moved = [k for k in kids if len(placements(k)) > 1]
    assert moved, "the trial of the lost node went on elsewhere"
    assert len({where["node_id"] for kid in kids for where in placements(kid)}) >= 2
    scored_by_one_evaluator(parent, kids, tmp_path / "sweeps")
    for kid in kids:
        assert kid.info.status == "FINISHED" and kid.data.tags["gansweep.status"] == "finished"
        assert epochs_logged(client, kid) == [1, 2, 3, 4, 5, 6], "every epoch recorded once"
    for kid in moved:
        before, after = placements(kid)
        assert before["node_id"] != after["node_id"]
        assert after["node_id"] in {w.node_id for w in cluster.workers}
        assert int(kid.data.tags["gansweep.retries"]) >= 1
        assert after["from_epoch"] > 1, "resumed from its checkpoint, not from scratch"
        print(f"node loss: {kid.info.run_name} resumed at epoch {after['from_epoch']} on another node")


def trials_with_a_checkpoint(tmp_path: Path) -> int:
    return len({p.parent for p in (tmp_path / "sweeps").glob("*/t*/checkpoint_*")})


def test_s3_storage_keeps_checkpoints_and_survives_a_killed_driver(tmp_path, tiny, cluster, s3_env):
    _, bucket = s3_env
    prefix = f"sweeps-{uuid.uuid4().hex[:8]}"
    space = write_space(tmp_path, tiny, num_samples=3, max_concurrent=3, resources={"cpu": 1, "gpu": 1},
                        scheduler={"type": "fifo"},
                        fixed={**tiny, "epochs": 4, "batch_size": 4, "max_train": None})
    args = ["sweep", str(space), "--address", cluster.address, "--storage", f"s3://{BUCKET}/{prefix}",
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]

    def checkpointed_trials() -> set[str]:
        pages = bucket.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return {k.split("/")[2] for k in keys if "/checkpoint_" in k}

    driver = run_in_background(tmp_path, args)
    wait_for(lambda: len(checkpointed_trials()) >= 2, "checkpoints of two trials in S3")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    client, parent, kids = resumed_to_the_end(tmp_path, args, timeout=400)
    assert not (tmp_path / "sweeps").exists(), "nothing stored beside the driver"
    assert parent.info.status == "FINISHED"
    trials = [k for k in kids if k.data.tags.get("gansweep.status") != "lost"]
    assert len(trials) == 3
    for kid in trials:
        assert kid.info.status == "FINISHED"
        assert epochs_logged(client, kid) == [1, 2, 3, 4]
        samples = {a.path for a in client.list_artifacts(kid.info.run_id, "samples")}
        assert samples == {f"samples/epoch_{e:03d}.png" for e in range(1, 5)}, "grids read from S3"
        models = client.search_logged_models([kid.info.experiment_id],
                                             filter_string=f"source_run_id = '{kid.info.run_id}'")
        assert {m.name for m in models} == {"generator", "discriminator"}, "models read from S3"
    assert len(checkpointed_trials()) >= 3


def test_trials_on_other_nodes_read_the_source_from_s3(tmp_path, tiny, cluster, s3_env):
    """The driver copies a transfer source into the sweep's storage; trials on the workers read it
    from there (the driver's own folder is not theirs on a real cluster)."""
    _, bucket = s3_env
    prefix = f"sweeps-{uuid.uuid4().hex[:8]}"
    data = {k: tiny[k] for k in ("dataset", "data_path", "channels", "image_size", "batch_size")}
    source = saved_discriminator(tmp_path / "discriminator")
    space = write_space(tmp_path, tiny, name="s3-transfer", trainer="transfer", metric="val_acc", mode="max",
                        num_samples=2, max_concurrent=2, resources={"cpu": 1, "gpu": 1},
                        sampler={"type": "grid", "seed": 0}, scheduler={"type": "fifo"},
                        fixed={**data, "max_train": 48, "epochs": 1, "freeze_epochs": 1,
                               "source": str(source)},
                        params={"head": {"type": "categorical", "choices": ["linear", "mlp"]}})
    args = ["sweep", str(space), "--address", cluster.address, "--storage", f"s3://{BUCKET}/{prefix}",
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert main(args) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    _, kids = children(client, "s3-transfer")
    assert [k.data.tags["gansweep.status"] for k in kids] == ["finished", "finished"]
    for kid in kids:
        assert kid.data.params["source"].startswith(f"s3://{BUCKET}/{prefix}/s3-transfer-")
        assert kid.data.tags["gansweep.source.source.resolved"] == str(source)
        assert {node["node_id"] for node in placements(kid)} <= {w.node_id for w in cluster.workers}
    staged = kids[0].data.params["source"][len(f"s3://{BUCKET}/"):]
    assert bucket.head_object(Bucket=BUCKET, Key=f"{staged}/MLmodel")["ContentLength"] > 0


# -- refused before any trial starts --------------------------------------------------------------

def refused(capsys, args: list[str]) -> str:
    assert main(args) == 2
    return capsys.readouterr().err


def test_no_cluster_at_the_address(tmp_path, tiny, capsys):
    from services import free_port

    space = write_space(tmp_path, tiny)
    err = refused(capsys, sweep_args(tmp_path, space, f"127.0.0.1:{free_port()}"))
    assert "no Ray cluster answers there" in err and "ray up cluster.yaml" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_misspelt_bucket(tmp_path, tiny, capsys, s3_env):
    space = write_space(tmp_path, tiny)
    args = ["sweep", str(space), "--storage", "s3://no-such-gansweep-bucket/sweeps",
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    err = refused(capsys, args)
    assert "s3://no-such-gansweep-bucket/sweeps" in err and "cannot write there" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_folder_that_one_node_does_not_share(tmp_path, tiny, cluster, capsys):
    """A worker that sees a folder of its own at the storage path, as a second machine would."""
    storage = tmp_path / "sweeps"
    storage.mkdir()
    ray = str(Path(sys.executable).parent / "ray")
    mount_own_folder = f"mount -t tmpfs gansweep-test {storage} && exec {ray} start --block " \
                       f"--address={cluster.address} --num-cpus=1 --num-gpus=1 --disable-usage-stats"
    node = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", mount_own_folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: len(alive_nodes(cluster)) == 4, "the node with its own folder")
        space = write_space(tmp_path, tiny)
        err = refused(capsys, sweep_args(tmp_path, space, cluster.address))
    finally:
        stop_session(node)
    assert f"--storage {storage} is not shared by every node" in err
    assert "does not see what this machine wrote there" in err and "s3://" in err
    assert list(storage.iterdir()) == [], "the probe cleans up after itself"
    assert not (tmp_path / "mlflow.db").exists(), "no experiment, no run"


def alive_nodes(cluster: LocalCluster) -> list[dict]:
    import ray

    ray.init(address=cluster.address, log_to_driver=False, logging_level="error")
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
