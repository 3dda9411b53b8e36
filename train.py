"""Train and evaluate MedMNIST classifiers; one run folder per dataset x model.

    python train.py --dataset breastmnist
    python train.py --dataset breastmnist adrenalmnist3d --model resnet18 cnn --epochs 10
    python train.py --resume results/0007_breastmnist28_resnet18
    torchrun --standalone --nproc_per_node=4 train.py --dataset pathmnist --size 224 --workers 4
"""
from __future__ import annotations

import itertools
import json
import os
import sys

from medscope.app import cli  # first: a Ctrl-C during the slow imports below is one line, not a traceback

# isort: split
from medscope import data, runs
from medscope.models import MODELS
from medscope.train import config, distributed, recipes
from medscope.train.augment import LEVELS, SAFE_FLIPS
from medscope.train.loop import OPTIMIZERS, SCHEDULES, SELECTIONS

SCRIPT = "train.py"  # recorded in run.json as the creator of the files training writes


def get_args_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="train.py", description="Train MedMNIST classifiers (2D and 3D).")
    parser.add_argument("--dataset", nargs="+", default=None, metavar="FLAG",
                        help="one or more MedMNIST flags, e.g. breastmnist pneumoniamnist adrenalmnist3d")
    parser.add_argument("--size", type=int, default=28, help="image size: 28, 64, 128, 224 (3D: 28, 64)")
    parser.add_argument("--model", nargs="+", default=["resnet18"], choices=MODELS, metavar="MODEL",
                        help=f"one or more of {', '.join(MODELS)} (default: resnet18)")
    # Flags whose default is None take the run's recipe (medscope/train/recipes.py): tuned values for
    # the datasets it lists, the general rule otherwise. run.json records what was used.
    parser.add_argument("--epochs", type=cli.positive_int, default=None,
                        help=f"epochs (default: the recipe's: 6 for breastmnist, 2 for pneumoniamnist, 12 for "
                             f"adrenalmnist3d; otherwise about {recipes.IMAGE_BUDGET} training images' worth, "
                             f"{recipes.MIN_EPOCHS} to {recipes.MAX_EPOCHS})")
    parser.add_argument("--batch-size", type=cli.positive_int, default=None,
                        help="global batch (default: the recipe's, 64 unless tuned); under torchrun each of N "
                             "processes takes 1/N of it, so the learning rate and schedule do not depend on N")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    parser.add_argument("--lr", type=cli.non_negative_float, default=None,
                        help="peak learning rate (default: the recipe's; 2e-3 AdamW, 0.05 SGD unless tuned)")
    parser.add_argument("--weight-decay", type=cli.non_negative_float, default=5e-4)
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    parser.add_argument("--warmup-epochs", type=cli.non_negative_float, default=1.0)
    parser.add_argument("--label-smoothing", type=cli.probability, default=None,
                        help="label smoothing (default: the recipe's, 0 unless tuned)")
    parser.add_argument("--mixup", type=cli.non_negative_float, default=0.0, metavar="ALPHA",
                        help="MixUp Beta(alpha, alpha); 0 disables (default)")
    parser.add_argument("--clip-grad", type=cli.non_negative_float, default=0.0, metavar="NORM",
                        help="clip the gradient norm; 0 disables (default)")
    parser.add_argument("--dropout", type=cli.probability, default=0.2, help="dropout before the classifier")
    parser.add_argument("--select", choices=SELECTIONS, default=None,
                        help="the epoch whose weights become the run's model (best.pt) and give its test "
                             "metrics: best = highest validation AUC, last = the final epoch "
                             "(default: the recipe's; last for adrenalmnist3d, best otherwise)")
    parser.add_argument("--patience", type=cli.non_negative_int, default=0,
                        help="stop after this many epochs without a better validation AUC; 0 never stops early")
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
    parser.add_argument("--subset", type=cli.positive_int, default=None, metavar="N",
                        help="train on a random N-image subset of the training split (quick experiments, tests)")
    parser.add_argument("--run-name", default=None, help="name of the run folder (one dataset x model only)")
    parser.add_argument("--resume", default=None, metavar="RUN", help="continue an interrupted run")
    parser.add_argument("--workers", type=cli.non_negative_int, default=0, metavar="N",
                        help="read the next batches in N background processes (default: 0, read when needed)")
    parser.add_argument("--memmap", choices=config.MEMMAP, default="auto",
                        help="memory-map the image splits instead of loading them into RAM (default: auto, "
                             "when a split is over a quarter of the available RAM)")
    parser.add_argument("--dist-timeout", type=cli.positive_float, default=distributed.DEFAULT_TIMEOUT_S,
                        metavar="SECONDS", help="under torchrun: how long a process waits for the others before "
                                                f"failing (default: {distributed.DEFAULT_TIMEOUT_S:.0f})")
    parser.add_argument("--bootstrap", type=cli.non_negative_int, default=2000, metavar="N",
                        help="resamples for the 95%% intervals of the final metrics (stratified bootstrap; "
                             "DeLong's interval for a binary AUC besides); 0: no bootstrap (default: 2000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="train one run per seed (for every dataset x model) and write a study of them "
                             "to results/studies/: mean, sd and intervals across seeds (replaces --seed)")
    cli.add_common_args(parser, run_arg=None)
    return parser


def main(argv=None) -> int:
    """Train every --dataset x --model, or continue the run of --resume; 0 when all finished."""
    args = get_args_parser().parse_args(argv)
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
    return [config.replace(c, seed=seed) for c in planned for seed in args.seeds]


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
            say(f"run {run.name}: {flag} ({info.task}, {len(dataset['train'])} train images, "
                f"{info.size}px {'3D' if info.is_3d else '2D'}) with {cfg.model} on {ctx.describe()}")
            say(f"  {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}, "
                f"augment {cfg.augment}, label smoothing {cfg.label_smoothing:g}, keeps the "
                f"{'last epoch' if cfg.select == 'last' else 'best epoch by validation AUC'} "
                f"({cfg.recipe} recipe where not given: {recipe.reason})")
            try:
                summary = experiment.train_run(run, cfg, info, dataset, ctx.device, created_by=SCRIPT, dist=ctx,
                                               workers=args.workers)
            except cli.UsageError:
                if ctx.is_main:
                    runs.discard_run(run, cfg.runs_dir)  # bad input found late: leave nothing behind
                raise
            if ctx.is_main:
                _report(run, summary)
                trained.append((cfg.model, run))
    if args.seeds and len(args.seeds) > 1 and ctx.is_main:
        _write_studies(args, trained)


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
    from medscope.train.resume import open_checkpoint, resumed_config

    say = print if ctx.is_main else _silent
    # only rank 0 reads the results folder; the others get the checkpoint from it
    run, checkpoint = distributed.on_main(ctx, lambda: open_checkpoint(args.results_dir, args.resume))
    cfg = resumed_config(checkpoint, ctx.world_size)
    info = data.dataset_info(cfg.dataset, cfg.size)
    data_dir = runs.data_dir_for(info.file_name, args.data_dir, cfg.data_dir)
    dataset = experiment.load_data(info, data_dir, cfg, memmap=args.memmap, dist=ctx)
    if cfg.world_size != ctx.world_size:
        say(f"note: {run.name} was trained by {cfg.world_size} process(es) and resumes on {ctx.world_size}; "
            "the epochs from here differ from an uninterrupted run's")
    say(f"resuming {run.name} after epoch {checkpoint['epoch']}/{cfg.epochs} on {ctx.describe()}")
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
