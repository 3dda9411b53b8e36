"""How fast export_scalars.py reads and writes scalars, against TensorBoard's Python accumulators.

    python bench/bench_export_scalars.py [--tags 12] [--steps 5000] [--repeat 3]

Writes one synthetic TensorBoard folder with ``torch.utils.tensorboard`` shaped
like a long training log (``--tags`` scalar tags logged at every step, plus a
histogram of 62 weight tensors every 100 steps, as train.py logs at the end)
and times reading every scalar three ways:

* ``medscope.analysis.scalars.read_scalars``: what the export does — TensorBoard's
  ``EventFileLoader`` (with its data_compat migration), skipping every value
  that is not a scalar, purging on ``SessionLog.START`` as TensorBoard does;
* TensorBoard's ``plugin_event_accumulator.EventAccumulator`` (the Python
  backend of ``tensorboard --load_fast=false``), keeping every scalar;
* the legacy ``event_accumulator.EventAccumulator`` (``Scalars(tag)``), the
  reader most scripts on the web use.

All three must return the same float32 values (checked). It also times
writing the tidy and wide CSV files (``write_tables``) against
``pandas.DataFrame.to_csv`` of the same rows. Best of ``--repeat`` runs;
the load average is printed with them because the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from medscope.analysis import scalars  # noqa: E402


def write_log(logdir: Path, n_tags: int, n_steps: int, seed: int = 0) -> None:
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(seed)
    writer = SummaryWriter(log_dir=str(logdir), max_queue=1000)
    values = rng.random((n_steps, n_tags)).astype(np.float32)
    weights = [rng.standard_normal(size) for size in rng.integers(64, 4096, size=62)]
    for step in range(n_steps):
        for t in range(n_tags):
            writer.add_scalar(f"group{t % 3}/tag{t}", float(values[step, t]), step)
        if step % 100 == 0:
            for i, w in enumerate(weights):
                writer.add_histogram(f"weights/{i}", w, step)
    writer.close()


def read_plugin_accumulator(logdir: Path) -> dict:
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(str(logdir), size_guidance={pea.TENSORS: 1},
                               tensor_size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [float(tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]
            for tag in acc.PluginTagToContent("scalars")}


def read_legacy_accumulator(logdir: Path) -> dict:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 1,
                                                          ea.COMPRESSED_HISTOGRAMS: 1, ea.TENSORS: 1})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()[ea.SCALARS]}


def read_medscope(logdir: Path) -> dict:
    by_tag: dict = {}
    for point in scalars.read_scalars(logdir, "bench"):
        by_tag.setdefault(point.tag, []).append(point.value)
    return by_tag


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-scalars-") as tmp:
        logdir = Path(tmp) / "run"
        write_log(logdir, args.tags, args.steps)
        size_mb = sum(p.stat().st_size for p in logdir.iterdir()) / 2**20
        n_points = args.tags * args.steps
        print(f"{args.tags} tags x {args.steps} steps = {n_points} scalars + histograms; "
              f"event file {size_mb:.1f} MiB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

        readers = {"medscope.analysis.scalars.read_scalars": read_medscope,
                   "plugin_event_accumulator": read_plugin_accumulator,
                   "legacy event_accumulator": read_legacy_accumulator}
        results = {}
        print("| reader | seconds (best of %d) | points/s |" % args.repeat)
        print("| --- | ---: | ---: |")
        for name, fn in readers.items():
            seconds, results[name] = best_of(args.repeat, lambda fn=fn: fn(logdir))
            print(f"| {name} | {seconds:.3f} | {n_points / seconds:,.0f} |")
        reference = results["medscope.analysis.scalars.read_scalars"]
        for name, got in results.items():
            assert got.keys() == reference.keys(), name
            for tag in reference:
                a = np.asarray(reference[tag], dtype=np.float32).view(np.uint32)
                b = np.asarray(got[tag], dtype=np.float32).view(np.uint32)
                assert np.array_equal(a, b), (name, tag)
        print("all readers agree bit for bit")

        points = scalars.read_scalars(logdir, "bench")
        seconds, _ = best_of(args.repeat, lambda: scalars.write_tables(points, Path(tmp) / "t.csv",
                                                                          Path(tmp) / "w.csv"))
        print(f"\n| writer | seconds (best of {args.repeat}) |")
        print("| --- | ---: |")
        print(f"| medscope write_tables (tidy + wide, atomic) | {seconds:.3f} |")
        try:
            import pandas as pd
        except ImportError:
            return 0
        frame = pd.DataFrame([p.as_row() for p in points])

        def pandas_write():
            frame.to_csv(Path(tmp) / "pt.csv", index=False)
            frame.pivot_table(index=["run", "step"], columns="tag", values="value", aggfunc="last").to_csv(
                Path(tmp) / "pw.csv")

        seconds, _ = best_of(args.repeat, pandas_write)
        print(f"| pandas to_csv + pivot_table (tidy + wide) | {seconds:.3f} |")
        back = pd.read_csv(Path(tmp) / "pt.csv")["value"].to_numpy(np.float64)
        exact = np.array_equal(back.astype(np.float32).view(np.uint32),
                               np.asarray([p.value for p in points], np.float32).view(np.uint32))
        print(f"pandas round trip exact: {exact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
