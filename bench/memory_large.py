"""Peak memory and speed of a 224 px split larger than a RAM budget: memory-mapped vs loaded.

    python bench/memory_large.py [--gb 3] [--budget-gb 2] [--train-steps 10] [--workdir /tmp]

Writes (in a temporary folder, deleted afterwards) a ``pathmnist_224.npz`` in
the official layout (uncompressed ``np.savez`` members, 3-channel uint8
images) whose training split is ``--gb`` GB, then runs each case in a fresh
process while a thread of this one samples the anonymous memory of that
process and its children (``RssAnon`` and, where the kernel has it,
``Pss_Anon`` from ``/proc/<pid>/smaps_rollup``, which counts pages forked
loader processes share only once) every 20 ms:

- ``stream``: one pass over the *whole* training split in shuffled batches of
  64, as an epoch reads it (``data.load_batches``), no model;
- ``train``: ``--train-steps`` optimizer steps of the plain CNN (batch 16)
  through ``training.train_one_epoch`` on batches drawn from the whole split.

Each with the split memory-mapped (``--workers`` 0 and 2) and loaded into RAM
(the alternative). The file's pages are dropped from the page cache before
each case (``posix_fadvise(DONTNEED)``, this file only), so every case starts
cold. Prints a Markdown table; docs/BENCHMARKS_scaling.md records one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLAG, SIZE, CLASSES = "pathmnist", 224, 9
IMAGE_BYTES = SIZE * SIZE * 3


# ------------------------------------------------------------------ the file

def _write_member(zf: zipfile.ZipFile, name: str, shape: tuple, make_chunk, chunk_rows: int) -> None:
    """One ``.npy`` member written in chunks, so writing never holds the split in RAM."""
    with zf.open(name + ".npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_1_0(out, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for start in range(0, shape[0], chunk_rows):
            out.write(np.ascontiguousarray(make_chunk(start, min(shape[0], start + chunk_rows))).tobytes())


def write_large_npz(path: Path, n_train: int, n_eval: int, seed: int = 0) -> None:
    """A MedMNIST-format file: noise with a class-dependent bright band, as tests/conftest does."""
    rng = np.random.default_rng(seed)

    def images(start, stop):
        chunk = rng.integers(0, 90, size=(stop - start, SIZE, SIZE, 3), dtype=np.uint8)
        labels = np.arange(start, stop) % CLASSES
        for k in range(CLASSES):
            lo = k * SIZE // CLASSES
            chunk[labels == k, lo:lo + SIZE // CLASSES] = 220
        return chunk

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
            _write_member(zf, f"{split}_images", (n, SIZE, SIZE, 3), images, 512)
            _write_member(zf, f"{split}_labels", (n, 1), lambda a, b: (np.arange(a, b) % CLASSES)[:, None]
                          .astype(np.uint8), 1 << 20)


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ sampling

def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _kib(path: str, key: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakSampler(threading.Thread):
    """Peak (over time) of the sum over a process tree of RssAnon, Pss_Anon and RssFile, in bytes."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = {"rss_anon": 0, "pss_anon": 0, "rss_file": 0}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            now = {"rss_anon": 0, "pss_anon": 0, "rss_file": 0}
            for p in _tree(self.pid):
                now["rss_anon"] += _kib(f"/proc/{p}/status", "RssAnon") * 1024
                now["rss_file"] += _kib(f"/proc/{p}/status", "RssFile") * 1024
                now["pss_anon"] += _kib(f"/proc/{p}/smaps_rollup", "Pss_Anon") * 1024
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)
            self.done.wait(self.interval)


# ------------------------------------------------------------------ one case (in a fresh process)

