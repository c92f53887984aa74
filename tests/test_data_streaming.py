"""Folders too large for memory: decoded once per node into a uint8 cache, streamed from it by persistent
DataLoader workers sized to the trial's CPUs, in the order the loader of earlier versions gave."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import make_folder
from PIL import Image
from torchvision import transforms

from trainers import data, folder_cache

CPU = torch.device("cpu")


def folder_config(root: Path, **overrides) -> dict:
    return {**data.DEFAULTS, "dataset": "folder", "data_path": str(root), "channels": 1, "image_size": 12,
            **overrides}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own: what it finds there, it made."""
    monkeypatch.setenv("GANSWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A folder of its own (so its cache is made here): 3 classes of 10 grey 16 px PNGs."""
    return make_folder(tmp_path / "shapes", per_class=10, size=16)


@pytest.fixture
def streaming(monkeypatch):
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)  # every folder counts as large


def cache_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (data.cache_root() / "data").glob(f"{root.name}-*") if p.is_dir())


def decoded(root: Path, size: int = 12) -> torchvision.datasets.ImageFolder:
    """The folder decoded directly, as data.py's recipe says (resize, centre crop, grey)."""
    steps = [transforms.Resize(size), transforms.CenterCrop(size), transforms.Grayscale(1),
             transforms.PILToTensor()]
    return torchvision.datasets.ImageFolder(str(root), transform=transforms.Compose(steps))


