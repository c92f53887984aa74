"""The GPU paths a user runs first, in the parts a CPU can check: a trial's device is the one Ray gave
it, a space that asks for another is refused, a checkpoint resumes on a machine whose CUDA state does
not fit, a trial's share of a card caps what it allocates, bf16 warns where it is emulated, and the
deterministic switch is set for every run. The tests that need CUDA are marked `gpu`: skipped here
with the reason, run by scripts/gpu-check."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator.cli import main
from orchestrator.errors import SpaceError
from orchestrator.space.loading import load_space
from orchestrator.sweep.trial import placed
from trainers import checkpoint, gan, runtime
from trainers.config import ConfigError

NO_CUDA = not torch.cuda.is_available()

SPACE = {"name": "devices", "trainer": "dcgan", "metric": "fid", "mode": "min",
         "resources": {"cpu": 1, "gpu": 0}, "fixed": {"dataset": "mnist5k", "epochs": 2},
         "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}}


def space_with(tmp_path: Path, gpu: float, **fixed: object) -> Path:
    data = copy.deepcopy(SPACE)
    data["resources"]["gpu"] = gpu
    data["fixed"].update(fixed)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- the device Ray gave the trial --------------------------------------------------------------------
@pytest.mark.parametrize("asked", ["auto", "cpu"])
def test_a_trial_without_a_gpu_trains_on_the_cpu_whatever_the_node_has(asked):
    assert runtime.placed_device(asked, holds_gpu=False) == "cpu"


@pytest.mark.parametrize("asked", ["cuda", "cuda:0"])
def test_a_trial_with_a_gpu_trains_on_its_own_card(asked):
    assert runtime.placed_device(asked, holds_gpu=True) == "cuda:0"  # Ray shows it its card as cuda:0


def test_auto_with_a_gpu_is_the_card_ray_made_visible():
    """Ray sets CUDA_VISIBLE_DEVICES to the trial's card: auto finds it as cuda:0 (and the CPU on a node
    whose GPUs CUDA cannot see, such as the tests' raylets that only declare GPUs)."""
    assert runtime.placed_device("auto", holds_gpu=True) == "auto"
    assert runtime.device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("asked, holds, words", [("cuda", False, "holds no GPU"),
                                                  ("cpu", True, "holds a GPU it would never use")])
def test_a_device_the_trial_cannot_have_is_a_config_error(asked, holds, words):
    with pytest.raises(ConfigError, match=words) as caught:
        runtime.placed_device(asked, holds)
    assert caught.value.key == "device"


@pytest.mark.parametrize("gpu, holds, device, share", [
    (0.0, False, "cpu", None), (0.25, True, "cuda:0", 0.25), (1.0, True, "cuda:0", None),
    (2.0, True, "cuda:0", None),
])
def test_the_trial_config_carries_its_device_and_share(gpu, holds, device, share):
    config = placed({"lr": 1e-3}, "cuda", gpu, holds) if holds else placed({"lr": 1e-3}, "auto", gpu, holds)
    assert (config["device"], config["gpu_share"], config["lr"]) == (device, share, 1e-3)


@pytest.mark.parametrize("gpu, device, words", [
    (0, "cuda", "device 'cuda' but resources.gpu is 0"),
    (0.5, "cpu", "device 'cpu' but resources.gpu is 0.5"),
    (1, "cuda:1", "sees as cuda:0"),
    (0, "cuda:0", "sees as cuda:0"),
])
def test_a_space_asking_for_another_device_is_refused_naming_the_field(tmp_path, gpu, device, words):
    with pytest.raises(SpaceError, match=words) as caught:
        load_space(space_with(tmp_path, gpu, device=device))
    assert caught.value.field == "fixed.device"


