"""``explain.py gradcam`` and ``explain.py saliency``: maps of a run's images, their figures and faithfulness.

The command layer: parse the flags, open the run, compute the maps with
:mod:`medscope.explain` (:mod:`~medscope.explain.cam`,
:mod:`~medscope.explain.saliency`, :mod:`~medscope.explain.maps`), then write
``gradcam/`` or ``saliency/`` as a whole (staged, then swapped in), record its
files in run.json and print where they went.
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

from medscope import atomic, limits
from medscope.app import cli
from medscope.app.run_context import RunContext, add_run_arguments, open_run_from_args
from medscope.errors import UsageError
from medscope.explain import maps, saliency
from medscope.explain import plots as explain_plots
from medscope.explain.cam import CAM_METHODS, parse_target, resolve_layer
from medscope.explain.faithfulness import DELETION_BASELINES, faithfulness_text
from medscope.explain.maps import Explained, explain_split
from medscope.progress import progress

CREATED_BY = "explain.py"


# --------------------------------------------------------------------------- flags

def _add_selection_arguments(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--n", type=cli.int_in_range(1, limits.IMAGES_MAX), default=16,
                       help="images to explain, picked per true class, wrong and right, the most confident errors "
                            f"first, at most {limits.IMAGES_MAX} (default: 16)")
    group.add_argument("--all", action="store_true", help="explain the whole split")
    group.add_argument("--ids", type=cli.int_in_range(0, limits.IMAGES_MAX), nargs="+", default=None, metavar="ID",
                       help="explain these images (indices in the split)")
    parser.add_argument("--class", dest="only_class", default=None, metavar="NAME|INDEX",
                        help="pick the --n images from this true class only")
    parser.add_argument("--target", default="pred",
                        help="class to explain: pred (default), true, or a class index or name")
    parser.add_argument("--steps", type=cli.int_in_range(0, limits.STEPS_MAX), default=20,
                        help=f"steps of the deletion/insertion curves, at most {limits.STEPS_MAX}; 0 skips the "
                             "faithfulness metrics (default: 20)")
    parser.add_argument("--deletion-baseline", choices=("auto", *DELETION_BASELINES), default="auto",
                        help="what deleted pixels become: auto (default: the background where the images lie on a "
                             "flat one, else a blurred copy), background (the median border value of the split's "
                             "images), blur, or grey (mid-grey, which adds signal to images on a black background)")
    parser.add_argument("--max-figures", type=cli.int_in_range(0, limits.FIGURES_MAX), default=64, metavar="N",
                        help=f"draw figures for at most N images, N up to {limits.FIGURES_MAX} (maps and metrics "
                             "cover all; default: 64)")


def add_gradcam_arguments(parser) -> None:
    add_run_arguments(parser, batch_size=32)
    _add_selection_arguments(parser)
    parser.add_argument("--method", choices=tuple(CAM_METHODS), default="gradcam",
                        help="gradcam (default) or gradcam++")
    parser.add_argument("--layer", default=None, metavar="NAME",
                        help="layer to explain (default: the deepest block whose output is at least 7 pixels a side)")


def add_saliency_arguments(parser) -> None:
    add_run_arguments(parser, batch_size=32)
    _add_selection_arguments(parser)
    parser.add_argument("--method", choices=saliency.SALIENCY_METHODS + ("both",), default="both",
                        help="vanilla, smoothgrad or both (default)")
    parser.add_argument("--samples", type=cli.int_in_range(1, limits.SAMPLES_MAX), default=25,
                        help=f"SmoothGrad noisy copies of each image, at most {limits.SAMPLES_MAX} (default: 25)")
    parser.add_argument("--noise", type=cli.float_in_range(0, limits.NOISE_MAX), default=0.15,
                        help=f"SmoothGrad noise level: sigma as a fraction of the input range, in "
                             f"[0, {limits.NOISE_MAX:g}] (default: 0.15)")


# --------------------------------------------------------------------------- commands

def _target_and_ids(args, ctx: RunContext):
    """The class explained, the image ids, and how they were picked (recorded in the summary)."""
    target = parse_target(args.target, ctx.info.class_names)
    n_split = len(ctx.split)
    if args.ids:
        bad = [i for i in args.ids if not 0 <= i < n_split]
        if bad:
            raise UsageError(f"--ids {' '.join(map(str, bad))}: the {ctx.split_name} split has ids 0 to {n_split - 1}")
        return target, np.array(sorted(set(args.ids)), dtype=np.int64), "given (--ids)"
    if args.all:
        return target, np.arange(n_split), "the whole split (--all)"
    from medscope.activations import collect_outputs

    classes = None
    if args.only_class is not None:
        chosen = parse_target(args.only_class, ctx.info.class_names)
        if not isinstance(chosen, int):
            raise UsageError(f"--class {args.only_class!r}: name a class, e.g. 0 or {ctx.info.class_names[0]!r}")
        classes = [chosen]
    probabilities = collect_outputs(ctx.model, ctx.split, ctx.info.task, ctx.device, activations=False,
                                    batch_size=args.batch_size)["probabilities"].numpy()
    ids = maps.stratified_ids(ctx.split.labels.numpy(), probabilities, ctx.task, args.n, classes)
    if not len(ids):
        raise UsageError(f"--class {args.only_class}: no image of that class in the {ctx.split_name} split")
    where = f"true class {ctx.info.class_names[classes[0]]}" if classes else "every true class present"
    return target, ids, f"stratified: {where}, wrong and right in turn, the most confident errors first"


def run_gradcam(args) -> int:
    ctx = open_run_from_args(args)
    target, ids, picked = _target_and_ids(args, ctx)
    layer = resolve_layer(ctx.model, args.layer, ctx.input_shape, ctx.device)
    print(f"{args.method} of {len(ids)} {ctx.split_name} images of {ctx.run.name} at {layer} "
          f"(target: {target}) on {ctx.device}")

    with CAM_METHODS[args.method](ctx.model, layer) as cam:
        explained = explain_split(cam, ctx.model, ctx.split, ids, ctx.task, ctx.device, batch_size=args.batch_size,
                                  target=target, steps=args.steps, seed=args.seed,
                                  deletion_baseline=args.deletion_baseline, progress=progress)
    label, stem = maps.METHOD_LABELS[args.method], maps.STEMS[args.method]
    with ctx.run.staged_folder(ctx.run.layout.gradcam_dir, created_by=CREATED_BY,
                               keep=other_methods_files([stem])) as staged:
        written = write_explanations(ctx, staged.path, stem, explained, method_label=label, layer=layer,
                                     target=target, max_figures=max(0, args.max_figures), extra={"picked": picked})
    if explained.faithfulness is not None:
        print(faithfulness_text(label, explained.faithfulness))
    print(f"wrote {len(staged.written)} files to {staged.final}")
    _log_first_figure(args, ctx, [staged.final_path(p) for p in written], stem)
    return 0


def run_saliency(args) -> int:
    ctx = open_run_from_args(args)
    target, ids, picked = _target_and_ids(args, ctx)
    methods = saliency.SALIENCY_METHODS if args.method == "both" else (args.method,)
    stems = [maps.STEMS[method] for method in methods]
    with ctx.run.staged_folder(ctx.run.layout.saliency_dir, created_by=CREATED_BY,
                               keep=other_methods_files(stems)) as staged:
        for method in methods:
            _explain_saliency(args, ctx, staged.path, method, target, ids, picked)
    print(f"wrote {len(staged.written)} files to {staged.final}")
    return 0


def _explain_saliency(args, ctx: RunContext, folder: Path, method: str, target, ids, picked: str) -> None:
    """One saliency method's maps of ``ids``, written into ``folder`` (the staging folder of ``saliency/``)."""
    if method == "vanilla":
        explain_batch, label, extra = partial(saliency.vanilla_gradient, ctx.model), "vanilla gradient", {}
    else:
        generator = torch.Generator(device=ctx.device).manual_seed(args.seed)
        explain_batch = partial(saliency.smoothgrad, ctx.model, samples=args.samples, noise=args.noise,
                                generator=generator, chunk=2 * args.batch_size)
        label = f"SmoothGrad (n={args.samples}, noise={args.noise:g})"
        extra = {"samples": args.samples, "noise": args.noise, "sigma": 2.0 * args.noise}
    print(f"{label} of {len(ids)} {ctx.split_name} images of {ctx.run.name} (target: {target}) on {ctx.device}")
    explained = explain_split(explain_batch, ctx.model, ctx.split, ids, ctx.task, ctx.device,
                              batch_size=args.batch_size, target=target, steps=args.steps, seed=args.seed,
                              deletion_baseline=args.deletion_baseline, progress=progress)
    write_explanations(ctx, folder, maps.STEMS[method], explained, method_label=label, layer=None, target=target,
                       max_figures=max(0, args.max_figures), extra=dict(extra, picked=picked))
    if explained.faithfulness is not None:
        print(faithfulness_text(label, explained.faithfulness))