def old_batches(dataset, indices: torch.Tensor, batch_size: int, shuffle: bool, generator=None,
                drop_last: bool = False):
    """The per-pass DataLoader of earlier versions (their LoaderSplit), without workers."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=shuffle,
        generator=generator, drop_last=drop_last and len(indices) >= batch_size)
    yield from ((data.to_unit_range(x), y) for x, y in loader)


def same_batches(ours, theirs) -> bool:
    ours, theirs = list(ours), list(theirs)
    return len(ours) == len(theirs) and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ours, theirs, strict=True))


def test_the_cache_is_built_once_and_later_loads_decode_nothing(folder, streaming, monkeypatch, capfd):
    loaded = data.load(folder_config(folder), CPU)
    assert isinstance(loaded.train, data.StreamingSplit)
    assert "as uint8: 30/30 images" in capfd.readouterr().err  # progress while it decodes
    [cache] = cache_dirs(folder)
    made = (cache / "images.npy").stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded after the cache was made")

    monkeypatch.setattr(Image, "open", no_decoding)  # forked workers inherit it too
    again = data.load(folder_config(folder), CPU)
    for _ in range(2):  # two epochs of a later trial
        assert sum(len(x) for x, _ in again.train.batches(8, shuffle=True)) == len(again.train)
    again.val.take(3)
    assert cache_dirs(folder) == [cache] and (cache / "images.npy").stat().st_mtime_ns == made
    assert "caching" not in capfd.readouterr().err


def test_the_cache_holds_exactly_the_decoded_images(tmp_path):
    folder = make_folder(tmp_path / "shapes", per_class=90, size=16)  # batches for several workers
    reference = decoded(folder)
    cache = folder_cache.folder_cache(reference, folder, 12, 1)
    assert cache.built and cache.images.shape == (270, 1, 12, 12) and cache.images.dtype == np.uint8
    for i in range(len(reference)):
        image, label = reference[i]
        assert np.array_equal(cache.images[i], image.numpy()) and cache.labels[i] == label
    assert not folder_cache.folder_cache(decoded(folder), folder, 12, 1).built  # found, not decoded again


def test_streamed_batches_are_those_of_the_old_loader(folder, streaming):
    """Same images, same order and the same draws from the RNG as the DataLoader of earlier versions,
    pass after pass (persistent workers draw nothing more): a seeded run, and a resumed one, are unchanged."""
    config = folder_config(folder)
    loaded = data.load(config, CPU)
    train, _, _ = data.split_indices(30, config, has_test=False)
    reference = decoded(folder)
    for seed in (0, 1):  # two passes of the same workers
        torch.manual_seed(seed)
        ours = list(loaded.train.batches(5, shuffle=True, drop_last=True))
        ours_state = torch.get_rng_state()
        torch.manual_seed(seed)
        assert same_batches(ours, old_batches(reference, train, 5, shuffle=True, drop_last=True))
        assert torch.equal(ours_state, torch.get_rng_state())
    assert all(len(x) == 5 for x, _ in ours) and len(ours) == len(train) // 5  # drop_last
    generator = torch.Generator().manual_seed(3)
    ours = list(loaded.train.batches(7, shuffle=True, generator=generator))
    generator.manual_seed(3)
    assert same_batches(ours, old_batches(reference, train, 7, shuffle=True, generator=generator))
    assert [len(x) for x, _ in ours] == [7, 7, 7, 3]  # a last partial batch without drop_last
    assert same_batches(loaded.train.batches(64, shuffle=False, drop_last=True),  # fewer than a batch
                        old_batches(reference, train, 64, shuffle=False, drop_last=True))


def test_a_pass_inside_another_is_read_too(folder, streaming):
    """Validation in the middle of a training pass (the evaluator does it) gets every image."""
    loaded = data.load(folder_config(folder), CPU)
    val = loaded.val.take(len(loaded.val))
    for _ in loaded.train.batches(4, shuffle=True):
        inner = loaded.val.take(len(loaded.val))
        assert torch.equal(inner[0], val[0]) and torch.equal(inner[1], val[1])
    stopped_early = next(loaded.train.batches(4, shuffle=False))  # a pass left half done
    assert torch.equal(next(loaded.train.batches(4, shuffle=False))[0], stopped_early[0])


def white_images(loaded: data.ImageData) -> int:
    return sum(int((split.take(len(split))[0] == 1).flatten(1).all(1).sum())
               for split in (loaded.train, loaded.val, loaded.test))


def test_a_changed_folder_makes_a_new_cache(folder):
    first = data.load(folder_config(folder), CPU)
    shutil.copy(folder / "bar" / "000.png", folder / "bar" / "extra.png")
    added = data.load(folder_config(folder), CPU)
    assert len(cache_dirs(folder)) == 2
    assert len(added.train) + len(added.val) + len(added.test) == 31
    picture = folder / "box" / "003.png"
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(picture)  # same name, new pixels
    os.utime(picture, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = data.load(folder_config(folder), CPU)
    assert len(cache_dirs(folder)) == 3
    assert white_images(changed) == 1 and white_images(added) == 0
    data.load(folder_config(folder, image_size=8), CPU)  # another size of the same folder
    assert len(cache_dirs(folder)) == 4
    assert first.num_classes == changed.num_classes == 3


def test_a_failed_decoding_leaves_no_cache(folder):
    (folder / "box" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(Exception, match="broken.png|cannot identify"):
        data.load(folder_config(folder), CPU)
    assert cache_dirs(folder) == [] and not list((data.cache_root() / "data").glob(".shapes-*"))
    (folder / "box" / "broken.png").unlink()
    assert len(data.load(folder_config(folder), CPU).train) > 0


def _load_in_child(root: str, cache: str, start, builds) -> None:
    """One trial's process: load the folder, counting the decodings (slowed, so that they would overlap)."""
    os.environ["GANSWEEP_CACHE"] = cache
    from trainers import data as child_data
    from trainers import folder_cache

    build = folder_cache._build

    def slow_build(*args, **kwargs):
        with builds.get_lock():
            builds.value += 1
        time.sleep(1.0)
        build(*args, **kwargs)

    folder_cache._build = slow_build
    start.wait(timeout=60)
    assert len(child_data.load(folder_config(Path(root)), torch.device("cpu")).train) > 0


def test_trials_starting_together_decode_once(folder):
    context = multiprocessing.get_context("spawn")
    start, builds = context.Barrier(2), context.Value("i", 0)
    args = (str(folder), str(data.cache_root()), start, builds)
    trials = [context.Process(target=_load_in_child, args=args) for _ in range(2)]
    for trial in trials:
        trial.start()
    for trial in trials:
        trial.join(timeout=120)
    assert [trial.exitcode for trial in trials] == [0, 0]
    assert builds.value == 1
    assert len(cache_dirs(folder)) == 1 and not list((data.cache_root() / "data").glob(".shapes-*"))


@pytest.mark.parametrize(("threads", "affinity", "workers"),
                         [(1, 16, 1), (2, 16, 1), (4, 16, 3), (16, 16, 8), (16, 3, 2)])
