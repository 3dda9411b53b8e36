"""Benchmark: exact Sample Entropy of medscope.analysis.complexity vs antropy.

Not a test. Prints markdown tables (and writes them with ``--markdown PATH``):

1. numba JIT cost: the first call in a fresh process with an empty numba cache
   (compilation) and with a warm on-disk cache (loading), vs. steady state.
2. ``sample_entropy`` (m = 2, r = 0.2 std) vs ``antropy.sample_entropy`` on
   the same float64 vectors: N = 5,000 / 50,000 / 200,000 standard normal
   (fixed seed) and a real 2,359,296-weight layer (torchvision resnet18
   ``layer4.1.conv2.weight``, freshly initialised with ``torch.manual_seed(0)``).
   Medians of ``--repeats`` runs, both values, absolute difference, speed
   ratio.  antropy gets a time allowance per case (``--antropy-budget``); a
   case whose run-time, extrapolated from the previous measured cases, exceeds
   it is marked "skipped: est. X s".
3. The whole ResNet-18 of a 28 px run (torchvision resnet18, 3x3 stride-1
   stem, no max-pool, 2 classes): every parameter tensor (conv / linear /
   batch-norm weights and biases), flattened in PyTorch memory order.

Run from the repository root::

    python bench/sampen_speed.py --markdown /tmp/sampen_bench.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medscope.analysis.complexity import sample_entropy  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def timed(fn, repeats: int):
    """Median wall time and median process CPU time of ``repeats`` calls, and
    the last result."""
    wall = []
    cpu = []
    res = None
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        res = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), res


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


_JIT_PROBE = r"""
import time, numpy as np
t0 = time.perf_counter()
from medscope.analysis.complexity import sample_entropy
x = np.random.default_rng(0).standard_normal(2000)
t1 = time.perf_counter(); sample_entropy(x); t2 = time.perf_counter()
sample_entropy(x); t3 = time.perf_counter()
print(f"{t1 - t0:.4f} {t2 - t1:.4f} {t3 - t2:.6f}")
"""


def jit_cost():
    """(import, first call, second call) seconds in fresh processes: with an
    empty numba cache and then with the cache it left behind."""
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        for label in ("cold (empty numba cache: compile)", "warm (on-disk cache: load)"):
            out = subprocess.run(
                [sys.executable, "-c", _JIT_PROBE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=str(ROOT),
            ).stdout.split()
            rows.append((label, *map(float, out)))
    return rows


def resnet18_28px():
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2)
    model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def real_layer():
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    w = model.layer4[1].conv2.weight
    return w.detach().cpu().numpy().ravel().astype(np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per case (median)")
    ap.add_argument(
        "--antropy-budget",
        type=float,
        default=120.0,
        help="seconds allowed for one antropy run; longer (extrapolated) cases are skipped",
    )
    ap.add_argument("--sizes", type=int, nargs="*", default=[5_000, 50_000, 200_000])
    ap.add_argument("--no-jit-probe", action="store_true", help="skip the fresh-process JIT timing")
    ap.add_argument("--no-resnet", action="store_true", help="skip the whole-ResNet-18 timing")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = ap.parse_args(argv)

    import antropy
    import numba

    out = []

    def emit(line=""):
        print(line, flush=True)
        out.append(line)

    emit("## Sample Entropy: medscope.analysis.complexity vs antropy")
    emit()
    emit(f"- machine: {cpu_model()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}")
    emit(
        f"- python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"antropy {antropy.__version__}"
    )
    emit(f"- command: `python bench/sampen_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip())
    emit(f"- m = 2, r = 0.2 * std(x, ddof=0), Chebyshev; float64 input; median of {args.repeats} runs")
    emit(
        "- wall = elapsed seconds; cpu = this process's CPU seconds (less sensitive to other "
        "load on the machine, which shares the 2 cores)"
    )
    emit(f"- load average (1/5/15 min) at start: {load_average()}")
    emit()

    # warm up this process (loads or compiles the kernels)
    t0 = time.perf_counter()
    sample_entropy(np.random.default_rng(1).standard_normal(3000))
    warm = time.perf_counter() - t0

    if not args.no_jit_probe:
        emit("### numba JIT (fresh processes, N = 2,000)")
        emit()
        emit("| numba cache | import (s) | first call (s) | second call (s) |")
        emit("|---|---:|---:|---:|")
        for label, imp, first, second in jit_cost():
            emit(f"| {label} | {imp:.2f} | {first:.2f} | {second:.4f} |")
        emit()
    emit(f"(first call in this benchmark process: {warm:.2f} s; all timings below are steady state)")
    emit()

    rng = np.random.default_rng(0)
    cases = [(f"normal, N = {n:,}", rng.standard_normal(n)) for n in args.sizes]
    try:
        cases.append(("resnet18 layer4.1.conv2.weight (seed 0)", real_layer()))
    except ImportError as exc:  # pragma: no cover - torchvision missing
        emit(f"(real layer skipped: {exc})")

    emit("### Single vectors")
    emit()
    emit(
        "| vector | N | medscope wall (cpu) s | antropy wall (cpu) s | speed-up wall (cpu) "
        "| medscope value | antropy value | abs diff |"
    )
    emit("|---|---:|---:|---:|---:|---:|---:|---:|")
    measured = []  # (N, antropy seconds)
    for label, x in cases:
        n = x.size
        t_ours, c_ours, res = timed(lambda: sample_entropy(x), args.repeats)
        est = None
        if len(measured) >= 2:
            (n1, t1), (n2, t2) = measured[-2], measured[-1]
            k = np.log(t2 / t1) / np.log(n2 / n1) if t1 > 0 and n2 != n1 else 2.0
            est = t2 * (n / n2) ** max(k, 1.0)
        elif measured:
            n2, t2 = measured[-1]
            est = t2 * (n / n2) ** 2
        if est is not None and est > args.antropy_budget:
            emit(
                f"| {label} | {n:,} | {t_ours:.3f} ({c_ours:.3f}) | skipped: est. {est:,.0f} s | "
                f"~{est / c_ours:,.0f}x (est.) | {res.value:.12f} | - | - |"
            )
            continue
        t_first, c_first, a_val = timed(lambda: antropy.sample_entropy(x, order=2), 1)
        reps = args.repeats if t_first * args.repeats < args.antropy_budget else 1
        if reps > 1:
            t_ant, c_ant, a_val = timed(lambda: antropy.sample_entropy(x, order=2), reps)
        else:
            t_ant, c_ant = t_first, c_first
        measured.append((n, c_ant))
        path = "numba" if n < 5000 else "KDTree"
        emit(
            f"| {label} | {n:,} | {t_ours:.3f} ({c_ours:.3f}) | {t_ant:.3f} ({c_ant:.3f}) {path} | "
            f"{t_ant / t_ours:,.0f}x ({c_ant / c_ours:,.0f}x) | "
            f"{res.value:.12f} | {a_val:.12f} | {abs(res.value - a_val):.1e} |"
        )
    emit()

    if not args.no_resnet:
        try:
            model = resnet18_28px()
        except ImportError as exc:  # pragma: no cover
            emit(f"(ResNet-18 skipped: {exc})")
        else:
            tensors = [
                (name, p.detach().cpu().numpy().ravel().astype(np.float64))
                for name, p in model.named_parameters()
            ]
            total_n = sum(v.size for _, v in tensors)
            largest = max(v.size for _, v in tensors)
            per = []
            c0 = time.process_time()
            t0 = time.perf_counter()
            for name, v in tensors:
                t1 = time.perf_counter()
                res = sample_entropy(v)
                per.append((time.perf_counter() - t1, name, v.size, res))
            t_seq = time.perf_counter() - t0
            c_seq = time.process_time() - c0

            from concurrent.futures import ThreadPoolExecutor

            order = sorted(tensors, key=lambda t: -t[1].size)
            c0 = time.process_time()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(lambda t: sample_entropy(t[1]), order))
            t_par = time.perf_counter() - t0
            c_par = time.process_time() - c0

            undefined = [(name, r.reason) for _, name, _, r in per if not r.ok]
            emit("### Whole ResNet-18 (28 px stem), every parameter tensor")
            emit()
            emit(
                f"{len(tensors)} tensors, {total_n:,} values, largest {largest:,}; "
                "torchvision resnet18(num_classes=2) with a 3x3 stride-1 stem and no max-pool, "
                "`torch.manual_seed(0)`."
            )
            emit()
            emit("| run | wall (s) | cpu (s) |")
            emit("|---|---:|---:|")
            emit(f"| sequential, 1 thread | {t_seq:.1f} | {c_seq:.1f} |")
            emit(
                f"| 2 threads (ThreadPoolExecutor; kernels release the GIL) | {t_par:.1f} | {c_par:.1f} |"
            )
            emit()
            emit("Slowest tensors (sequential):")
            emit()
            emit("| tensor | N | seconds | SampEn |")
            emit("|---|---:|---:|---:|")
            for dt, name, n, r in sorted(per, key=lambda t: -t[0])[:6]:
                emit(f"| {name} | {n:,} | {dt:.2f} | {r.value:.6f} |")
            emit()
            if undefined:
                reasons = sorted({r for _, r in undefined})
                emit(
                    f"{len(undefined)} tensors are undefined at initialisation "
                    f"(reasons: {', '.join(reasons)}), e.g. batch-norm weights = 1 and biases = 0."
                )
                emit()

    emit(f"- load average (1/5/15 min) at end: {load_average()}")
    if args.markdown:
        args.markdown.write_text("\n".join(out) + "\n")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
