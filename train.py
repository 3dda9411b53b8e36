"""Train and evaluate MedMNIST classifiers; one run folder per dataset x model.

    python train.py --dataset breastmnist
    python train.py --dataset breastmnist adrenalmnist3d --model resnet18 cnn --epochs 10
    python train.py --resume results/0007_breastmnist28_resnet18
    torchrun --standalone --nproc_per_node=4 train.py --dataset pathmnist --size 224 --workers 4
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import sys

from medscope.app import cli  # first: a Ctrl-C during the slow imports below is one line, not a traceback

# isort: split
from medscope import data, limits, runs
from medscope.models import MODELS
from medscope.train import config, distributed, recipes
from medscope.train.augment import LEVELS, SAFE_FLIPS
from medscope.train.loop import OPTIMIZERS, SCHEDULES, SELECTIONS

SCRIPT = "train.py"  # recorded in run.json as the creator of the files training writes
# What --resume accepts beside the run: the total epochs, and where and how to run; the rest is the run's own
RESUME_FLAGS = ("--epochs", "--data-dir", "--results-dir", "--runs-dir", "--device", "--workers", "--memmap",
                "--dist-timeout", "--figure-format")


def get_args_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="train.py", description="Train MedMNIST classifiers (2D and 3D).")
    parser.add_argument("--dataset", nargs="+", default=None, metavar="FLAG",
                        help="one or more MedMNIST flags, e.g. breastmnist pneumoniamnist adrenalmnist3d")
    parser.add_argument("--size", type=int, default=28, help="image size: 28, 64, 128, 224 (3D: 28, 64)")
    parser.add_argument("--model", nargs="+", default=["resnet18"], choices=MODELS, metavar="MODEL",
                        help=f"one or more of {', '.join(MODELS)} (default: resnet18)")
    # Flags whose default is None take the run's recipe (medscope/train/recipes.py): tuned values for
    # the datasets it lists, the general rule otherwise. run.json records what was used.
    parser.add_argument("--epochs", type=cli.int_in_range(1, limits.EPOCHS_MAX), default=None,
                        help=f"epochs, at most {limits.EPOCHS_MAX} (default: the recipe's: 6 for breastmnist, "
                             f"2 for pneumoniamnist, 12 for "
                             f"adrenalmnist3d; otherwise about {recipes.IMAGE_BUDGET} training images' worth, "
                             f"{recipes.MIN_EPOCHS} to {recipes.MAX_EPOCHS})")
    parser.add_argument("--batch-size", type=cli.int_in_range(1, limits.BATCH_SIZE_MAX), default=None,
                        help=f"global batch, at most {limits.BATCH_SIZE_MAX} (default: the recipe's, 64 unless "
                             "tuned); under torchrun each of N "
                             "processes takes 1/N of it, so the learning rate and schedule do not depend on N")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    parser.add_argument("--lr", type=cli.float_in_range(0, limits.LR_MAX, include_low=False), default=None,
                        help=f"peak learning rate, in (0, {limits.LR_MAX:g}] (default: the recipe's; 2e-3 AdamW, "
                             "0.05 SGD unless tuned)")
    parser.add_argument("--weight-decay", type=cli.float_in_range(0, limits.WEIGHT_DECAY_MAX), default=5e-4,
                        help=f"in [0, {limits.WEIGHT_DECAY_MAX:g}] (default: 5e-4)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    parser.add_argument("--warmup-epochs", type=cli.float_in_range(0, limits.EPOCHS_MAX), default=1.0,
                        help=f"epochs of linear warm-up, in [0, {limits.EPOCHS_MAX}] (default: 1)")
    parser.add_argument("--label-smoothing", type=cli.probability, default=None,
                        help="label smoothing (default: the recipe's, 0 unless tuned)")
    parser.add_argument("--mixup", type=cli.float_in_range(0, limits.MIXUP_MAX), default=0.0, metavar="ALPHA",
                        help=f"MixUp Beta(alpha, alpha), alpha in [0, {limits.MIXUP_MAX:g}]; 0 disables (default)")
    parser.add_argument("--clip-grad", type=cli.float_in_range(0, limits.CLIP_GRAD_MAX), default=0.0,
                        metavar="NORM", help=f"clip the gradient norm, in [0, {limits.CLIP_GRAD_MAX:g}]; 0 disables "
                                             "(default)")
    parser.add_argument("--dropout", type=cli.probability, default=0.2, help="dropout before the classifier")
    parser.add_argument("--select", choices=SELECTIONS, default=None,
                        help="the epoch whose weights become the run's model (best.pt) and give its test "
                             "metrics: best = highest validation AUC among the epochs whose validation predictions are not all one "
                             "class (collapsed), last = the final epoch "
                             "(default: the recipe's; last for adrenalmnist3d, best otherwise)")
    parser.add_argument("--patience", type=cli.int_in_range(0, limits.EPOCHS_MAX), default=0,
                        help=f"stop after this many epochs without a better validation AUC, at most "
                             f"{limits.EPOCHS_MAX}; 0 never stops early (default)")
    parser.add_argument("--augment", choices=LEVELS, default=None,
                        help="batch augmentation; flips only where the anatomy allows "
                             "(default: the recipe's, light unless tuned)")
    parser.add_argument("--recipe", choices=recipes.CHOICES, default="auto",
                        help="the defaults of the settings left unset: tuned (measured on this dataset, ResNet-18 "
                             "at 28 px, full split), general (the rule for any dataset), or auto: tuned where it "
                             "applies (default)")
    parser.add_argument("--tta", action="store_true", help="average test predictions over the safe flips")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from torchvision's ImageNet (2D) / Kinetics (3D) ResNet-18 weights")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="local torchvision state dict to start from (implies --pretrained)")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="disable mixed precision (it is only used where it is faster)")
    parser.add_argument("--no-precise-bn", dest="precise_bn", action="store_false",
                        help="evaluate with BatchNorm's running statistics as they are after training, instead "
                             "of recomputing them on training images before each evaluation (the default; "
                             "short runs at a high learning rate otherwise swing from epoch to epoch)")
    parser.add_argument("--deterministic", action="store_true", help="ask for deterministic GPU kernels")
    parser.add_argument("--skip-md5", action="store_true",
                        help="do not check the file's MD5 (for locally generated or modified files)")
    parser.add_argument("--subset", type=cli.int_in_range(1, limits.IMAGES_MAX), default=None, metavar="N",
                        help="train on a random N-image subset of the training split (quick experiments, tests; "
                             f"at most {limits.IMAGES_MAX})")
    parser.add_argument("--run-name", default=None, help="name of the run folder (one dataset x model only)")
    parser.add_argument("--resume", default=None, metavar="RUN",
                        help="continue an interrupted run with its recorded settings; it accepts only "
                             f"{', '.join(RESUME_FLAGS)}: --epochs N trains on to N epochs in all (the learning-"
                             "rate schedule becomes that of N epochs from the step reached; a completed run is "
                             "final), --runs-dir gets the TensorBoard events from here on (the earlier ones are "
                             "copied there); any other training flag is refused")
    parser.add_argument("--workers", type=cli.int_in_range(0, limits.WORKERS_MAX), default=0, metavar="N",
                        help=f"read the next batches in N background processes, at most {limits.WORKERS_MAX} "
                             "(default: 0, read when needed)")
    parser.add_argument("--memmap", choices=config.MEMMAP, default="auto",
                        help="memory-map the image splits instead of loading them into RAM (default: auto, "
                             "when a split is over a quarter of the available RAM)")
    parser.add_argument("--dist-timeout", type=cli.float_in_range(0, limits.DIST_TIMEOUT_MAX, include_low=False),
                        default=distributed.DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="under torchrun: how long a process waits for the others before failing, at most "
                             f"{limits.DIST_TIMEOUT_MAX:.0f} (default: {distributed.DEFAULT_TIMEOUT_S:.0f})")
    parser.add_argument("--bootstrap", type=cli.int_in_range(0, limits.RESAMPLES_MAX), default=2000, metavar="N",
                        help="resamples for the 95%% intervals of the final metrics (stratified bootstrap; "
                             "DeLong's interval for a binary AUC besides), at most "
                             f"{limits.RESAMPLES_MAX}; 0: no bootstrap (default: 2000)")
    parser.add_argument("--seeds", type=cli.int_in_range(0, limits.SEED_MAX), nargs="+", default=None,
                        metavar="SEED",
                        help="train one run per seed (for every dataset x model) and write a study of them "
                             "to results/studies/: mean, sd and intervals across seeds (replaces --seed)")
    cli.add_common_args(parser, run_arg=None)
    return parser


def main(argv=None) -> int:
    """Train every --dataset x --model, or continue the run of --resume; 0 when all finished."""
    args = get_args_parser().parse_args(argv)
    if args.resume:
        _check_resume_flags(argv, args)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    import torch

    ctx = distributed.init(args.device, args.dist_timeout)  # a single process unless started by torchrun
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        if args.resume:
            resume(args, ctx)
        else:
            train(args, ctx)
    except BaseException:
        distributed.close(ctx, ok=False)
        raise
    distributed.close(ctx)
    return 0


def _check_resume_flags(argv, args) -> None:
    """--resume continues a run with its own settings: a flag it would not use is refused, not ignored."""
    parser = get_args_parser()
    options = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # parsed again, the namespace holds only the flags given
    given = [options[dest] for dest in vars(parser.parse_args(argv)) if dest in options]
    refused = [flag for flag in given if flag not in RESUME_FLAGS and flag != "--resume"]
    if refused:
        raise cli.UsageError(f"--resume continues {args.resume} with its recorded settings and does not take "
                             f"{', '.join(refused)}; it accepts {', '.join(RESUME_FLAGS)} (train a new run to "
                             "change anything else)")


def build_configs(args, ctx=distributed.SINGLE) -> list[config.TrainConfig]:
    """The requested config of every dataset x model (x seed), what the flags leave unset to the recipe."""
    command = (f"{distributed.command_prefix(ctx)} {SCRIPT} " + " ".join(sys.argv[1:])
               if sys.argv and sys.argv[0].endswith(SCRIPT) else None)
    planned = config.plan(args.dataset, args.model, {name: getattr(args, name) for name in config.USER_SETTINGS},
                          world_size=ctx.world_size, command=command)
    if not args.seeds:
        return planned
    if args.run_name:
        raise cli.UsageError("--run-name names one run; --seeds trains several (leave --run-name out)")
    if len(set(args.seeds)) != len(args.seeds):
        raise cli.UsageError(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    return [dataclasses.replace(c, seed=seed) for c in planned for seed in args.seeds]


def train(args, ctx) -> None:
    from medscope.train import (
        experiment,  # imported late: matplotlib and TensorBoard are slow to import
    )

    say = print if ctx.is_main else _silent
    trained = []
    for flag, requests in itertools.groupby(build_configs(args, ctx), key=lambda c: c.dataset):
        requests = list(requests)
        info = data.dataset_info(flag, args.size)
        if args.tta and not SAFE_FLIPS.get(flag):
            say(f"note: --tta averages over flips, and no flip is anatomically safe for {flag}; "
                "its predictions use the image alone")
        dataset = experiment.load_data(info, args.data_dir, requests[0], dist=ctx)  # bad files end here
        for request in requests:
            recipe = config.chosen_recipe(request, len(dataset["train"]))  # --recipe tuned may refuse here
            cfg = config.with_recipe(request, len(dataset["train"]))
            config.check_batch(cfg.batch_size, ctx.world_size)
            run = distributed.on_main(ctx, lambda: runs.create_run(
                cfg.results_dir, cfg.runs_dir, f"{flag}{info.size}_{cfg.model}", cfg.run_name))
            try:
                with runs.training_lock(run) if ctx.is_main else contextlib.nullcontext():
                    say(f"run {run.name}: {flag} ({info.task}, {len(dataset['train'])} train images, "
                        f"{info.size}px {'3D' if info.is_3d else '2D'}) with {cfg.model} on {ctx.describe()}")
                    say(f"  {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}, "
                        f"augment {cfg.augment}, label smoothing {cfg.label_smoothing:g}, keeps the "
                        f"{'last epoch' if cfg.select == 'last' else 'best epoch by validation AUC'} "
                        f"({cfg.recipe} recipe where not given: {recipe.reason})")
                    summary = experiment.train_run(run, cfg, info, dataset, ctx.device, created_by=SCRIPT,
                                                   dist=ctx, workers=args.workers)
            except BaseException as exc:
                if ctx.is_main:
                    _settle_unsaved_run(run, cfg.runs_dir, exc)
                raise
            if ctx.is_main:
                _report(run, summary)
                trained.append((cfg.model, run))
    if args.seeds and len(args.seeds) > 1 and ctx.is_main:
        _write_studies(args, trained)


def _settle_unsaved_run(run, runs_dir, exc: BaseException) -> None:
    """A new run whose training ended early, before any epoch was saved, holds nothing of value: an error
    (bad input found late, a full disk, a bug) removes it, so that no folder is left saying "created";
    Ctrl-C, SIGTERM and a diverging loss are recorded in it (run.json says how it stopped)."""
    layout = run.layout
    if layout.last_pt.is_file() or layout.best_pt.is_file():
        return  # epochs are saved: train_run recorded how it stopped, and it can be resumed
    if not isinstance(exc, (KeyboardInterrupt, cli.RunFailed)):
        runs.discard_run(run, runs_dir)
        return
    with contextlib.suppress(OSError, cli.UsageError):
        if run.info().get("status") == "created":  # stopped before training began
            run.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", epochs_completed=0)


def _write_studies(args, trained) -> None:
    """One study per dataset x model of a --seeds call: its runs' intervals, mean ± sd across seeds."""
    from medscope.compare import study

    groups = {}
    for model, run in trained:
        groups.setdefault((run.info()["config"]["dataset"], model), []).append(run)
    for group in groups.values():
        paths = study.write_study(args.results_dir, None, group, n_resamples=args.bootstrap or 2000,
                                  created_by=SCRIPT)
        record = json.loads(paths.json.read_text())
        print(f"study {paths.folder.name}: {len(group)} seeds; {_study_line(record)}")
        print(f"results: {paths.folder}  (compare: python compare.py --study {paths.folder.name})")