def _log_first_figure(args, ctx: RunContext, written: list[Path], stem: str) -> None:
    """The first page (2D) or volume (3D) of a method into the run's TensorBoard folder."""
    from medscope import board

    first = [p for p in written if maps.figure_pattern(stem).match(p.name) and p.suffix == ".png"
             and "faithfulness" not in p.name][:1]
    warning = board.log_run_figures(ctx.run, cli.given_runs_dir(args), first, script=f"explain_{stem}")
    if warning:
        print(warning, file=sys.stderr)


# --------------------------------------------------------------------------- files

def save_npz(path, **arrays) -> Path:
    """np.savez_compressed, atomically (np.savez would append '.npz' to a temporary name)."""
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return Path(path)


def write_explanations(ctx: RunContext, folder: Path, stem: str, explained: Explained, *, method_label: str,
                       layer: str | None, target, max_figures: int, extra: dict | None = None) -> list[Path]:
    """The maps (npz), figures, faithfulness table and plot, and summary of one method, into ``folder``
    (a staging folder: files an earlier call wrote under the same stem do not travel into it); returns
    the paths."""
    task, names = ctx.task, ctx.info.class_names
    written = [save_npz(folder / maps.file_name("maps", stem),
                        **maps.map_arrays(explained, task, names, method_label=method_label,
                                          split_name=ctx.split_name, layer=layer))]

    images = ctx.split.images[torch.as_tensor(explained.ids[:max_figures], dtype=torch.long)].numpy()
    shown = slice(0, len(images))
    pred = task.predictions(explained.probabilities)
    titles = explain_plots.titles(explained.labels[shown], pred[shown], explained.probabilities[shown],
                                  explained.targets[shown], names, task)
    titles = [f"id {image_id}: {text}" + ("\nEMPTY MAP" if explain_plots.is_empty_map(heat) else "")
              for image_id, text, heat in zip(explained.ids[shown], titles, explained.maps[shown])]
    is_wrong = ~task.correct(explained.labels[shown], pred[shown])
    heading = f"{method_label}{f' at {layer}' if layer else ''} — {ctx.run.name} ({ctx.split_name})"
    if len(images):
        if ctx.info.spatial_dims == 2:
            written += explain_plots.heatmap_pages(folder, lambda page: maps.file_name("page", stem, page=page),
                                                   images, explained.maps[shown], titles, is_wrong, heading)
        else:
            for i, image_id in enumerate(explained.ids[shown]):
                written.append(explain_plots.volume_figure(
                    folder / maps.file_name("volume", stem, id=image_id), images[i], explained.maps[i],
                    f"{titles[i]}\n{heading}", is_wrong=bool(is_wrong[i])))
    if explained.faithfulness is not None:
        written.append(atomic.write_csv(folder / maps.file_name("metrics", stem),
                                        maps.metrics_rows(explained, task, names), maps.METRICS_COLUMNS))
        written.append(explain_plots.faithfulness_curves(folder / maps.file_name("faithfulness", stem),
                                                         explained.faithfulness, heading))
    summary = maps.summary_record(explained, method_label=method_label, layer=layer, target=target,
                                  split_name=ctx.split_name, n_figures=len(images), extra=extra)
    written.append(atomic.write_json(folder / maps.file_name("summary", stem), summary))
    return written


def other_methods_files(stems):
    """Which files of the previous folder a call that writes ``stems`` carries over: the other methods'
    (Grad-CAM and Grad-CAM++ share ``gradcam/``; each call replaces its own method's files as a whole)."""
    prefixes = tuple(f"{stem}_" for stem in stems)
    return lambda relative: not relative.name.startswith(prefixes)
