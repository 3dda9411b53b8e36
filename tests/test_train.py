"""train.py end to end: the run folder contract, reproducibility, resume, and bad input."""
import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from medmnist.evaluator import getACC, getAUC

import train
from medscope import data
from medscope.app import cli
from medscope.runs import RunLayout
from medscope.train.experiment import SELECTED_BY
from medscope.train import loop
from tests.conftest import (
    ROOT,
    copy_run,
    history,
    interrupted_run,
    one_line_error,
    train_run,
    write_fake_medmnist,
)

# what train.py writes into the run folder, as RunLayout names it
RUN_FILES = ["run_json", "history_csv", "summary_csv", "metrics_json", "best_pt", "last_pt", "inference_outputs",
             "inference_mean", "training_curves_png", "confusion_matrix_png", "sample_predictions_png"]


def _run_files(run) -> list:
    layout = RunLayout(run)
    return [getattr(layout, name) for name in RUN_FILES]


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _quick(*extra):
    return ["--model", "cnn", "--epochs", "1", "--subset", "128", *extra]


# ---------------------------------------------------------------- the run folder

def test_2d_run_folder_is_complete(run_2d):
    for path in _run_files(run_2d):
        assert path.is_file(), path
    info = json.loads(RunLayout(run_2d).run_json.read_text())
    assert info["status"] == "completed" and info["config"]["dataset"] == "breastmnist"
    assert info["config"]["epochs"] == 2 and info["environment"]["torch"] == torch.__version__
    assert {a["path"] for a in info["artifacts"]} == {p.name for p in _run_files(run_2d)[1:]}  # all but run.json
    assert {a["created_by"] for a in info["artifacts"]} == {"train.py"}  # the script, named by the script
    assert run_2d.name.endswith("_breastmnist28_resnet18") and run_2d.name[:4].isdigit()
    epochs = _csv(RunLayout(run_2d).history_csv)
    assert [int(r["epoch"]) for r in epochs] == [1, 2]
    assert set(epochs[0]) >= {"train_loss", "val_auc", "val_acc", "lr", "images_per_s"}
    (summary,) = _csv(RunLayout(run_2d).summary_csv)
    assert summary["dataset"] == "breastmnist" and float(summary["test_auc"]) == info["metrics"]["test_auc"]


def test_test_metrics_equal_medmnist_on_the_saved_predictions(run_2d):
    outputs = torch.load(RunLayout(run_2d).inference_outputs, weights_only=True)
    metrics = json.loads(RunLayout(run_2d).metrics_json.read_text())
    labels, probs = outputs["labels"].numpy(), outputs["probabilities"].numpy()
    assert metrics["test"]["auc"] == getAUC(labels, probs, "binary-class")
    assert metrics["test"]["acc"] == getACC(labels, probs, "binary-class")
    assert np.allclose(probs, torch.softmax(outputs["logits"], 1).numpy(), atol=1e-6)
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == 156


def test_inference_outputs_hold_embeddings_and_activations(run_2d):
    outputs = torch.load(RunLayout(run_2d).inference_outputs, weights_only=True)
    assert outputs["logits"].shape == (156, 2) and outputs["embeddings"].shape == (156, 512)
    assert outputs["layer_names"][0] == "backbone.relu" and len(outputs["layer_names"]) == 9
    assert outputs["activations"]["backbone.layer4.1"].shape == (156, 512)
    means = json.loads(RunLayout(run_2d).inference_mean.read_text())
    layer = means["layers"]["backbone.layer1.0"]
    assert layer["mean"] == pytest.approx(outputs["activations"]["backbone.layer1.0"].mean().item(), rel=1e-5)


def test_best_checkpoint_reproduces_the_saved_logits(run_2d, medmnist_dir):
    from medscope.activations import autocast
    from medscope.checkpoints import load_run_model
    from medscope.runs import Run

    model, checkpoint = load_run_model(Run(run_2d))
    info = data.dataset_info("breastmnist")
    # the precision and layout of training (bf16 autocast on a CPU with native bf16 kernels)
    settings = loop.evaluation_settings(checkpoint["config"], info, "cpu")
    model = model.to(memory_format=settings["memory_format"])
    images = data.normalize(data.load_split(info, medmnist_dir, "test").images[:16])
    with torch.no_grad(), autocast(torch.device("cpu"), settings["amp_dtype"]):
        logits = model(images.contiguous(memory_format=settings["memory_format"])).float()
    saved = torch.load(RunLayout(run_2d).inference_outputs, weights_only=True)["logits"][:16]
    assert torch.allclose(logits, saved, atol=1e-5)
    assert checkpoint["spec"]["dropout"] == 0.2