def resume(args, ctx) -> None:
    from medscope.train import experiment
    from medscope.train.resume import carry_events, checkpoint_config, open_checkpoint, resumed_config

    say = print if ctx.is_main else _silent
    with contextlib.ExitStack() as locks:  # rank 0 holds the run's training lock until training ends
        # only rank 0 reads the results folder; the others get the checkpoint from it
        run, checkpoint = distributed.on_main(
            ctx, lambda: open_checkpoint(args.results_dir, args.resume, locks, epochs=args.epochs))
        started = checkpoint_config(checkpoint)
        done = checkpoint["epoch"]
        # the folders of now, not those of the start: the run may have moved, and a --runs-dir given is obeyed
        # (left out, the events go on in the run's own TensorBoard folder)
        cfg = resumed_config(checkpoint, ctx.world_size, epochs=args.epochs, results_dir=str(run.path.parent),
                             runs_dir=cli.given_runs_dir(args))
        info = data.dataset_info(cfg.dataset, cfg.size)
        data_dir = runs.data_dir_for(info.file_name, args.data_dir, cfg.data_dir)
        dataset = experiment.load_data(info, data_dir, cfg, memmap=args.memmap, dist=ctx)
        note = distributed.on_main(ctx, lambda: carry_events(run, started.runs_dir, cfg.runs_dir))
        if note:
            say(note)
        if cfg.world_size != ctx.world_size:
            say(f"note: {run.name} was trained by {cfg.world_size} process(es) and resumes on {ctx.world_size}; "
                "the epochs from here differ from an uninterrupted run's")
        if cfg.epochs != started.epochs:
            say(f"note: {run.name} now trains to {cfg.epochs} epochs instead of {started.epochs}; its "
                f"{cfg.schedule} learning-rate schedule is that of {cfg.epochs} epochs from here on")
            if ctx.is_main:
                extended = list(run.info().get("epochs_changed") or [])
                run.update(epochs_changed=[*extended, {"from": started.epochs, "to": cfg.epochs,
                                                       "after_epoch": done, "at": runs.now_iso()}])
        say(f"resuming {run.name} after epoch {done}/{cfg.epochs} on {ctx.describe()}")
        summary = experiment.train_run(run, cfg, info, dataset, ctx.device, created_by=SCRIPT, resume=checkpoint,
                                       dist=ctx, workers=args.workers)
    if ctx.is_main:
        _report(run, summary)


