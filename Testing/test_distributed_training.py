"""Training under torchrun (issue #10): DistributedDataParallel on gloo equals single-process training at the same
global batch, only rank 0 writes, checkpoints hold the unwrapped model, and a 2-process run resumes exactly.

The 2-process runs go through the real command line (`python -m torch.distributed.run --standalone
--nproc-per-node 2 -m toporeg.cli.main train ...`) on tiny BatchNorm-free configs; the single-process
references run in this process."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from toporeg.reductions import batch_sum
from toporeg.training.distributed import DistributedContext
from toporeg.training.sharding import BatchDrawer
from toporeg.training.synth import SynthMorphPairs

TOL = 1e-6
OUTPUTS = {"checkpoint.safetensors", "report.json", "train_log.csv", "val_log.csv"}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


# --- the context on its own -------------------------------------------------------------------------------------
def test_single_process_context_changes_nothing():
    ctx = DistributedContext.init("cpu", env={})
    model = torch.nn.Linear(2, 1)
    assert not ctx.distributed and ctx.is_main and ctx.shard(3) == (0, 3)
    assert ctx.wrap(model) == model.forward and ctx.wrap(model, "extra_repr") == model.extra_repr
    assert ctx.decide(None) is None and ctx.decide(0.25) == 0.25 and ctx.gather_rng_states() == {}
    values = {"loss": torch.tensor(2.0)}
    assert ctx.mean_over_processes(values) is values and ctx.describe() == {}
    sums = torch.tensor([1.0, 2.0])
    with ctx.pooled_batch():
        assert batch_sum(sums) is sums
    assert ctx.finish("report") == "report"


def test_a_global_batch_must_split_into_equal_shares():
    assert DistributedContext(rank=1, world_size=2).shard(4) == (2, 4)
    assert DistributedContext(rank=2, world_size=3).shard(6) == (4, 6)
    with pytest.raises(ValueError, match="not divisible by the 2 processes"):
        DistributedContext(rank=0, world_size=2).shard(3)
    with pytest.raises(ValueError, match="unknown data_seeding"):
        BatchDrawer(DistributedContext(), "shuffled", 2)


@pytest.mark.parametrize("mode", ["stream", "per_sample"])
def test_the_shards_of_a_step_are_the_whole_batch_of_one_process(mode):
    def shard(rank: int, world: int) -> dict:
        source = SynthMorphPairs((16, 16), seed=3)
        drawer = BatchDrawer(DistributedContext(rank=rank, world_size=world), mode, 4)
        return drawer(source.rng, 3, 5, source.sample)  # step 5

    whole = shard(0, 1)
    halves = [shard(0, 2), shard(1, 2)]
    assert whole["moving"].shape[0] == 4 and halves[1]["moving"].shape[0] == 2
    for key in ("moving", "fixed", "moving_labels", "fixed_labels"):
        assert torch.equal(torch.cat([h[key] for h in halves]), whole[key]), key
    if mode == "per_sample":  # one sample's draw depends on (seed, step, index) only
        other_step = BatchDrawer(DistributedContext(), mode, 4)(SynthMorphPairs((16, 16), seed=3).rng, 3, 6,
                                                              SynthMorphPairs((16, 16), seed=3).sample)
        assert not torch.equal(other_step["moving"], whole["moving"])


# --- a toy model through DDP (spawned gloo processes) -------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toy_training(ctx: DistributedContext) -> dict[str, torch.Tensor]:
    """3 SGD steps on a global batch of 8 with a batch-pooled loss term (a soft-Dice-like ratio of batch sums)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    forward = ctx.wrap(model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=g), torch.rand(8, 2, generator=g)
    part = slice(*ctx.shard(8))
    for _ in range(3):
        with ctx.pooled_batch():
            p = torch.sigmoid(forward(x[part]))
            inter, total = batch_sum(torch.stack([(p * y[part]).sum(), (p + y[part]).sum()])).unbind(0)
            loss = ((p - y[part]) ** 2).mean() + 1.0 - 2.0 * inter / total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _toy_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    ctx = DistributedContext.init("cpu")
    state = _toy_training(ctx)
    decided = [ctx.decide(0.125 if ctx.is_main else 7.0), ctx.decide(None if ctx.is_main else 1.0)]
    mean = ctx.mean_over_processes({"rank": float(ctx.rank)})
    rng = ctx.gather_rng_states()
    save_file({k: v.contiguous() for k, v in state.items()}, f"{out}.{rank}.safetensors")
    Path(f"{out}.{rank}.json").write_text(json.dumps({"keys": list(state), "decided": decided, "mean": mean,
                                                      "rng": sorted(rng), "backend": ctx.backend}))
    ctx.finish(None)