def test_a_set_device_is_refused_by_the_dry_run_naming_set(tmp_path, capsys):
    code = main(["sweep", str(space_with(tmp_path, 0)), "--set", "device=cuda:1", "--dry-run",
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert code == 2
    assert "space.yaml: --set device: device 'cuda:1'" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("gpu, device", [(0, "cpu"), (0, "auto"), (0.5, "cuda"), (0.5, "auto")])
def test_devices_that_fit_the_resources_load(tmp_path, gpu, device):
    assert load_space(space_with(tmp_path, gpu, device=device)).fixed["device"] == device


# -- checkpoints resume on any node -----------------------------------------------------------------------
def test_a_cuda_state_is_restored_only_where_it_fits(capsys):
    state = torch.zeros(16, dtype=torch.uint8)
    assert runtime.cuda_state_for([], torch.device("cuda:0")) is None
    assert runtime.cuda_state_for([state], torch.device("cuda:0")) is state
    assert runtime.cuda_state_for([state], torch.device("cuda:1")) is state  # one state: its run's device
    older = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]  # every GPU's
    assert runtime.cuda_state_for(older, torch.device("cuda:1")) is older[1]
    assert capsys.readouterr().err == ""
    assert runtime.cuda_state_for(older, torch.device("cuda:3")) is None
    assert runtime.cuda_state_for([state], torch.device("cpu")) is None
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 2 and all("does not fit" in note for note in notes)


def test_a_checkpoint_made_on_a_gpu_resumes_on_the_cpu(tiny, tmp_path, capsys):
    """A checkpoint with a CUDA random state (as a GPU run writes it) resumes on a CPU-only node,
    with a note instead of the IndexError of torch.cuda.set_rng_state_all."""
    from test_gan import Recorder

    first = Recorder(tmp_path / "a", stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        gan.train_dcgan({**tiny, "device": "cpu"}, first)
    moved = tmp_path / "from-gpu"
    shutil.copytree(first.checkpoints[0], moved)
    state = checkpoint.load(moved)
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.zeros(16, dtype=torch.uint8)]
    checkpoint.save(state, moved)
    resumed = Recorder(tmp_path / "b")
    gan.train_dcgan({**tiny, "device": "cpu", "resume_from": str(moved)}, resumed)
    assert [m["epoch"] for m in resumed.metrics] == [2]
    assert "CUDA random state does not fit the CPU" in capsys.readouterr().err
    assert checkpoint.load(resumed.checkpoints[-1])["rng"]["cuda"] == []  # a CPU run saves none


# -- a trial's share of its card, bf16, determinism -----------------------------------------------------
def test_a_share_caps_the_allocator_below_it_and_shrinks_evaluation_chunks():
    assert runtime.memory_fraction(0.25) == pytest.approx(0.2375)
    assert runtime.scaled(500, None) == 500 and runtime.scaled(500, 0.25) == 125
    assert runtime.scaled(500, 0.01) == 16  # never below a useful batch


def test_out_of_memory_names_the_spaces_share_and_what_to_change():
    message = runtime.out_of_memory_message(0.25, 24 * 1024 ** 3)
    assert "resources.gpu=0.25 of a 24.0 GiB GPU" in message
    assert "batch_size" in message and "raise resources.gpu" in message


@pytest.mark.parametrize("share", [0, 1.5, True, "half"])
def test_a_share_outside_0_1_is_refused(share):
    with pytest.raises(ConfigError, match="gpu_share") as caught:
        gan.resolve("dcgan", {"gpu_share": share})
    assert caught.value.key == "gpu_share"


@pytest.mark.parametrize("capability, name, warned", [
    ((7, 5), "Tesla T4", True), ((7, 0), "Tesla V100", True), ((8, 0), "A100", False),
    ((9, 0), "H100", False),
])
def test_bf16_warns_where_it_is_emulated(capability, name, warned):
    problem = runtime.bf16_problem(capability, name)
    assert (problem is not None) == warned
    if warned:
        assert name in problem and "amp=none" in problem


def test_the_deterministic_switch_is_set_for_every_run():
    """A worker reused for the next trial must not keep the last trial's setting."""
    try:
        runtime.deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        runtime.deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    finally:
        runtime.deterministic(False)


# -- on a GPU (scripts/gpu-check) -------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU: scripts/gpu-check runs it")
def test_a_quarter_share_cannot_allocate_half_the_card():
    dev = torch.device("cuda:0")
    runtime.setup({**runtime.DEFAULTS, "device": "cuda:0", "gpu_share": 0.25})
    try:
        half = torch.cuda.get_device_properties(dev).total_memory // 2
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(half, dtype=torch.uint8, device=dev)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
        torch.cuda.empty_cache()


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU: scripts/gpu-check runs it")
def test_a_deterministic_gpu_run_resumes_exactly(tiny, tmp_path):
    from test_gan import Recorder

    config = {**tiny, "device": "cuda", "deterministic": True}
    straight = Recorder(tmp_path / "a")
    gan.train_dcgan(config, straight)
    first = Recorder(tmp_path / "b", stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        gan.train_dcgan(config, first)
    resumed = Recorder(tmp_path / "c")
    gan.train_dcgan({**config, "resume_from": str(first.checkpoints[0])}, resumed)
    assert resumed.metrics[0]["g_loss"] == pytest.approx(straight.metrics[1]["g_loss"], rel=1e-6)