def run_case(data_dir: str, case: str, memmap: bool, workers: int, train_steps: int) -> dict:
    import torch

    from medscope import data
    from medscope.models import build_model
    from medscope.train import augment
    from medscope.train.loop import EpochConfig, make_optimizer, make_scheduler, memory_format_for, train_one_epoch

    info = data.dataset_info(FLAG, SIZE)
    started = time.perf_counter()
    split = data.load_split(info, data_dir, "train", check_md5=False, mmap=memmap)
    load_seconds = time.perf_counter() - started
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    if case == "stream":
        order = torch.randperm(len(split), generator=generator)
        started, seen = time.perf_counter(), 0
        for images, _ in data.load_batches(split, order.split(64), device, workers=workers):
            seen += images.shape[0]
        seconds = time.perf_counter() - started
        return {"images": seen, "seconds": seconds, "images_per_s": seen / seconds, "load_seconds": load_seconds}
    batch = 16
    indices = torch.randperm(len(split), generator=generator)[: train_steps * batch]  # spread over the file
    torch.manual_seed(0)
    model = build_model("cnn", 3, CLASSES, 2, SIZE).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, "adamw", 1e-3, 5e-4)
    scheduler = make_scheduler(optimizer, train_steps, 0, "constant")
    cfg = EpochConfig(task=info.task, num_classes=CLASSES, batch_size=batch,
                      augment=augment.make_config(FLAG, "light", 2), memory_format=memory_format_for(2, device),
                      workers=workers)
    step_times, last = [], [time.perf_counter()]

    def on_step():
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    result = train_one_epoch(model, split, cfg, optimizer, scheduler, None, device, generator, indices=indices,
                             on_step=on_step)
    return {"images": result["images"], "seconds": result["seconds"],
            "images_per_s": batch / statistics.median(step_times[1:]), "load_seconds": load_seconds}


def measure(data_dir: Path, npz: Path, case: str, memmap: bool, workers: int, train_steps: int,
            cache: Path) -> dict:
    drop_from_page_cache(npz)
    for npy in cache.rglob("*.npy"):
        drop_from_page_cache(npy)
    cmd = [sys.executable, __file__, "--one", json.dumps([str(data_dir), case, memmap, workers, train_steps])]
    env = dict(os.environ, MEDSCOPE_CACHE=str(cache))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    sampler.done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{case} memmap={memmap} workers={workers} failed")
    return dict(json.loads(out.strip().splitlines()[-1]), **sampler.peak)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=3.0, help="size of the training split's images (GB)")
    parser.add_argument("--budget-gb", type=float, default=2.0, help="the RAM budget the memory map must stay under")
    parser.add_argument("--eval-images", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(*json.loads(args.one))))
        return

    n_train = int(args.gb * 1e9 // IMAGE_BYTES)
    need = 2.2 * n_train * IMAGE_BYTES  # the .npz and the .npy extracted for the memory map
    if shutil.disk_usage(args.workdir).free < need + 2e9:
        raise SystemExit(f"{args.workdir} has less than {(need + 2e9) / 1e9:.1f} GB free")
    root = Path(tempfile.mkdtemp(prefix="medscope-memory-", dir=args.workdir))
    try:
        data_dir, cache = root / "data", root / "cache"
        data_dir.mkdir()
        npz = data_dir / f"{FLAG}_{SIZE}.npz"
        started = time.perf_counter()
        write_large_npz(npz, n_train, args.eval_images)
        print(f"wrote {npz.stat().st_size / 1e9:.2f} GB ({n_train} train images of {SIZE}x{SIZE}x3) "
              f"in {time.perf_counter() - started:.0f} s; RAM budget {args.budget_gb:.1f} GB; "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        os.environ["MEDSCOPE_CACHE"] = str(cache)
        from medscope import data

        started = time.perf_counter()  # extract the .npy once, as the first memory-mapped run would
        data.load_split(data.dataset_info(FLAG, SIZE), data_dir, "train", check_md5=False, mmap=True)
        print(f"extracted the training split for memory-mapping in {time.perf_counter() - started:.0f} s",
              flush=True)
        # Pss_Anon is the figure to read: RssAnon counts pages a forked loader shares with its parent twice
        print("| case | split | workers | peak RssAnon (sum) | peak Pss_Anon | peak RssFile | images/s | load s |")
        print("|---|---|---|---|---|---|---|---|")
        for case in ("stream", "train"):
            for memmap, workers in ((True, 0), (True, 2), (False, 0)):
                r = measure(data_dir, npz, case, memmap, workers, args.train_steps, cache)
                flag = "" if not memmap or r["pss_anon"] < args.budget_gb * 1e9 else " (over budget)"
                print(f"| {case} | {'memory-mapped' if memmap else 'in RAM'} | {workers} | "
                      f"{r['rss_anon'] / 1e9:.2f} GB | {r['pss_anon'] / 1e9:.2f} GB{flag} | "
                      f"{r['rss_file'] / 1e9:.2f} GB | {r['images_per_s']:.1f} | {r['load_seconds']:.1f} |",
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