def _silent(*_args, **_kwargs) -> None:
    """What ranks other than 0 print: one voice per job."""


def _report(run, summary: dict) -> None:
    """The last lines: test AUC/ACC with their intervals, beside the paper's ResNet-18, and what a
    majority-class guess would score where that matters."""
    print(f"results: {run.path}")
    paper = (f"  (paper {summary['paper_method']}: {_paper(summary['paper_auc'])} / {_paper(summary['paper_acc'])})"
             if summary.get("paper_method") else "")
    print(f"test AUC {summary['test_auc']:.3f}{_interval(summary, 'test_auc')}  "
          f"ACC {summary['test_acc']:.3f}{_interval(summary, 'test_acc')}{paper}")
    majority = summary.get("test_majority_acc")
    if majority is not None and majority > 0.6:  # imbalanced: ACC alone can flatter a majority guess
        print(f"balanced accuracy {summary['test_balanced_acc']:.3f}{_interval(summary, 'test_balanced_acc')}; "
              f"always answering the majority class would score ACC {majority:.3f}")
    if summary.get("collapsed"):
        print(f"warning: the model answers one class: {summary['test_top_class']!s} for "
              f"{summary['test_top_class_share']:.0%} of the test images (collapsed; its AUC may still rank them). "
              "Train longer or choose the last epoch (--select last)")
    if summary.get("skipped_steps") or summary.get("rollbacks"):
        print(f"stability: {summary['skipped_steps']} step(s) skipped for a non-finite loss or gradient, "
              f"{summary['rollbacks']} rollback(s) with a lower learning rate (run.json: stability)")
    print(f"model of epoch {summary['best_epoch']}/{summary['epochs_run']}, {summary['wall_seconds']:.0f}s")


def _interval(summary: dict, key: str) -> str:
    low, high = summary.get(f"{key}_low"), summary.get(f"{key}_high")
    return "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"


def _paper(value) -> str:
    """The paper's three-decimal style: .901."""
    return f"{value:.3f}".lstrip("0")


def _study_line(record: dict) -> str:
    """Mean ± sd across the seeds of the study's group row(s)."""
    parts = []
    for row in record.get("rows") or []:
        if row.get("kind") == "group":
            parts += [f"test {label} {row[key]:.3f} ± {row[key + '_sd']:.3f}" for key, label in
                      (("auc", "AUC"), ("acc", "ACC")) if row.get(key) is not None and row.get(key + "_sd") is not None]
    return ", ".join(parts) or "see study.json"

if __name__ == "__main__":
    sys.exit(cli.run(main))
