"""The CUDA code paths, checked on the CPU (issue #15): host syncs by emulation, augmentation
that never reads device tensors, text trimmed on the host, persistent loaders sized for
/dev/shm, one GPU per sweep worker, the deterministic mode, and the GPU benchmark."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_DATA

from toolkit._util.syncs import count_host_syncs, device_roots
from toolkit.al.finetune import (
    FinetuneConfig,
    _gather_windows,
    _slice_windows,
    finetune,
    iterate_batches,
    prefetch_for_shm,
)
from toolkit.data import create_dataset
from toolkit.data.base import TextDataset
from toolkit.models import create_model


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return create_dataset("toyworld", "train", **TINY_DATA, cache_dir=str(tmp_path_factory.mktemp("d")))


def test_sync_counter_counts_host_reads_of_device_tensors_only():
    w = torch.ones(3)
    with count_host_syncs("cpu", [w]) as c:
        s = (w * 2).sum()
        float(s)
        s.item()
        torch.ones(3).sum().item()  # not derived from a device tensor: no sync on CUDA either
        (w + 1).tolist()
    assert c.n == 3 and c.where == ["__float__", "item", "tolist"]


@pytest.mark.parametrize("stop_loss", ["batch", "last_micro_batch"])
def test_finetune_syncs_once_per_step(pool, stop_loss):
    """The stop rule's read of the loss is the only time a step waits for the device:
    augmentation, batching and accumulation over 4 micro-batches read nothing back."""
    torch.manual_seed(0)
    model = create_model("toy_resnet", weights="random", num_classes=2)
    cfg = FinetuneConfig(max_steps=3, batch_size=16, micro_batch=4, augment_pad=2, stop_loss=stop_loss)
    with count_host_syncs("cpu", device_roots(model, pool.images, pool._labels_tensor)) as c:
        out = finetune(model, pool, np.arange(40), cfg, device=torch.device("cpu"), seed=0)
    assert out["steps"] == 3 and c.n == 3 and set(c.where) == {"__float__"}


@pytest.mark.parametrize("h,w", [(24, 24), (20, 28)])
def test_gathered_windows_equal_sliced_windows(h, w):
    """The device path (one gather, offsets never on the host) cuts what slicing cuts."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 32, 36, generator=gen)
    dy, dx = torch.randint(0, 32 - h + 1, (6,), generator=gen), torch.randint(0, 36 - w + 1, (6,), generator=gen)
    expected = torch.stack([x[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(6)])
    assert torch.equal(_gather_windows(x, dy, dx, h, w), expected)
    assert torch.equal(_slice_windows(x, dy, dx, h, w), expected)


def _text(n=6, length=12, pad=1):
    tokens = torch.full((n, length), pad, dtype=torch.int32)
    for i in range(n):
        tokens[i, :3 + i] = 5 + i
    attrs = pd.DataFrame({"y": np.arange(n) % 2}, index=pd.Index(np.arange(n), name="id"))
    return TextDataset("text", "train", tokens, attrs, "y", None, ("a", "b"), pad_id=pad)


def test_text_batches_are_trimmed_on_the_host():
    ds = _text()
    x, y = ds.get_batch(np.array([0, 2]))
    assert x["input_ids"].shape == (2, 5) and x["attention_mask"].sum().item() == 3 + 5
    assert torch.equal(ds.raw_batch(np.array([0, 2])), ds.images[[0, 2], :5])
    with count_host_syncs("cpu", [ds.images]) as c:  # the trim reads the tokens: a sync if done on the device
        ds.trim(ds.images[:2])
    assert c.n == 1
    marked = ds.images.clone()
    with count_host_syncs("cpu", [marked]) as c:  # prepare, which runs on the device, reads nothing back
        ds.prepare(marked[:, :8])
    assert c.n == 0


def test_inference_loaders_persist_across_calls(pool):
    order = np.arange(40)
    first = [c for c, _ in iterate_batches(pool, order, device=torch.device("cpu"), batch_size=16, workers=2)]
    loader = pool._loaders[(2, False)]
    pids = sorted(w.pid for w in loader._iterator._workers)
    second = [c for c, _ in iterate_batches(pool, order[::-1], device=torch.device("cpu"), batch_size=16, workers=2)]
    assert pool._loaders[(2, False)] is loader and sorted(w.pid for w in loader._iterator._workers) == pids
    assert np.array_equal(np.concatenate(first), order) and np.array_equal(np.concatenate(second), order[::-1])


def test_prefetch_is_sized_to_shared_memory(tmp_path):
    assert prefetch_for_shm(2, 1_000, shm=str(tmp_path)) == 2
    with pytest.raises(RuntimeError, match="loader_workers=4 need .* --shm-size"):
        prefetch_for_shm(4, 10**15, shm=str(tmp_path))


def test_sweep_workers_are_bound_to_one_gpu_each(tmp_path):
    """Each pool worker takes one GPU index at start and keeps it for every task it runs."""
    script = tmp_path / "bind.py"
    script.write_text(
        "import concurrent.futures as cf, multiprocessing as mp, os, time, json\n"
        "from toolkit.al.sweep import init_worker\n"
        "def work(_):\n"
        "    time.sleep(0.3)\n"
        "    return os.getpid(), os.environ['CUDA_VISIBLE_DEVICES']\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context('spawn')\n"
        "    q = ctx.Queue()\n"
        "    for g in (0, 1): q.put(g)\n"
        "    with cf.ProcessPoolExecutor(2, mp_context=ctx, initializer=init_worker, initargs=(os.getpid(), q)) as p:\n"
        "        print(json.dumps(list(p.map(work, range(8)))))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=os.getcwd(), check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    pairs = json.loads(out.stdout.strip().splitlines()[-1])
    gpu_of = {}
    for pid, gpu in pairs:
        assert gpu_of.setdefault(pid, gpu) == gpu  # a worker never changes GPU
    assert sorted(gpu_of.values()) == ["0", "1"]  # two workers, two GPUs


def test_deterministic_mode_is_a_config_key(monkeypatch):
    from toolkit._util.repro import set_deterministic
    from toolkit.config import resolve_config

    assert resolve_config("toy", ["deterministic=true"]).deterministic is True
    with pytest.raises(ValueError, match="'deterministic' takes bool"):
        resolve_config("toy", ["deterministic=sometimes"])
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)


def test_gpu_benchmark_runs_tiny_on_cpu(tmp_path):
    """benchmarks/gpu_paper_scale.py at smoke size: its rates are positive, the step loop
    syncs once per step, and its paper-run estimate is the sum it says it is."""
    sys.path.insert(0, "benchmarks")
    try:
        import gpu_paper_scale
    finally:
        sys.path.remove("benchmarks")
    result = gpu_paper_scale.main(["--tiny", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["model"] == "tiny_bit"
    eager = result["eager"]
    assert [f["micro_batch"] for f in eager["finetune"]] == [8, 32]
    assert all(f["images_per_s"] > 0 and f["syncs_per_step"] == 1 for f in eager["finetune"])
    est = eager["estimate"]
    best = max(f["images_per_s"] for f in eager["finetune"])
    rate = eager["score"]["images_per_s"]
    assert est["rounds"] == 65
    assert est["train_s"] == pytest.approx(65 * 500 * 32 / best)
    assert est["eval_s"] == pytest.approx(65 * (1199 + 5794) / rate)
    assert est["score_s"] == pytest.approx(sum(4795 - (40 + 5 * r) for r in range(64)) / rate)
    assert est["run_s"] == pytest.approx(est["train_s"] + est["eval_s"] + est["score_s"])


def test_auto_micro_batch_takes_the_largest_divisor_that_fits():
    from toolkit.al.finetune import choose_micro_batch

    tried = []
    assert choose_micro_batch(32, lambda m: tried.append(m) or m <= 10) == 8
    assert tried == [32, 16, 8]  # divisors of 32 only, largest first
    assert choose_micro_batch(12, lambda m: m <= 5) == 4
    with pytest.raises(RuntimeError, match="not even a micro-batch of 1"):
        choose_micro_batch(4, lambda m: False)


def test_auto_micro_batch_on_cpu_is_the_whole_batch_and_is_recorded(pool):
    from toolkit.config import resolve_config

    assert resolve_config("toy", ["finetune.micro_batch=auto"]).finetune.micro_batch == "auto"
    with pytest.raises(ValueError, match="micro_batch' must be >= 1 or 'auto'"):
        resolve_config("toy", ["finetune.micro_batch=big"])
    out = {}
    for micro in ("auto", 16):
        torch.manual_seed(0)
        model = create_model("toy_resnet", weights="random", num_classes=2)
        cfg = FinetuneConfig(max_steps=2, batch_size=16, micro_batch=micro, flip=False)
        out[micro] = finetune(model, pool, np.arange(32), cfg, device=torch.device("cpu"), seed=0)
    assert out["auto"]["micro_batch"] == 16 and out["auto"]["final_loss"] == out[16]["final_loss"]