def test_tensorboard_events_hold_the_logged_scalars(run_2d):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = RunLayout(run_2d).tensorboard_dir(run_2d.parent.parent / "runs")
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/train", "loss/val", "auc/val", "acc/val", "lr", "speed/images_per_s"} <= set(tags["scalars"])
    assert any(t.startswith("weights/") for t in tags["histograms"])
    epochs = _csv(RunLayout(run_2d).history_csv)
    logged = [e.value for e in acc.Scalars("auc/val")]
    assert logged == [float(np.float32(float(r["val_auc"]))) for r in epochs]


def test_tensorboard_shows_the_figures_and_the_metrics_table_of_the_run(run_2d):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = RunLayout(run_2d).tensorboard_dir(run_2d.parent.parent / "runs")
    acc = EventAccumulator(str(tb), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    layout, epochs = RunLayout(run_2d), len(_csv(RunLayout(run_2d).history_csv))
    for path in (layout.training_curves_png, layout.confusion_matrix_png, layout.sample_predictions_png):
        (image,) = acc.Images(f"figures/{path.stem}")
        assert image.step == epochs and (image.width, image.height) == Image.open(path).size
    (text,) = acc.Tensors("metrics/test/text_summary")
    table = text.tensor_proto.string_val[0].decode()
    metrics = json.loads(layout.metrics_json.read_text())
    auc = metrics["test"]["intervals"]["auc"]
    assert f"| AUC | {metrics['test']['auc']:.3f} | [{auc['low']:.3f}, {auc['high']:.3f}] | 0.901 |" in table


def test_3d_run_folder_is_complete(run_3d):
    for path in _run_files(run_3d):
        assert path.is_file(), path
    outputs = torch.load(RunLayout(run_3d).inference_outputs, weights_only=True)
    assert outputs["logits"].shape == (298, 2)
    assert outputs["layer_names"][0] == "backbone.stem"
    assert json.loads(RunLayout(run_3d).run_json.read_text())["dataset"]["spatial_dims"] == 3


@pytest.mark.parametrize("flag,channels,labels,multilabel", [
    ("pathmnist", 3, 9, False),        # RGB multi-class
    ("chestmnist", 1, 14, True),       # multi-label, BCE
    ("retinamnist", 3, 5, False),      # ordinal regression, evaluated as multi-class
])
def test_generated_files_of_every_task_type_train(tmp_path, flag, channels, labels, multilabel):
    folder = tmp_path / "data"
    folder.mkdir()
    write_fake_medmnist(folder / f"{flag}.npz", n_channels=channels, size=28, n_labels=labels, multilabel=multilabel)
    run = train_run(tmp_path, folder, "--dataset", flag, "--skip-md5", "--epochs", "2", "--model", "cnn")
    metrics = json.loads(RunLayout(run).metrics_json.read_text())
    outputs = torch.load(RunLayout(run).inference_outputs, weights_only=True)
    task = data.dataset_info(flag).task
    assert metrics["test"]["auc"] == getAUC(outputs["labels"].numpy(), outputs["probabilities"].numpy(), task)
    assert metrics["test"]["acc"] == getACC(outputs["labels"].numpy(), outputs["probabilities"].numpy(), task)
    assert outputs["probabilities"].shape == (32, labels)
    assert metrics["test"]["auc"] > 0.55  # the generated images carry a learnable signal


def test_one_call_trains_every_dataset_and_model(tmp_path, medmnist_dir):
    code = train.main(["--dataset", "breastmnist", "adrenalmnist3d", "--model", "cnn", "--epochs", "1",
                       "--subset", "32", "--data-dir", str(medmnist_dir),
                       "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")])
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert names == ["0001_breastmnist28_cnn", "0002_adrenalmnist3d28_cnn"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == names


def test_recipe_general_on_a_tuned_dataset_trains_with_the_general_rule_and_says_why(tmp_path, medmnist_dir,
                                                                                       capsys):
    # (on the full split the tuned recipe would apply: tests/test_recipes.py; here the flag's way to the run)
    run = train_run(tmp_path, medmnist_dir, "--dataset", "breastmnist", "--recipe", "general", "--epochs", "1",
                    "--subset", "64", "--bootstrap", "0")
    config = json.loads(RunLayout(run).run_json.read_text())["config"]
    assert (config["recipe"], config["batch_size"], config["augment"], config["label_smoothing"]) == \
        ("general", 64, "light", 0.0)  # the tuned recipe would give 32, none, 0.1
    out = capsys.readouterr().out
    assert "(general recipe where not given: --recipe general)" in out  # not auto's "is for the full split"
    assert re.search(r"test AUC \d\.\d{3} .*\(paper ResNet-18 \(28\): \.901 / \.863\)", out)


def test_pretrained_weights_load_from_a_local_file(tmp_path, medmnist_dir):
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    run = train_run(tmp_path, medmnist_dir, "--dataset", "breastmnist", "--weights", str(weights),
                    "--epochs", "1", "--subset", "64")
    config = json.loads(RunLayout(run).run_json.read_text())["config"]
    assert config["pretrained"] is True and config["weights"] == str(weights)


# ---------------------------------------------------------------- reproducibility & resume

def test_same_seed_same_metrics(tmp_path, medmnist_dir):
    a = train_run(tmp_path / "a", medmnist_dir, "--dataset", "breastmnist", *_quick("--epochs", "2"))
    b = train_run(tmp_path / "b", medmnist_dir, "--dataset", "breastmnist", *_quick("--epochs", "2"))
    assert history(a) == history(b)
    assert RunLayout(a).metrics_json.read_text() == RunLayout(b).metrics_json.read_text()


def test_precise_bn_changes_what_evaluation_sees_and_nothing_of_the_training(tmp_path, medmnist_dir):
    args = ["--dataset", "breastmnist", *_quick("--epochs", "2", "--bootstrap", "0")]
    precise = train_run(tmp_path / "precise", medmnist_dir, *args)
    running = train_run(tmp_path / "running", medmnist_dir, *args, "--no-precise-bn")
    a, b = history(precise), history(running)
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]  # the same steps, bit for bit
    assert [r["val_loss"] for r in a] != [r["val_loss"] for r in b]
    recorded = [json.loads(RunLayout(r).run_json.read_text())["config"]["precise_bn"] for r in (precise, running)]
    assert recorded == [True, False]


