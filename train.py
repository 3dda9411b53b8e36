"""Train and evaluate MedMNIST classifiers; one run folder per dataset x model.

    python train.py --dataset breastmnist
    python train.py --dataset breastmnist adrenalmnist3d --model resnet18 cnn --epochs 10
    python train.py --resume results/0007_breastmnist28_resnet18
"""
from __future__ import annotations

import sys

from medscope import cli
from medscope.augment import LEVELS, SAFE_FLIPS
from medscope.models import MODELS
from medscope.training import OPTIMIZERS, SCHEDULES

# Default epochs: enough passes to see about IMAGE_BUDGET training images, between 3 and 15,
# so a default 28 px run takes minutes on a laptop CPU (docs/BENCHMARKS.md). --epochs overrides.
IMAGE_BUDGET = 8000
MIN_EPOCHS, MAX_EPOCHS = 3, 15


def default_epochs(n_train: int) -> int:
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(IMAGE_BUDGET / max(n_train, 1)))))


def get_args_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="train.py", description="Train MedMNIST classifiers (2D and 3D).")
    parser.add_argument("--dataset", nargs="+", default=None, metavar="FLAG",
                        help="one or more MedMNIST flags, e.g. breastmnist pneumoniamnist adrenalmnist3d")
    parser.add_argument("--size", type=int, default=28, help="image size: 28, 64, 128, 224 (3D: 28, 64)")
    parser.add_argument("--model", nargs="+", default=["resnet18"], choices=MODELS, metavar="MODEL",
                        help=f"one or more of {', '.join(MODELS)} (default: resnet18)")
    parser.add_argument("--epochs", type=cli.positive_int, default=None,
                        help=f"epochs (default: about {IMAGE_BUDGET} training images' worth, "
                             f"{MIN_EPOCHS} to {MAX_EPOCHS}: 15 for breastmnist, 3 for pneumoniamnist)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    parser.add_argument("--lr", type=cli.non_negative_float, default=None,
                        help="peak learning rate (default: 2e-3 AdamW, 0.05 SGD)")
    parser.add_argument("--weight-decay", type=cli.non_negative_float, default=5e-4)
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    parser.add_argument("--warmup-epochs", type=cli.non_negative_float, default=1.0)
    parser.add_argument("--label-smoothing", type=cli.probability, default=0.0)
    parser.add_argument("--mixup", type=cli.non_negative_float, default=0.0, metavar="ALPHA",
                        help="MixUp Beta(alpha, alpha); 0 disables (default)")
    parser.add_argument("--clip-grad", type=cli.non_negative_float, default=0.0, metavar="NORM",
                        help="clip the gradient norm; 0 disables (default)")
    parser.add_argument("--dropout", type=cli.probability, default=0.2, help="dropout before the classifier")
    parser.add_argument("--patience", type=int, default=0,
                        help="stop after this many epochs without a better validation AUC; 0 never stops early")
    parser.add_argument("--augment", choices=LEVELS, default="light",
                        help="batch augmentation; flips only where the anatomy allows (default: light)")
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
    cli.add_common_args(parser, run_arg=None)
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch

    from medscope import checkpoints, data, experiment, runs

    device = cli.resolve_device(args.device)
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    if args.resume:
        run = runs.resolve_run(args.results_dir, args.resume)
        state = checkpoints.load(run.path / checkpoints.LAST)
        cfg = dict(state["config"])
        info = data.dataset_info(cfg["dataset"], cfg["size"])
        if state["epoch"] >= cfg["epochs"] and run.info().get("status") == "completed":
            raise cli.UsageError(f"{run.name} already finished all {cfg['epochs']} epochs")
        dataset = data.load_dataset(info, cfg["data_dir"] if args.data_dir == cli.default_data_dir() else args.data_dir,
                                    check_md5=not cfg.get("skip_md5"))
        if cfg.get("subset"):
            dataset["train"] = data.subset(dataset["train"], cfg["subset"], cfg["seed"])
        print(f"resuming {run.name} after epoch {state['epoch']}/{cfg['epochs']} on {device}")
        summary = experiment.train_run(run, cfg, info, dataset, device, resume=state)
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

    for info in infos:
        if args.tta and not SAFE_FLIPS.get(info.flag):
            print(f"note: --tta averages over flips, and no flip is anatomically safe for {info.flag}; "
                  "its predictions use the image alone")
        dataset = data.load_dataset(info, args.data_dir, check_md5=not args.skip_md5)  # bad files end here
        if args.subset:
            dataset["train"] = data.subset(dataset["train"], args.subset, args.seed)
        for model_name in args.model:
            cfg = _config(args, info, model_name, len(dataset["train"]))
            run = runs.create_run(args.results_dir, args.runs_dir, f"{info.flag}{info.size}_{model_name}",
                                  args.run_name)
            print(f"run {run.name}: {info.flag} ({info.task}, {len(dataset['train'])} train images, "
                  f"{info.size}px {'3D' if info.is_3d else '2D'}) with {model_name} on {device}")
            try:
                summary = experiment.train_run(run, cfg, info, dataset, device)
            except cli.UsageError:
                runs.discard_run(run, args.runs_dir)  # bad input found late: leave nothing behind
                raise
            _report(run, summary)
    return 0


def _config(args, info, model_name: str, n_train: int) -> dict:
    """The full, JSON-able configuration of one run (enough to re-run it)."""
    lr = args.lr if args.lr is not None else (2e-3 if args.optimizer == "adamw" else 0.05)
    epochs = args.epochs or default_epochs(n_train)
    return {
        "dataset": info.flag, "size": info.size, "model": model_name, "epochs": epochs,
        "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": lr, "weight_decay": args.weight_decay,
        "schedule": args.schedule, "warmup_epochs": args.warmup_epochs, "label_smoothing": args.label_smoothing,
        "mixup": args.mixup, "clip_grad": args.clip_grad, "dropout": args.dropout, "patience": args.patience,
        "augment": args.augment, "tta": args.tta, "pretrained": args.pretrained, "weights": args.weights,
        "subset": args.subset, "amp": args.amp, "deterministic": args.deterministic, "skip_md5": args.skip_md5, "seed": args.seed,
        "device": args.device, "data_dir": args.data_dir, "results_dir": args.results_dir,
        "runs_dir": args.runs_dir, "run_name": args.run_name,
        "command": "python train.py " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("train.py") else None,
    }


def _report(run, summary: dict) -> None:
    print(f"results: {run.path}")
    print(f"test AUC {summary['test_auc']:.4f}  ACC {summary['test_acc']:.4f}  "
          f"(best epoch {summary['best_epoch']}, {summary['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    sys.exit(cli.run(main))