def test_workers_follow_the_trials_cpus(folder, streaming, monkeypatch, threads, affinity, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # what Ray sets from the trial's resources.cpu
    try:
        loaded = data.load(folder_config(folder), CPU)
    finally:
        torch.set_num_threads(before)
    loader = loaded.train.loader
    assert loader.num_workers == workers and loader.persistent_workers
    assert loader is loaded.val.loader  # one set of workers for the folder's splits
    assert not loader.pin_memory  # only on CUDA


def test_workers_persist_across_epochs(folder, streaming):
    loaded = data.load(folder_config(folder), CPU)
    pids = []
    for _ in range(3):
        assert sum(len(x) for x, _ in loaded.train.batches(4, shuffle=True)) == len(loaded.train)
        pids.append([w.pid for w in loaded.train.loader._iterator._workers])  # torch's own record
    assert pids[0] == pids[1] == pids[2] and all(pids[0])


def test_streaming_to_cuda_pins_memory(folder, streaming):
    """Loading touches no GPU: the DataLoader is made with pinned memory for the copies to come."""
    loaded = data.load(folder_config(folder), torch.device("cuda"))
    assert loaded.train.loader.pin_memory


def test_memory_limit_scales_with_the_gpu_share_on_cuda_only():
    cuda, limit = torch.device("cuda"), data.IN_MEMORY_BYTES
    assert data.memory_limit(cuda, None) == limit  # the whole card
    assert data.memory_limit(cuda, 0.25) == limit / 4
    assert data.memory_limit(CPU, 0.25) == data.memory_limit(CPU, None) == limit
    assert data.fits_in_memory(limit // 2, cuda, 0.5) and not data.fits_in_memory(limit // 2 + 1, cuda, 0.5)
    assert data.fits_in_memory(limit // 2 + 1, CPU, 0.5)


def test_a_gpu_share_streams_a_folder_that_the_whole_card_would_hold(folder, monkeypatch):
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 30 * 12 * 12 * 2)  # twice the folder's bytes
    quarter = folder_config(folder, gpu_share=0.25)
    assert isinstance(data.load(quarter, torch.device("cuda")).train, data.StreamingSplit)
    assert isinstance(data.load(quarter, CPU).train, data.TensorSplit)  # the share is the GPU's only
    if torch.cuda.is_available():
        assert isinstance(data.load(folder_config(folder, gpu_share=0.5), torch.device("cuda")).train,
                          data.TensorSplit)


def test_small_folders_are_held_in_memory_from_the_cache(folder):
    loaded = data.load(folder_config(folder), CPU)
    assert isinstance(loaded.train, data.TensorSplit) and len(cache_dirs(folder)) == 1
    config = folder_config(folder)
    train, _, _ = data.split_indices(30, config, has_test=False)
    assert same_batches(loaded.train.batches(64, shuffle=False),
                        old_batches(decoded(folder), train, 64, shuffle=False))


def test_the_benchmark_reports_every_loader(tmp_path):
    from benchmarks import data_loading

    root = data_loading.write_folder(tmp_path / "faces", 80)
    settings = data_loading.Settings(images=80, repeats=1)
    result = data_loading.measure(root, "cpu", settings)
    assert all(len(rates) == 1 and rates[0] > 0 for rates in result["images_per_s"].values())
    assert result["train_images"] == 64  # 80 % of 80, whole batches of 64
    table = data_loading.table(result, settings, "cpu", quick=True)
    assert [row[0].split(":")[0] for row in table.rows] == ["before", "after", "after", "after"]
    assert table.rows[0][3] == "1.00x" and "| before" in table.markdown()


def test_an_empty_split_streams_nothing(folder, streaming):
    loaded = data.load(folder_config(folder, test_fraction=0.0), CPU)
    assert len(loaded.test) == 0 and list(loaded.test.batches(4, shuffle=True)) == []


@pytest.mark.parametrize("large", [False, True])
def test_loading_draws_nothing_from_the_global_rng(folder, monkeypatch, large):
    """A seeded trial initialises its models alike whether it made the cache or found it."""
    if large:
        monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)
    for _ in range(2):  # makes the cache, then finds it
        state = torch.get_rng_state()
        data.load(folder_config(folder), CPU)
        assert torch.equal(state, torch.get_rng_state())


def test_a_full_disk_is_an_error_not_a_crash(folder, monkeypatch):
    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match="no room for the .* GANSWEEP_CACHE"):
        data.load(folder_config(folder), CPU)
    assert cache_dirs(folder) == [] and not list((data.cache_root() / "data").glob(".shapes-*"))
