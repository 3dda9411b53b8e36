"""Train and evaluate MedMNIST classifiers; one run folder per dataset x model.

    python train.py --dataset breastmnist
    python train.py --dataset breastmnist adrenalmnist3d --model resnet18 cnn --epochs 10
    python train.py --resume results/0007_breastmnist28_resnet18
    torchrun --standalone --nproc_per_node=4 train.py --dataset pathmnist --size 224 --workers 4
"""
from __future__ import annotations

import os
import sys

from medscope.app import cli
from medscope.models import MODELS
from medscope.train import distributed, recipes
from medscope.train.augment import LEVELS, SAFE_FLIPS
from medscope.train.loop import OPTIMIZERS, SCHEDULES, SELECTIONS


def get_args_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="train.py", description="Train MedMNIST classifiers (2D and 3D).")
    parser.add_argument("--dataset", nargs="+", default=None, metavar="FLAG",
                        help="one or more MedMNIST flags, e.g. breastmnist pneumoniamnist adrenalmnist3d")
    parser.add_argument("--size", type=int, default=28, help="image size: 28, 64, 128, 224 (3D: 28, 64)")
    parser.add_argument("--model", nargs="+", default=["resnet18"], choices=MODELS, metavar="MODEL",
                        help=f"one or more of {', '.join(MODELS)} (default: resnet18)")
    # Flags whose default is None take the run's recipe (medscope/recipes.py): tuned values for
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
    parser.add_argument("--patience", type=int, default=0,
                        help="stop after this many epochs without a better validation AUC; 0 never stops early")
    parser.add_argument("--augment", choices=LEVELS, default=None,
                        help="batch augmentation; flips only where the anatomy allows "
                             "(default: the recipe's, light unless tuned)")
    parser.add_argument("--tta", action="store_true", help="average test predictions over the safe flips")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from torchvision's ImageNet (2D) / Kinetics (3D) ResNet-18 weights")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="local torchvision state dict to start from (implies --pretrained)")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="disable mixed precision (it is only used where it is faster)")
    parser.add_argument("--deterministic", action="store_true", help="ask for deterministic GPU kernels")
    parser.add_argument("--skip-md5", action="store_true",
                        help="do not check the file's MD5 (for locally generated or modified files)")
    parser.add_argument("--subset", type=cli.positive_int, default=None, metavar="N",
                        help="train on a random N-image subset of the training split (quick experiments, tests)")
    parser.add_argument("--run-name", default=None, help="name of the run folder (one dataset x model only)")
    parser.add_argument("--resume", default=None, metavar="RUN", help="continue an interrupted run")
    parser.add_argument("--workers", type=cli.non_negative_int, default=0, metavar="N",
                        help="read the next batches in N background processes (default: 0, read when needed)")
    parser.add_argument("--memmap", choices=("auto", "always", "never"), default="auto",
                        help="memory-map the image splits instead of loading them into RAM (default: auto, "
                             "when a split is over a quarter of the available RAM)")
    parser.add_argument("--dist-timeout", type=cli.positive_float, default=distributed.DEFAULT_TIMEOUT_S,
                        metavar="SECONDS", help="under torchrun: how long a process waits for the others before "
                                                f"failing (default: {distributed.DEFAULT_TIMEOUT_S:.0f})")
    cli.add_common_args(parser, run_arg=None)
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    import torch

    ctx = distributed.init(args.device, args.dist_timeout)  # a single process unless started by torchrun
    device = ctx.device
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        code = _train(args, ctx)
    except BaseException:
        distributed.close(ctx, ok=False)
        raise
    distributed.close(ctx)
    return code


