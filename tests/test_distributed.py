"""medscope.train.distributed and train.py under torchrun: sharding, collectives, one writer, faults.

The end-to-end tests start ``python -m torch.distributed.run --standalone
--nproc_per_node=2`` on this machine's CPUs (Gloo), exactly as a user would.
They train on a generated file in the official format with a learnable
signal: two epochs of the real 28 px files leave AUC at chance level, where
comparing two runs' metrics would compare noise.
"""
import csv
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medscope import checkpoints
from medscope.app import cli
from medscope.runs import RunLayout
from medscope.train import config, distributed, loop
from medscope.train.distributed import DistContext, shard_epoch, shard_range
from tests.conftest import ROOT, history, train_run, write_fake_medmnist

ARGS = ["--dataset", "breastmnist", "--model", "cnn", "--epochs", "2", "--batch-size", "64", "--seed", "3",
        "--skip-md5"]
LAUNCH_TIMEOUT_S = 120  # a job that hangs fails the test instead of the suite


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _info(run: Path) -> dict:
    return json.loads(RunLayout(run).run_json.read_text())


# ---------------------------------------------------------------- sharding

def test_each_step_splits_the_single_process_batch_over_the_ranks():
    order = torch.randperm(22, generator=torch.Generator().manual_seed(0))
    shards = [shard_epoch(order, 8, 2, rank, drop_last=True) for rank in range(2)]
    assert [len(s) for s in shards] == [8, 8]  # 22 -> two full global batches of 8, as one process takes them
    for step in range(2):
        parts = [s[step * 4:(step + 1) * 4] for s in shards]
        assert torch.equal(torch.cat(parts), order[step * 8:(step + 1) * 8])


def test_shards_are_disjoint_and_cover_the_kept_batches():
    order = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    shards = [shard_epoch(order, 12, 4, rank, drop_last=True) for rank in range(4)]
    taken = torch.cat(shards)
    assert len(taken) == 96 and len(set(taken.tolist())) == 96
    assert set(taken.tolist()) == set(order[:96].tolist())


def test_the_global_batches_do_not_depend_on_the_number_of_ranks():
    order = torch.randperm(48, generator=torch.Generator().manual_seed(2))
    for world in (1, 2, 4):
        shards = [shard_epoch(order, 16, world, rank, drop_last=True) for rank in range(world)]
        local = 16 // world
        for step in range(3):
            together = sorted(torch.cat([s[step * local:(step + 1) * local] for s in shards]).tolist())
            assert together == sorted(order[step * 16:(step + 1) * 16].tolist())


def test_one_rank_takes_what_a_single_process_takes():
    order = torch.randperm(21, generator=torch.Generator().manual_seed(3))
    assert torch.equal(shard_epoch(order, 8, 1, 0, drop_last=True), order[:16])
    assert torch.equal(shard_epoch(order[:5], 8, 1, 0, drop_last=False), order[:5])


def test_a_kept_uneven_batch_is_padded_with_the_first_indices():
    order = torch.tensor([7, 3, 9, 1, 4])
    assert shard_epoch(order, 8, 2, 0, drop_last=False).tolist() == [7, 3, 9]
    assert shard_epoch(order, 8, 2, 1, drop_last=False).tolist() == [1, 4, 7]  # padded like DistributedSampler


def test_the_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="equal parts"):
        shard_epoch(torch.arange(10), 10, 3, 0, drop_last=True)


