"""Benchmark: the whole ``analyze_complexity.py`` on a 28 px ResNet-18 2D run and a 3D ResNet-18 run.

Not a test. Each case is one fresh process (``python analyze_complexity.py
--run <copy> ...``) on a private copy of the run, so the times include Python
and torch start-up, loading the checkpoint, every metric of every tensor, the
figures and the files. The numba kernels are compiled before the first case
(warm on-disk cache, as after the first use on a machine). For each case it
reports the wall time, the process CPU time and peak memory (``wait4``), and
the metric time the script itself recorded (``seconds`` in
``weights_entropy_summary.json``). The obvious alternative, the same tensors
with one worker thread instead of the default, runs in the same session.

    python bench/complexity_speed.py --markdown /tmp/complexity_bench.md
    python bench/complexity_speed.py --run-2d results/0001_breastmnist28_resnet18 --run-3d results/0002_...

Without ``--run-2d`` / ``--run-3d`` it trains the two short runs the tests use
(breastmnist 2 epochs on 256 images; adrenalmnist3d 1 epoch on 96 volumes)
into a temporary folder first (``--data-dir`` or ``$MEDMNIST_DIR``). The
weights after a short run are as expensive as fully trained ones: the cost
depends on the number of weights (11.2 M in 2D, 33.1 M in 3D).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def train(workdir: Path, data_dir: str, *args: str) -> Path:
    results = workdir / "results"
    before = set(results.iterdir()) if results.is_dir() else set()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--data-dir", data_dir, "--results-dir", str(results),
                    "--runs-dir", str(workdir / "runs"), *args], check=True, cwd=ROOT)
    (new,) = set(results.iterdir()) - before
    return new


def private_copy(run: Path, root: Path) -> Path:
    from medscope.runs import RunLayout

    dest = root / "results" / run.name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    source, copy = RunLayout(run), RunLayout(dest)
    shutil.copy2(source.run_json, copy.run_json)
    shutil.copy2(source.best_pt, copy.best_pt)
    return dest


def timed_case(run: Path, root: Path, *args: str) -> dict:
    """One fresh analyze_complexity.py process: wall, CPU and peak RSS of that process alone."""
    copy = private_copy(run, root)
    command = [sys.executable, str(ROOT / "analyze_complexity.py"), "--run", str(copy),
               "--results-dir", str(root / "results"), *args]
    load_before = load_average()
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{output}")
    from medscope.analysis.weights import SUMMARY_JSON
    from medscope.runs import RunLayout

    summary = json.loads((RunLayout(copy).complexity_dir / SUMMARY_JSON).read_text())
    return {"args": " ".join(args) or "(defaults)", "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024, "metrics": summary["seconds"], "tensors": summary["tensors"],
            "weights": summary["weights"], "load": f"{load_before} -> {load_average()}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--run-2d", type=Path, default=None, help="a 28 px ResNet-18 2D run folder")
    parser.add_argument("--run-3d", type=Path, default=None, help="a 3D ResNet-18 run folder")
    parser.add_argument("--data-dir", default=os.environ.get("MEDMNIST_DIR", ""))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="complexity-bench-"))
    try:
        if args.run_2d is None:
            args.run_2d = train(work / "train", args.data_dir, "--dataset", "breastmnist", "--model", "resnet18",
                                "--epochs", "2", "--subset", "256", "--seed", "1")
        if args.run_3d is None:
            args.run_3d = train(work / "train", args.data_dir, "--dataset", "adrenalmnist3d", "--model",
                                "resnet18", "--epochs", "1", "--subset", "96", "--batch-size", "32", "--seed", "1")
        # compile (or load) the numba kernels once, outside the timings
        subprocess.run([sys.executable, "-c", "from medscope.analysis.complexity import sample_entropy; "
                        "import numpy as np; sample_entropy(np.random.default_rng(0).standard_normal(500))"],
                       cwd=ROOT, check=True)
        cases = []
        for label, run in (("ResNet-18 2D, 28 px", args.run_2d), ("ResNet-18 3D, 28^3", args.run_3d)):
            for extra in (["--workers", "1"], ["--workers", "2"], ["--workers", "2", "--compare-init"]):
                if "--compare-init" in extra and "3D" in label:
                    continue  # 2x the 3D case; the 2D row shows what --compare-init costs
                case = timed_case(run, work / "cases", *extra)
                case["case"] = label
                cases.append(case)
                print(f"{label:<20} {case['args']:<30} wall {case['wall']:6.1f}s  cpu {case['cpu']:6.1f}s  "
                      f"metrics {case['metrics']:6.1f}s  rss {case['rss_mb']:6.0f} MB  load {case['load']}",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = ["| run | options | tensors | weights | wall (s) | CPU (s) | metrics (s) | peak RSS (MB) | load avg before -> after |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in cases:
        lines.append(f"| {c['case']} | `{c['args']}` | {c['tensors']} | {c['weights']:,} | {c['wall']:.1f} | "
                     f"{c['cpu']:.1f} | {c['metrics']:.1f} | {c['rss_mb']:.0f} | {c['load']} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