def test_the_run_keeps_the_epoch_of_highest_validation_auc_or_the_last_one(tmp_path, medmnist_dir):
    args = ["--dataset", "breastmnist", *_quick("--epochs", "3")]
    best = train_run(tmp_path / "best", medmnist_dir, *args)
    last = train_run(tmp_path / "last", medmnist_dir, *args, "--select", "last")
    # the same seed trains the same epochs; only the kept model differs
    best_history, last_history = _csv(RunLayout(best).history_csv), _csv(RunLayout(last).history_csv)
    assert [r["val_auc"] for r in best_history] == [r["val_auc"] for r in last_history]
    val_auc = [float(r["val_auc"]) for r in best_history]
    candidates = [auc if r["val_collapsed"] == "0" else -1 for auc, r in zip(val_auc, best_history)]
    first_highest = candidates.index(max(candidates)) + 1
    for run, epoch, rule in ((best, first_highest, SELECTED_BY["best"]), (last, 3, "last epoch")):
        metrics = json.loads(RunLayout(run).metrics_json.read_text())
        assert (metrics["best_epoch"], metrics["selected_by"]) == (epoch, rule)
        kept = torch.load(RunLayout(run).best_pt, weights_only=True)
        assert kept["epoch"] == epoch and kept["val_auc"] == pytest.approx(val_auc[epoch - 1])
        assert metrics["val"]["auc"] == pytest.approx(val_auc[epoch - 1], abs=1e-6)
    final = torch.load(RunLayout(last).last_pt, weights_only=True)["model"]
    assert all(torch.equal(tensor, final[name]) for name, tensor in
               torch.load(RunLayout(last).best_pt, weights_only=True)["model"].items())
    assert json.loads(RunLayout(last).run_json.read_text())["config"]["select"] == "last"


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(tmp_path, medmnist_dir, monkeypatch):
    args = ["--dataset", "breastmnist", *_quick("--epochs", "3")]
    whole = train_run(tmp_path / "whole", medmnist_dir, *args)

    cut, folders = interrupted_run(tmp_path / "cut", medmnist_dir, monkeypatch, 2, *args)
    assert json.loads(RunLayout(cut).run_json.read_text())["status"] == "interrupted"
    assert torch.load(RunLayout(cut).last_pt, weights_only=True)["epoch"] == 1

    assert cli.run(train.main, ["--resume", cut.name, *folders]) == 0
    assert history(cut) == history(whole)
    final_a = torch.load(RunLayout(whole).last_pt, weights_only=True)["model"]
    final_b = torch.load(RunLayout(cut).last_pt, weights_only=True)["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert json.loads(RunLayout(cut).run_json.read_text())["status"] == "completed"


def test_a_finished_run_is_not_resumed(tmp_path, run_2d, capsys):
    run = copy_run(run_2d, tmp_path)
    code = cli.run(train.main, ["--resume", run.name, "--results-dir", str(run.parent),
                                "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    one_line_error(capsys, f"{run.name} already finished all 2 epochs")


def test_a_checkpoint_whose_config_is_damaged_is_not_resumed(tmp_path, run_2d, capsys):
    run = copy_run(run_2d, tmp_path)
    last = RunLayout(run).last_pt
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["config"]["lr"] = "fast"
    torch.save(checkpoint, last)
    folders = ["--results-dir", str(run.parent), "--runs-dir", str(tmp_path / "runs")]
    assert cli.run(train.main, ["--resume", run.name, *folders]) == 2
    one_line_error(capsys, f"{last}: --lr 'fast': expected a finite number in (0, 10]")
    del checkpoint["optimizer"]
    torch.save(checkpoint, last)
    assert cli.run(train.main, ["--resume", run.name, *folders]) == 2
    one_line_error(capsys, "cannot resume training: it lacks optimizer")


def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path, medmnist_dir, monkeypatch, capsys):
    """Every step from epoch 2 on is NaN: its steps are skipped, three rollbacks do not help, the run fails."""
    real_loss = loop.loss_fn
    calls = {"n": 0}

    def diverging(*a, **k):
        loss = real_loss(*a, **k)
        if not torch.is_grad_enabled():  # validation
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] > 2 else loss  # epoch 1 has 2 training steps

    monkeypatch.setattr(loop, "loss_fn", diverging)
    results = tmp_path / "results"
    code = cli.run(train.main, ["--dataset", "breastmnist", *_quick("--epochs", "3"), "--data-dir", str(medmnist_dir),
                                "--results-dir", str(results), "--runs-dir", str(tmp_path / "runs")])
    assert code == cli.EXIT_FAILURE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite loss" in err[0] and "after 3 rollbacks" in err[0] and "epoch 2" in err[0]
    (run,) = list(results.iterdir())
    assert json.loads(RunLayout(run).run_json.read_text())["status"] == "failed"
    assert torch.load(RunLayout(run).last_pt, weights_only=True)["epoch"] == 1


# ---------------------------------------------------------------- bad input

def _cli(tmp_path, *args, data_dir=None):
    env = {"PATH": "/usr/bin:/bin", "MEDSCOPE_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    cmd = [sys.executable, str(ROOT / "train.py"), "--results-dir", str(tmp_path / "results"),
           "--runs-dir", str(tmp_path / "runs"), *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def _assert_bad_input(proc, tmp_path, needle):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and needle in lines[0], proc.stderr
    results = tmp_path / "results"
    assert not results.exists() or not any(results.iterdir())
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "nosuchmnist"], "unknown dataset"),
    (["--dataset", "breastmnist", "--size", "32"], "sizes"),
    (["--dataset", "adrenalmnist3d", "--size", "224"], "sizes"),
    (["--dataset", "breastmnist", "--epochs", "0"], "positive integer"),
    (["--dataset", "breastmnist", "--model", "vgg"], "invalid choice"),
    (["--dataset", "breastmnist", "--device", "cuda"], "CUDA is not available"),
    (["--dataset", "breastmnist", "--device", "tpu"], "--device"),
    ([], "choose a dataset"),
    (["--resume", "0099_nope"], "no run named"),
    (["--dataset", "breastmnist", "--model", "cnn", "--pretrained"], "resnet18 only"),
    (["--dataset", "breastmnist", "--weights", "/no/such/file.pth"], "file not found"),
    (["--dataset", "breastmnist", "--lr", "inf"], "--lr: expected a number in (0, 10], got inf"),
    (["--dataset", "breastmnist", "--patience", "-1"], "integer >= 0"),
    (["--dataset", "breastmnist", "--warmup-epochs", "inf"], "--warmup-epochs: expected a number in [0, 10000]"),
    (["--dataset", "breastmnist", "--mixup", "inf"], "--mixup: expected a number in [0, 100], got inf"),
    (["--dataset", "breastmnist", "--seed", "1e23"], "--seed: expected an integer >= 0, at most 4294967295, got 1e23"),
    (["--dataset", "breastmnist", "--run-name", "x\n"], "use letters, digits"),
    (["--dataset", "breastmnist", "--recipe", "tuned", "--model", "cnn"], "--recipe tuned: the tuned recipe"),
    (["--dataset", "breastmnist", "pneumoniamnist", "--run-name", "one"], "names one run"),
])
def test_bad_arguments_are_one_line_exit_2_and_leave_nothing(tmp_path, medmnist_dir, args, needle, capsys):
    code = cli.run(train.main, [*args, "--data-dir", str(medmnist_dir), "--results-dir", str(tmp_path / "results"),
                                "--runs-dir", str(tmp_path / "runs")])
    captured = capsys.readouterr()
    _assert_bad_input(subprocess.CompletedProcess([], code, captured.out, captured.err), tmp_path, needle)


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path, medmnist_dir):
    _assert_bad_input(_cli(tmp_path, "--dataset", "nosuchmnist", data_dir=medmnist_dir), tmp_path, "unknown dataset")