def test_evaluation_shards_are_contiguous_and_in_order():
    assert [shard_range(10, 3, r) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [shard_range(1, 2, r) for r in range(2)] == [(0, 0), (0, 1)]  # a rank may get nothing


def test_rank_0_draws_what_a_single_process_draws_and_other_ranks_their_own():
    loop.seed_epoch(5, 2)
    single = torch.rand(4)
    loop.seed_epoch(5, 2)
    assert loop.seed_rank(5, 2, 0) is None and torch.equal(torch.rand(4), single)
    draws = {}
    for rank in (1, 2):
        loop.seed_epoch(5, 2)
        generator = loop.seed_rank(5, 2, rank)
        draws[rank] = (torch.rand(4), torch.rand(4, generator=generator))
    loop.seed_epoch(5, 2)
    again = loop.seed_rank(5, 2, 1)
    assert torch.equal(torch.rand(4), draws[1][0]) and torch.equal(torch.rand(4, generator=again), draws[1][1])
    assert not torch.equal(draws[1][0], single) and not torch.equal(draws[1][0], draws[2][0])
    assert not torch.equal(draws[1][1], draws[2][1])


def test_a_single_process_needs_no_process_group():
    ctx = distributed.init("cpu", environ={})
    assert ctx == DistContext() and not ctx.distributed and ctx.is_main
    assert ctx.record() == {"world_size": 1, "nnodes": 1, "backend": "none"}
    assert distributed.on_main(ctx, lambda: 42) == 42 and distributed.broadcast_object(ctx, "x") == "x"


def test_the_global_batch_must_split_over_the_processes():
    with pytest.raises(cli.UsageError, match="use 63 or 66"):
        config.check_batch(64, DistContext(world_size=3, backend="gloo").world_size)


def test_a_job_says_where_it_trains():
    assert DistContext().describe() == "cpu"
    two = DistContext(rank=1, world_size=2, local_world_size=2, backend="gloo")
    assert two.describe() == "2 CPU processes (gloo, 1 node)"
    nodes = DistContext(world_size=8, local_world_size=4, backend="nccl", device=torch.device("cuda", 0))
    assert nodes.describe() == "8 GPUs (nccl, 2 nodes)"


# ---------------------------------------------------------------- collectives (2 forked Gloo processes)

def _collectives(rank: int, store: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    ctx = DistContext(rank=rank, world_size=2, local_world_size=2, backend="gloo")
    try:
        split = torch.arange(7 * 2).view(7, 2)
        start, stop = shard_range(7, 2, rank)  # 3 rows on rank 0, 4 on rank 1
        gathered = distributed.all_gather_rows(ctx, split[start:stop])
        total = distributed.all_reduce_sum(ctx, torch.tensor(float(rank + 1)))
        shared = distributed.on_main(ctx, lambda: f"made by rank {rank}")
        try:
            distributed.on_main(ctx, lambda: (_ for _ in ()).throw(cli.UsageError("bad run name")))
            error = None
        except cli.UsageError as exc:
            error = str(exc)
        results.put((rank, gathered.tolist(), float(total), shared, error))
    finally:
        torch.distributed.destroy_process_group()


def test_gathered_shards_come_back_in_split_order_and_errors_reach_every_rank(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_collectives, args=(rank, str(tmp_path / "store"), results))
               for rank in range(2)]
    for worker in workers:
        worker.start()
    got = sorted(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    expected = torch.arange(14).view(7, 2).tolist()
    for rank, gathered, total, shared, error in got:
        assert gathered == expected  # every rank holds the whole split, in its own order
        assert total == 3.0 and shared == "made by rank 0" and error == "bad run name"
    assert [w.exitcode for w in workers] == [0, 0]


# ---------------------------------------------------------------- train.py under torchrun

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A breastmnist-shaped file (1 channel, 2 classes): 256 train, 64 val, 64 test images."""
    folder = tmp_path_factory.mktemp("data")
    write_fake_medmnist(folder / "breastmnist.npz", n_channels=1, size=28, n_labels=2, n_per_split=(256, 64, 64))
    return folder


def _torchrun(workdir: Path, data_dir: Path, *args: str, fault: str | None = None,
              nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MEDMNIST_DIR=str(data_dir))
    env.pop("MEDSCOPE_TEST_FAULT", None)
    if fault:
        env["MEDSCOPE_TEST_FAULT"] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "tests" / "dist_worker.py"), "--device", "cpu", "--dist-timeout", "60",
           "--results-dir", str(workdir / "results"), "--runs-dir", str(workdir / "runs"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, timeout=LAUNCH_TIMEOUT_S)


def _only_run(workdir: Path) -> Path:
    (run,) = (workdir / "results").iterdir()
    return run


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory, data_dir) -> Path:
    """Plain CNN, 2 epochs of 4 global batches of 64, trained by 2 Gloo processes."""
    workdir = tmp_path_factory.mktemp("torchrun")
    proc = _torchrun(workdir, data_dir, *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _only_run(workdir)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, data_dir) -> Path:
    """The same run in one process, without torchrun."""
    return train_run(tmp_path_factory.mktemp("single"), data_dir, *ARGS)


@pytest.mark.timeout(300)
def test_torchrun_writes_the_run_folder_of_a_single_process_once(torchrun_run, single_run):
    assert sorted(p.name for p in torchrun_run.iterdir()) == sorted(p.name for p in single_run.iterdir())
    workdir = torchrun_run.parent.parent
    assert [p.name for p in (workdir / "runs").iterdir()] == [torchrun_run.name]  # one run, one writer
    assert len(list(RunLayout(torchrun_run).tensorboard_dir(workdir / "runs").iterdir())) == 1  # one event file
    info = _info(torchrun_run)
    assert info["status"] == "completed"
    assert info["environment"]["world_size"] == 2 and info["environment"]["backend"] == "gloo"
    assert info["config"]["world_size"] == 2 and info["config"]["batch_size"] == 64
    assert info["config"]["command"].startswith("torchrun --standalone --nproc_per_node=2 train.py ")
    model = checkpoints.model_from_checkpoint(checkpoints.load(RunLayout(torchrun_run).best_pt))
    assert not any(k.startswith("module.") for k in model.state_dict())  # loads without DDP


@pytest.mark.timeout(300)
def test_torchrun_metrics_are_those_of_a_single_process_within_tolerance(torchrun_run, single_run):
    # Same global batches, steps and schedule; what differs is BatchNorm statistics over 32
    # images per process instead of 64, and rank 1's own dropout and augmentation draws.
    ddp, single = _csv(RunLayout(torchrun_run).history_csv), _csv(RunLayout(single_run).history_csv)
    assert [r["lr"] for r in ddp] == [r["lr"] for r in single]  # the schedule ignores the world size
    for a, b in zip(ddp, single):
        for key in ("train_loss", "val_loss", "train_auc", "val_auc"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=0.05), key
    test_ddp, test_single = _info(torchrun_run)["metrics"], _info(single_run)["metrics"]
    assert test_single["test_auc"] > 0.95  # a task both runs learn, so the comparison means something
    for key in ("test_auc", "test_acc"):
        assert test_ddp[key] == pytest.approx(test_single[key], abs=0.05), key
    out_ddp = torch.load(RunLayout(torchrun_run).inference_outputs, weights_only=True)
    out_single = torch.load(RunLayout(single_run).inference_outputs, weights_only=True)
    assert out_ddp["logits"].shape == out_single["logits"].shape == (64, 2)  # the whole test split
    assert torch.equal(out_ddp["labels"], out_single["labels"])


@pytest.mark.timeout(300)
def test_same_seed_and_world_size_give_the_samehistory(torchrun_run, tmp_path, data_dir):
    proc = _torchrun(tmp_path, data_dir, *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = _only_run(tmp_path)
    assert history(again) == history(torchrun_run)
    assert RunLayout(again).metrics_json.read_text() == RunLayout(torchrun_run).metrics_json.read_text()


@pytest.mark.timeout(300)
def test_ctrl_c_under_torchrun_keeps_a_checkpoint_that_resumes_to_the_same_run(torchrun_run, tmp_path, data_dir):
    proc = _torchrun(tmp_path, data_dir, *ARGS, fault="ctrl-c:0:2")  # Ctrl-C as epoch 2 starts
    assert proc.returncode != 0
    cut = _only_run(tmp_path)
    assert _info(cut)["status"] == "interrupted" and "resume with: torchrun" in proc.stdout
    assert torch.load(RunLayout(cut).last_pt, weights_only=True)["epoch"] == 1

    proc = _torchrun(tmp_path, data_dir, "--resume", cut.name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _info(cut)["status"] == "completed"
    assert history(cut) == history(torchrun_run)


@pytest.mark.timeout(300)
def test_a_dead_rank_ends_the_whole_job_with_the_checkpoint_intact(tmp_path, data_dir):
    started = time.monotonic()
    proc = _torchrun(tmp_path, data_dir, *ARGS, "--epochs", "3", fault="exit:1:2")  # rank 1 dies as epoch 2 starts
    assert proc.returncode != 0 and time.monotonic() - started < LAUNCH_TIMEOUT_S
    run = _only_run(tmp_path)
    info = _info(run)
    assert info["status"] in ("failed", "interrupted") and info["epochs_completed"] == 1
    last = checkpoints.load(RunLayout(run).last_pt)
    assert last["epoch"] == 1 and len(_csv(RunLayout(run).history_csv)) == 1
    checkpoints.model_from_checkpoint(last)  # loads and builds


def test_only_errors_a_dead_peer_causes_count_as_another_process_failing():
    dead = ["[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29400",
            "NCCL error: remote process exited or there was a network error, NCCL version 2.21.5"]
    own = ["NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error", "CUDA error: out of memory",
           "gloo: invalid argument"]
    assert all(distributed.is_peer_failure(RuntimeError(text)) for text in dead)
    assert not any(distributed.is_peer_failure(RuntimeError(text)) for text in own)
    assert not distributed.is_peer_failure(ValueError(dead[0]))


# ---------------------------------------------------------------- background loading

@pytest.mark.timeout(300)
def test_background_loading_changes_no_number(single_run, tmp_path, data_dir):
    run = train_run(tmp_path, data_dir, *ARGS, "--workers", "2")
    assert history(run) == history(single_run)
    assert RunLayout(run).metrics_json.read_text() == RunLayout(single_run).metrics_json.read_text()