def test_ddp_step_with_pooled_batch_statistics_equals_one_process(tmp_path):
    mp.spawn(_toy_worker, args=(_free_port(), str(tmp_path / "toy")), nprocs=2, join=True)
    reference = _toy_training(DistributedContext())
    for rank in (0, 1):
        got = json.loads((tmp_path / f"toy.{rank}.json").read_text())
        state = load_file(tmp_path / f"toy.{rank}.safetensors")
        assert got["backend"] == "gloo" and got["decided"] == [0.125, None] and got["mean"] == {"rank": 0.5}
        assert got["rng"] == ["rng.torch.rank1"] and got["keys"] == list(reference)  # no "module." prefix
        for key, value in reference.items():
            assert torch.allclose(state[key], value, rtol=0, atol=TOL), key


# --- the real trainers under torchrun -----------------------------------------------------------------------------
def toporeg(argv: list[str]) -> int:
    from toporeg.cli.main import main  # imported here: the spawned toy processes need only torch and training
    return main(argv)


def _torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "toporeg.cli.main", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _max_difference(a: Path, b: Path) -> float:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


def _write(path: Path, cfg: dict) -> str:
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return str(path)


def _same_logs(one: Path, two: Path, name: str, columns: list[str]) -> None:
    a, b = _rows(one / name), _rows(two / name)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for col in columns:
            assert float(rb[col]) == pytest.approx(float(ra[col]), rel=1e-4, abs=1e-6), (name, ra["step"], col)


def test_torchrun_registration_equals_one_process_and_resumes(tmp_path):
    """per_sample seeding: each process draws only its 2 of the 4 samples (and their velocity noise)."""
    cfg = _write(tmp_path / "reg.json", {
        "name": "tiny", "ndim": 2, "model": {"encoder": [4, 8, 8, 8], "decoder": [8, 8, 8], "final_convs": [8]},
        "steps": 4, "batch_size": 4, "lr": 1e-3, "val_every": 2, "val_pairs": 1, "log_every": 1,
        "checkpoint_every": 2, "device": "cpu", "data": {"synthetic": 1.0}, "shape": [32, 32], "plot": False,
        "data_seeding": "per_sample"})
    one, two = tmp_path / "one", tmp_path / "two"
    assert toporeg(["train", "registration", "--config", cfg, "--out", str(one)]) == 0
    _torchrun("registration", "--config", cfg, "--out", str(two), "--steps", "2")
    assert {p.name for p in two.iterdir()} == OUTPUTS | {"tiny.safetensors", "tiny.json"}
    assert [r["step"] for r in _rows(two / "train_log.csv")] == ["1", "2"]
    ckpt = load_file(str(two / "checkpoint.safetensors"))
    assert "extra.rng.torch.rank1" in ckpt and not any(k.startswith(("model.module.", "module.")) for k in ckpt)
    report = json.loads((two / "report.json").read_text(encoding="utf-8"))
    assert report["distributed"] == {"processes": 2, "backend": "gloo"} and report["steps"] == 2

    _torchrun("registration", "--config", cfg, "--out", str(two), "--resume")
    assert _max_difference(one / "tiny.safetensors", two / "tiny.safetensors") < TOL
    assert [r["step"] for r in _rows(two / "train_log.csv")] == ["1", "2", "3", "4"]  # no duplicated rows
    assert [r["step"] for r in _rows(two / "val_log.csv")] == ["2", "4"]
    _same_logs(one, two, "train_log.csv", ["total", "image", "kl", "synthetic_fraction"])  # global-batch means
    _same_logs(one, two, "val_log.csv", ["dice", "synthetic_loss"])


@pytest.fixture(scope="module")
def tiny_seg_caches(tmp_path_factory) -> tuple[Path, Path]:
    from test_topology_cli import tiny_cache

    from toporeg.segmentation.data_cache import build_seg_cache
    folder = tmp_path_factory.mktemp("seg_caches")
    template = tiny_cache(folder / "templates.npz", shape=(32, 32, 16))
    return template, build_seg_cache(folder / "seg.npz", template_cache=template)


def test_torchrun_segmentation_equals_one_process(tmp_path, tiny_seg_caches):
    """Default stream seeding (every process draws the whole batch, keeps its half), instance norm, batch soft
    Dice pooled over both processes: the single-process default run, split in two."""
    template, seg = tiny_seg_caches
    cfg = _write(tmp_path / "seg.json", {
        "model": {"channels": [4, 8, 8, 8], "norm": "instance"}, "steps": 3, "batch_size": 4, "lr": 1e-4,
        "lr_schedule": "constant", "warmup_steps": 0, "schedule_by_time": False, "val_every": 2, "val_images": 2,
        "val_samples": 1, "log_every": 1, "checkpoint_every": 2, "device": "cpu", "plot": False,
        "cache": str(template), "seg_cache": str(seg)})
    one, two = tmp_path / "one", tmp_path / "two"
    assert toporeg(["train", "segmentation", "--task", "tissue", "--config", cfg, "--out", str(one)]) == 0
    _torchrun("segmentation", "--task", "tissue", "--config", cfg, "--out", str(two))
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}
    assert _max_difference(one / "seg_tissue_unet.safetensors", two / "seg_tissue_unet.safetensors") < TOL
    _same_logs(one, two, "train_log.csv", ["loss", "ce", "dice"])
    assert [r["step"] for r in _rows(two / "val_log.csv")] == ["2", "3"]