def _train(args, ctx) -> int:
    from medscope import checkpoints, data, runs
    from medscope.train import experiment

    device = ctx.device
    say = print if ctx.is_main else (lambda *a, **k: None)
    mmap = {"auto": None, "always": True, "never": False}[args.memmap]

    def load(info, data_dir, check_md5):
        # each node's first process downloads, checks and extracts; then the others open the same files
        return distributed.local_main_first(ctx, lambda: data.load_dataset(
            info, data_dir, check_md5=check_md5, mmap=mmap, copies=ctx.local_world_size))

    if args.resume:
        def read_checkpoint():
            run = runs.resolve_run(args.results_dir, args.resume)
            state = checkpoints.load(run.layout.last_pt)
            cfg = state["config"]
            if state["epoch"] >= cfg["epochs"] and run.info().get("status") == "completed":
                raise cli.UsageError(f"{run.name} already finished all {cfg['epochs']} epochs")
            return run, state

        run, state = distributed.on_main(ctx, read_checkpoint)  # only rank 0 needs the results folder
        cfg = dict(state["config"])
        _check_batch(cfg["batch_size"], ctx)
        info = data.dataset_info(cfg["dataset"], cfg["size"])
        dataset = load(info, runs.data_dir_for(info.file_name, args.data_dir, cfg.get("data_dir")),
                       not cfg.get("skip_md5"))
        if cfg.get("subset"):
            dataset["train"] = data.subset(dataset["train"], cfg["subset"], cfg["seed"])
        trained_on = cfg.get("world_size", 1)
        if trained_on != ctx.world_size:
            say(f"note: {run.name} was trained by {trained_on} process(es) and resumes on {ctx.world_size}; "
                "the epochs from here differ from an uninterrupted run's")
        say(f"resuming {run.name} after epoch {state['epoch']}/{cfg['epochs']} on {_where(ctx)}")
        summary = experiment.train_run(run, cfg, info, dataset, device, resume=state, dist=ctx, workers=args.workers)
        if ctx.is_main:
            _report(run, summary)
        return 0

    if not args.dataset:
        raise cli.UsageError("choose a dataset with --dataset, e.g. --dataset breastmnist "
                             f"(one of: {', '.join(data.dataset_flags())})")
    infos = [data.dataset_info(flag, args.size) for flag in args.dataset]  # all names checked before any work
    if args.run_name and len(infos) * len(args.model) > 1:
        raise cli.UsageError("--run-name names one run; drop it when training several datasets or models")
    if args.weights:
        args.pretrained = True
    if args.pretrained and "cnn" in args.model:
        raise cli.UsageError("--pretrained is for resnet18 only; the plain CNN has no pretrained weights")
    if args.batch_size is not None:
        _check_batch(args.batch_size, ctx)

    for info in infos:
        if args.tta and not SAFE_FLIPS.get(info.flag):
            say(f"note: --tta averages over flips, and no flip is anatomically safe for {info.flag}; "
                "its predictions use the image alone")
        dataset = load(info, args.data_dir, not args.skip_md5)  # bad files end here
        if args.subset:
            dataset["train"] = data.subset(dataset["train"], args.subset, args.seed)
        for model_name in args.model:
            cfg = _config(args, info, model_name, len(dataset["train"]), ctx)
            _check_batch(cfg["batch_size"], ctx)
            run = distributed.on_main(ctx, lambda: runs.create_run(
                args.results_dir, args.runs_dir, f"{info.flag}{info.size}_{model_name}", args.run_name))
            say(f"run {run.name}: {info.flag} ({info.task}, {len(dataset['train'])} train images, "
                f"{info.size}px {'3D' if info.is_3d else '2D'}) with {model_name} on {_where(ctx)}")
            say(f"  {cfg['epochs']} epochs, batch {cfg['batch_size']}, {cfg['optimizer']} lr {cfg['lr']:g}, "
                f"augment {cfg['augment']}, label smoothing {cfg['label_smoothing']:g}, keeps the "
                f"{'last epoch' if cfg['select'] == 'last' else 'best epoch by validation AUC'} "
                f"({'tuned recipe' if cfg['recipe'] == 'tuned' else 'general recipe'} where not given)")
            try:
                summary = experiment.train_run(run, cfg, info, dataset, device, dist=ctx, workers=args.workers)
            except cli.UsageError:
                if ctx.is_main:
                    runs.discard_run(run, args.runs_dir)  # bad input found late: leave nothing behind
                raise
            if ctx.is_main:
                _report(run, summary)
    return 0


def _check_batch(batch_size: int, ctx) -> None:
    if batch_size % ctx.world_size:
        lower = batch_size - batch_size % ctx.world_size
        raise cli.UsageError(f"--batch-size {batch_size} is the global batch and must split evenly over the "
                             f"{ctx.world_size} processes; use {lower or ctx.world_size} or "
                             f"{lower + ctx.world_size}")


def _where(ctx) -> str:
    if not ctx.distributed:
        return str(ctx.device)
    kind = "GPUs" if ctx.device.type == "cuda" else "CPU processes"
    return f"{ctx.world_size} {kind} ({ctx.backend}, {ctx.nnodes} node{'s' if ctx.nnodes > 1 else ''})"


def _config(args, info, model_name: str, n_train: int, ctx=distributed.SINGLE) -> dict:
    """The full, JSON-able configuration of one run (enough to re-run it)."""
    recipe = recipes.default_recipe(info.flag, model_name, info.size, n_train)
    given = lambda value, default: default if value is None else value  # noqa: E731
    return {
        "dataset": info.flag, "size": info.size, "model": model_name, "epochs": given(args.epochs, recipe.epochs),
        "batch_size": given(args.batch_size, recipe.batch_size), "optimizer": args.optimizer,
        "lr": given(args.lr, recipe.learning_rate(args.optimizer)), "weight_decay": args.weight_decay,
        "schedule": args.schedule, "warmup_epochs": args.warmup_epochs,
        "label_smoothing": given(args.label_smoothing, recipe.label_smoothing),
        "mixup": args.mixup, "clip_grad": args.clip_grad, "dropout": args.dropout, "patience": args.patience,
        "select": given(args.select, recipe.select),
        "augment": given(args.augment, recipe.augment), "recipe": recipe.source, "tta": args.tta,
        "pretrained": args.pretrained, "weights": args.weights,
        "subset": args.subset, "amp": args.amp, "deterministic": args.deterministic, "skip_md5": args.skip_md5, "seed": args.seed,
        "device": args.device, "data_dir": args.data_dir, "results_dir": args.results_dir,
        "runs_dir": args.runs_dir, "run_name": args.run_name,
        "world_size": ctx.world_size, "workers": args.workers, "memmap": args.memmap,
        "command": f"{distributed.command_prefix(ctx)} train.py " + " ".join(sys.argv[1:])
                   if sys.argv and sys.argv[0].endswith("train.py") else None,
    }


def _report(run, summary: dict) -> None:
    print(f"results: {run.path}")
    print(f"test AUC {summary['test_auc']:.4f}  ACC {summary['test_acc']:.4f}  "
          f"(model of epoch {summary['best_epoch']}/{summary['epochs_run']}, {summary['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    sys.exit(cli.run(main))
