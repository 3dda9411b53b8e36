"""Leave one dataset out: does the default run hold on a file that chose nothing? (issue 28)

    MEDMNIST_DIR=../shared/medmnist python bench/lodo_default.py \
        [--files breastmnist pneumoniamnist adrenalmnist3d adrenalmnist3d_64] [--models resnet18 cnn] \
        [--seeds 0 1 2] [--jobs 2] [--threads 1] [--out bench/studies/lodo_default.jsonl] [--report]

Every file x model x seed is one ``train.py --recipe general`` run, as a user's default run on a
dataset without a tuned recipe (bf16 autocast where the CPU has native bf16, the layer probe and
the non-finite net included). One run gives both selection rules: the kept epoch (highest
validation AUC among epochs whose validation predictions are not one class) and the last epoch
(``last.pt``, evaluated on the test split here the way train.py evaluates ``best.pt``).

For each held-out file the rule of higher mean test **balanced accuracy** over the *other* files
(ResNet-18 and CNN together; ties go to "last", which needs no validation split) is chosen, and
only then are the held-out file's test AUC, ACC and balanced accuracy read, beside the paper's
ResNet-18 (2.5D/3D for volumes) and chance. The held-out file never takes part in its own choice.

Resumable: each finished run is one JSON line in ``--out``; a study that was stopped continues
with the runs it lacks. ``--report`` prints the tables from what is there. ``--estimate`` prints
the runs left and a time estimate from the finished ones (per file and model) and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medscope.baselines import reference_baseline  # noqa: E402
from medscope.runs import default_data_dir  # noqa: E402

FILES = ("breastmnist", "pneumoniamnist", "adrenalmnist3d", "adrenalmnist3d_64")
RULES = ("kept", "last")


def get_args_parser():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=list(FILES), help="flag or flag_size, as the .npz files")
    parser.add_argument("--models", nargs="+", default=["resnet18", "cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--out", default=str(ROOT / "bench" / "studies" / "lodo_default.jsonl"))
    parser.add_argument("--report", action="store_true", help="only print the tables of the finished runs")
    parser.add_argument("--estimate", action="store_true", help="only print what is left and how long it takes")
    return parser


def split_file(name: str) -> tuple[str, int]:
    flag, _, size = name.partition("_")
    return flag, int(size or 28)


def evaluate_last_epoch(run_dir: Path, data_dir: str, device: str) -> dict:
    """Test AUC, ACC, balanced accuracy and collapse of ``last.pt``, evaluated as train.py evaluates best.pt."""
    import torch

    from medscope import checkpoints, data
    from medscope.activations import collect_outputs
    from medscope.metrics import acc_score, auc_score, balanced_accuracy, collapse
    from medscope.train.loop import evaluation_settings

    record = json.loads((run_dir / "run.json").read_text())
    info = data.dataset_info(record["config"]["dataset"], record["config"]["size"])
    test = data.load_dataset(info, data_dir, splits=("test",))["test"]
    device = torch.device(device)
    model = checkpoints.model_from_checkpoint(checkpoints.load(run_dir / "last.pt", map_location=device), device)
    settings = evaluation_settings(record["config"], info, device)
    if settings["memory_format"] is not None:
        model = model.to(memory_format=settings["memory_format"])
    out = collect_outputs(model, test, info.task, device, activations=False, **settings)
    labels, probabilities = out["labels"].numpy(), out["probabilities"].numpy()
    return {"test_auc": auc_score(info.task, labels, probabilities), "test_acc": acc_score(info.task, labels, probabilities),
            "test_balanced_acc": balanced_accuracy(info.task, labels, probabilities),
            "collapsed": collapse(info.task, labels, probabilities)["collapsed"]}


def run_one(name: str, model: str, seed: int, args) -> dict:
    """One default run of ``model`` on file ``name``: both rules' test metrics, its wall time and stability."""
    flag, size = split_file(name)
    work = Path(tempfile.mkdtemp(prefix=f"lodo-{name}-{model}-{seed}-"))
    cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", flag, "--size", str(size), "--model", model,
           "--recipe", "general", "--seed", str(seed), "--device", args.device, "--bootstrap", "0",
           "--data-dir", args.data_dir, "--results-dir", str(work / "results"), "--runs-dir", str(work / "runs")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    row = {"file": name, "model": model, "seed": seed, "wall_seconds": round(wall, 1), "returncode": proc.returncode}
    if proc.returncode != 0:  # a failed default run is a result too: the issue asks that it never happens
        return row | {"error": (proc.stderr or proc.stdout)[-400:]}
    (run_dir,) = [p for p in (work / "results").iterdir() if p.is_dir()]
    record = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    row |= {"epochs": record["config"]["epochs"], "kept_epoch": metrics["best_epoch"], "amp": record["environment"]["amp_dtype"],
            "cpu": record["environment"]["cpu"], "float32_layers": sorted(record["environment"].get("precision_check", {}).get("float32_layers", {})),
            "stability": record.get("stability"),
            "kept": {"test_auc": test["auc"], "test_acc": test["acc"], "test_balanced_acc": test["balanced_acc"],
                     "collapsed": test["collapse"]["collapsed"]},
            "last": evaluate_last_epoch(run_dir, args.data_dir, args.device)}
    return row


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_sd(values) -> str:
    values = list(values)
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def report(rows: list[dict], files: list[str]) -> None:
    good = [r for r in rows if "error" not in r]
    failed = [r for r in rows if "error" in r]
    print(f"{len(good)} finished runs, {len(failed)} failed runs; CPU(s): {', '.join(sorted({r['cpu'] for r in good}))}")
    for r in failed:
        print(f"  FAILED {r['file']} {r['model']} seed {r['seed']}: {r['error'].strip().splitlines()[-1]}")
    print("\n| file | model | rule | test AUC | test ACC | balanced acc | collapsed runs | kept epochs | wall s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for name in files:
        for model in sorted({r["model"] for r in good}):
            mine = [r for r in good if r["file"] == name and r["model"] == model]
            for rule in RULES:
                print(f"| {name} | {model} | {rule} | {mean_sd(r[rule]['test_auc'] for r in mine)} "
                      f"| {mean_sd(r[rule]['test_acc'] for r in mine)} | {mean_sd(r[rule]['test_balanced_acc'] for r in mine)} "
                      f"| {sum(r[rule]['collapsed'] for r in mine)}/{len(mine)} "
                      f"| {', '.join(str(r['kept_epoch'] if rule == 'kept' else r['epochs']) for r in mine)} "
                      f"| {statistics.mean(r['wall_seconds'] for r in mine) if mine else float('nan'):.0f} |")
    print("\n| held out | rule chosen on the other files | model | held-out test AUC | paper | balanced acc (chance 0.5) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for held_out in files:
        others = [r for r in good if r["file"] != held_out]
        if not others:
            continue
        score = {rule: statistics.mean(r[rule]["test_balanced_acc"] for r in others) for rule in RULES}
        chosen = "kept" if score["kept"] > score["last"] else "last"
        flag, size = split_file(held_out)
        paper = reference_baseline(flag, size, "resnet18")
        for model in sorted({r["model"] for r in good}):
            mine = [r for r in good if r["file"] == held_out and r["model"] == model]
            print(f"| {held_out} | {chosen} ({score['kept']:.3f} vs {score['last']:.3f}) | {model} "
                  f"| {mean_sd(r[chosen]['test_auc'] for r in mine)} "
                  f"| {f'{paper.auc:.3f} ({paper.method})' if paper else '—'} "
                  f"| {mean_sd(r[chosen]['test_balanced_acc'] for r in mine)} |")


def main(args) -> None:
    out = Path(args.out)
    done = {(r["file"], r["model"], r["seed"]) for r in read_rows(out)}
    todo = [(f, m, s) for f in args.files for m in args.models for s in args.seeds if (f, m, s) not in done]
    if args.report:
        report(read_rows(out), args.files)
        return
    finished = read_rows(out)
    if args.estimate or todo:
        seconds = {}
        for r in finished:
            seconds.setdefault((r["file"], r["model"]), []).append(r["wall_seconds"])
        known = [statistics.mean(seconds[(f, m)]) for f, m, _ in todo if (f, m) in seconds]
        print(f"{len(todo)} runs left of {len(todo) + len(done)}; {len(known)} with a measured time: "
              f"{sum(known) / max(1, args.jobs) / 3600:.1f} h at {args.jobs} at a time (the others unknown)", flush=True)
        if args.estimate:
            return
    out.parent.mkdir(parents=True, exist_ok=True)
    # the cheapest first: a stopped study has its small files complete
    order = {name: rank for rank, name in enumerate(FILES)}
    todo.sort(key=lambda t: (order.get(t[0], len(FILES)), t[1] != "cnn", t[2]))
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda task: run_one(*task, args), todo):
            with open(out, "a") as fh:  # one line a run, appended as it finishes: the study resumes from here
                fh.write(json.dumps(row) + "\n")
            print(json.dumps({k: row[k] for k in ("file", "model", "seed", "wall_seconds", "returncode")}
                             | {rule: row.get(rule) for rule in RULES}), flush=True)
    report(read_rows(out), args.files)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
