"""Which layer should Grad-CAM explain by default? Faithfulness of every block of trained runs.

    MEDMNIST_DIR=../shared/medmnist python bench/gradcam_layers.py RESULTS_DIR/0001_... [RUN ...] \
        [--n 128] [--steps 20] [--out gradcam_layers.json]

For each run (its kept checkpoint) and the last block of each spatial resolution,
Grad-CAM explains the same stratified pick of ``--n`` test images (the
default pick of ``explain.py gradcam``) and the deletion/insertion curves
score it against a random pixel order (deleted pixels become what
``explain.py``'s ``--deletion-baseline auto`` chooses for the split, or each of
``--baselines``). Printed and written per block: the side of its output, the mean
deletion and insertion gains over random with 95% bootstrap intervals, and
the share of non-empty maps whose peak lies on a corner of the image (a map
that only says "the corner" when the layer is 2 pixels a side) and the share of
empty maps.

The default rule of ``medscope.explain.cam.auto_layer`` is "the deepest
block whose output is at least S pixels a side"; the table ends with what
each S in ``--sides`` would pick for each run. Choose S on some datasets and
report it on one held out (docs/BENCHMARKS.md says which).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medscope import checkpoints, data, runs  # noqa: E402
from medscope.activations import collect_outputs  # noqa: E402
from medscope.explain import cam, maps  # noqa: E402
from medscope.explain.faithfulness import gains_over_random  # noqa: E402
from medscope.explain.plots import is_empty_map  # noqa: E402
from medscope.tasks import task as as_task  # noqa: E402


def corner_share(maps_: np.ndarray) -> float:
    """Share of the non-empty maps whose maximum lies on a corner pixel (voxel) of the image.

    (An empty map, all zero, has its argmax at index 0, a corner: it is counted apart, :func:`empty_share`.)
    """
    maps_ = maps_[[not is_empty_map(m) for m in maps_]]
    if not len(maps_):
        return float("nan")
    spatial = maps_.shape[1:]
    flat_peak = maps_.reshape(len(maps_), -1).argmax(axis=1)
    coords = np.stack(np.unravel_index(flat_peak, spatial), axis=1)
    on_corner = np.all((coords == 0) | (coords == np.array(spatial) - 1), axis=1)
    return float(on_corner.mean())


def empty_share(maps_: np.ndarray) -> float:
    """Share of maps with nothing to show (constant, typically all zero after Grad-CAM's ReLU)."""
    return float(np.mean([is_empty_map(m) for m in maps_]))


def rule_choice(shapes: list[tuple[str, tuple]], side: int) -> str | None:
    """The deepest block whose output is at least ``side`` pixels along every axis."""
    chosen = None
    for name, shape in shapes:
        if shape is not None and min(shape[2:]) >= side:
            chosen = name
    return chosen


def study_run(path: Path, n: int, steps: int, seed: int, batch_size: int, baselines=("background",),
              layers=None) -> dict:
    cpu = torch.device("cpu")
    model, checkpoint = checkpoints.load_run_model(runs.Run(path), "best", cpu)
    cfg = checkpoint["config"]
    info = data.dataset_info(cfg["dataset"], cfg["size"])
    split = data.load_split(info, cfg["data_dir"], "test")
    task = as_task(info.task)
    probabilities = collect_outputs(model, split, info.task, cpu, activations=False,
                                    batch_size=batch_size)["probabilities"].numpy()
    ids = maps.stratified_ids(split.labels.numpy(), probabilities, task, n)
    input_shape = tuple(split.images.shape[1:])
    shapes = [(name, shape) for name, shape in cam.probe_blocks(model, input_shape)
              if shape is not None and len(shape) == len(input_shape) + 1]
    # the last block of each resolution: the rule "deepest block at least S a side" only ever picks those
    candidates = [(name, shape) for i, (name, shape) in enumerate(shapes)
                  if np.prod(shape[2:]) > 1 and (i + 1 == len(shapes) or shapes[i + 1][1][2:] != shape[2:])]
    if layers:
        candidates = [(name, shape) for name, shape in shapes if name in layers]
    rows = []
    for (name, shape), baseline in [(c, b) for c in candidates for b in baselines]:
        start = time.perf_counter()
        with cam.GradCAM(model, name) as explainer:
            explained = maps.explain_split(explainer, model, split, ids, task, cpu, batch_size=batch_size,
                                           steps=steps, seed=seed, deletion_baseline=baseline)
        fa = explained.faithfulness
        gains = gains_over_random(fa, seed=seed)
        baseline = fa.baseline if baseline == "auto" else baseline  # what "auto" chose for this split
        row = {"layer": name, "baseline": baseline, "side": int(min(shape[2:])),
               "deletion_auc": float(fa.deletion.mean()),
               "random_deletion_auc": float(fa.random_deletion.mean()), "insertion_auc": float(fa.insertion.mean()),
               "random_insertion_auc": float(fa.random_insertion.mean()),
               "corner_share": corner_share(explained.maps), "empty_share": empty_share(explained.maps),
               "seconds": time.perf_counter() - start}
        for key, gain in gains.items():
            row.update({key: gain["estimate"], f"{key}_low": gain["low"], f"{key}_high": gain["high"]})
        row["total_gain"] = row["deletion_gain"] + row["insertion_gain"]
        rows.append(row)
        print(f"  {name:<20} {'x'.join(map(str, shape[2:])):>8} {baseline:<10}  deletion gain {row['deletion_gain']:+.3f} "
              f"[{row['deletion_gain_low']:+.3f}, {row['deletion_gain_high']:+.3f}]  insertion gain "
              f"{row['insertion_gain']:+.3f} [{row['insertion_gain_low']:+.3f}, {row['insertion_gain_high']:+.3f}]"
              f"  peak on a corner {row['corner_share']:.0%} (empty maps {row['empty_share']:.0%})"
              f"  {row['seconds']:.0f}s", flush=True)
    return {"run": path.name, "dataset": cfg["dataset"], "size": cfg["size"], "model": cfg["model"],
            "n_images": len(ids), "steps": steps, "shapes": [(name, list(shape)) for name, shape in shapes],
            "layers": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (trained)")
    parser.add_argument("--n", type=int, default=128, help="images explained per run (default: 128)")
    parser.add_argument("--steps", type=int, default=20, help="steps of the deletion/insertion curves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sides", type=int, nargs="+", default=[2, 4, 7], help="rules to tabulate")
    parser.add_argument("--baselines", nargs="+", default=["auto"],
                        help="deletion baselines to compare: auto (explain.py's default), background, blur, grey")
    parser.add_argument("--layers", nargs="+", default=None, help="only these blocks")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    results = []
    for path in args.runs:
        print(f"{path.name}:", flush=True)
        results.append(study_run(path, args.n, args.steps, args.seed, args.batch_size, args.baselines, args.layers))
    print("\nrule 'deepest block at least S pixels a side':")
    for side in args.sides:
        picks = []
        for result in results:
            chosen = rule_choice([(n, (1, 1, *s[2:])) for n, s in result["shapes"]], side)
            rows = [r for r in result["layers"] if r["layer"] == chosen]
            row = rows[0] if rows else None
            picks.append(f"{result['dataset']}: {chosen} "
                         + (f"(total gain {row['total_gain']:+.3f})" if row else "(none)"))
        print(f"  S = {side}: " + "; ".join(picks))
    if args.out:
        args.out.write_text(json.dumps({"results": results, "torch": torch.__version__}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