def test_bad_files_are_one_line_exit_2_and_leave_nothing(tmp_path, medmnist_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = bytearray((medmnist_dir / "breastmnist.npz").read_bytes())
    raw[1000] ^= 0xFF
    (bad / "breastmnist.npz").write_bytes(bytes(raw))
    _assert_bad_input(_cli(tmp_path, "--dataset", "breastmnist", data_dir=bad), tmp_path, "MD5")
    (bad / "breastmnist.npz").write_bytes(bytes(raw[:30000]))
    _assert_bad_input(_cli(tmp_path, "--dataset", "breastmnist", "--skip-md5", data_dir=bad), tmp_path,
                      "not a readable")


def test_offline_missing_file_names_path_and_url(tmp_path, monkeypatch, capsys):
    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    code = cli.run(train.main, ["--dataset", "breastmnist", "--data-dir", str(tmp_path / "empty"),
                                "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(tmp_path / "empty" / "breastmnist.npz") in err[0] and "zenodo.org" in err[0]
    assert not (tmp_path / "results").exists()


def test_a_used_run_name_is_refused(tmp_path, medmnist_dir):
    train_run(tmp_path, medmnist_dir, "--dataset", "breastmnist", *_quick("--run-name", "mine"))
    proc = _cli(tmp_path, "--dataset", "breastmnist", *_quick("--run-name", "mine"), data_dir=medmnist_dir)
    assert proc.returncode == 2 and "already used" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["mine"]


def test_help_exits_0():
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--dataset" in proc.stdout


# ------------------------------------------------------------------ a run that meets non-finite steps

def _failing_steps(monkeypatch, failures: int):
    """Make the first ``failures`` optimizer steps of the run meet a non-finite gradient."""
    from medscope.train import loop

    real = loop._backward_and_step
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            return False
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_backward_and_step", flaky)


def _train(tmp_path, medmnist_dir, *extra):
    import train
    from medscope.app import cli

    return cli.run(train.main, ["--dataset", "breastmnist", "--model", "cnn", "--subset", "64", "--epochs", "2",
                                "--batch-size", "16", "--bootstrap", "0", "--device", "cpu",
                                "--data-dir", str(medmnist_dir), "--results-dir", str(tmp_path / "results"),
                                "--runs-dir", str(tmp_path / "runs"), *extra])


def test_an_unstable_epoch_rolls_back_with_half_the_learning_rate_and_the_run_completes(tmp_path, medmnist_dir,
                                                                                       monkeypatch, capsys):
    from medscope import runs

    _failing_steps(monkeypatch, 4)  # epoch 1 has 4 steps, tolerates 3 skipped: rolled back once, then clean
    assert _train(tmp_path, medmnist_dir) == 0
    out = capsys.readouterr().out
    assert "back to the weights of epoch 0 with the learning rate x0.5 (rollback 1 of at most 3)" in out
    assert "stability: 0 step(s) skipped for a non-finite loss or gradient, 1 rollback(s)" in out
    (run,) = runs.list_runs(tmp_path / "results")
    info = run.info()
    assert info["status"] == "completed"
    assert info["stability"]["lr_scale"] == 0.5 and len(info["stability"]["rollbacks"]) == 1
    assert info["stability"]["rollbacks"][0]["epoch"] == 1 and info["stability"]["rollbacks"][0]["to_epoch"] == 0
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["stability"]["rollbacks"] == info["stability"]["rollbacks"]


def test_a_few_non_finite_steps_are_skipped_counted_and_recorded(tmp_path, medmnist_dir, monkeypatch, capsys):
    from medscope import runs

    _failing_steps(monkeypatch, 2)
    assert _train(tmp_path, medmnist_dir) == 0
    assert "(2 non-finite step(s) skipped)" in capsys.readouterr().out
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["stability"] == {"skipped_steps": 2, "rollbacks": [], "lr_scale": 1.0}
    history = (run.path / "history.csv").read_text().splitlines()
    assert history[0].endswith(",skipped_steps,val_collapsed")
    assert [row.split(",")[-2] for row in history[1:]] == ["2", "0"]


def test_a_run_that_cannot_recover_ends_failed_after_three_rollbacks(tmp_path, medmnist_dir, monkeypatch, capsys):
    from medscope import runs
    from medscope.app import cli

    _failing_steps(monkeypatch, 10**9)
    assert _train(tmp_path, medmnist_dir) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "after 3 rollbacks with a lower learning rate" in err and err.count("\n") == 1
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["status"] == "failed" and len(run.info()["stability"]["rollbacks"]) == 3


def test_an_epoch_whose_validation_predictions_are_one_class_is_not_kept_for_its_auc(tmp_path, medmnist_dir,
                                                                                    monkeypatch, capsys):
    """A collapsed model can rank well; on a small split its AUC picked early, one-class epochs."""
    from medscope import metrics as medscope_metrics
    from medscope.train import experiment

    calls = {"n": 0}

    def epoch_one_collapsed(task, labels, probabilities):
        calls["n"] += 1
        verdict = medscope_metrics.collapse(task, labels, probabilities)
        return dict(verdict, collapsed=calls["n"] == 1)  # the first validation is called collapsed

    monkeypatch.setattr(experiment, "collapse", epoch_one_collapsed)
    assert _train(tmp_path, medmnist_dir, "--epochs", "2") == 0
    (run,) = (tmp_path / "results").iterdir()
    rows = _csv(RunLayout(run).history_csv)
    assert [r["val_collapsed"] for r in rows] == ["1", "0"]
    assert json.loads(RunLayout(run).metrics_json.read_text())["best_epoch"] == 2  # whatever the AUCs


def test_a_short_3d_run_under_forced_bf16_autocast_finishes_with_finite_metrics(tmp_path, medmnist_dir, monkeypatch):
    """bf16 autocast forced on whatever CPU runs the suite (emulated where it has no native bf16):
    the 3D ResNet-18's layers are probed, wrong ones train in float32, and the run completes."""
    import math

    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: True)
    monkeypatch.setenv("MEDSCOPE_CACHE", str(tmp_path / "cache"))
    run = train_run(tmp_path, medmnist_dir, "--dataset", "adrenalmnist3d", "--model", "resnet18", "--subset", "64",
                    "--epochs", "2", "--batch-size", "32", "--bootstrap", "0", "--device", "cpu")
    record = json.loads(RunLayout(run).run_json.read_text())
    assert record["status"] == "completed" and record["environment"]["amp_dtype"] == "bfloat16"
    checked = record["environment"]["precision_check"]
    assert checked["probed"] >= 10 and all(name.startswith("backbone.") for name in checked["float32_layers"])
    metrics = json.loads(RunLayout(run).metrics_json.read_text())
    assert all(math.isfinite(metrics[split][key]) for split in ("val", "test") for key in ("auc", "acc"))
    assert all(math.isfinite(float(row["train_loss"])) for row in _csv(RunLayout(run).history_csv))
    if loop._cpu_flags() and "avx512_bf16" in loop._cpu_flags():  # native bf16: the wrong kernel is found
        assert set(checked["float32_layers"]) == {"backbone.layer3.0.conv2.0", "backbone.layer3.1.conv1.0",
                                                  "backbone.layer3.1.conv2.0"}
