"""medscope.train.config: a run's settings, typed and checked; the recipe fills only what was left unset."""
import doctest
import json
from pathlib import Path

import pytest

import train
from medscope import data
from medscope.app import cli
from medscope.train import config
from medscope.train.config import TrainConfig

# run.json's config of a run trained by
#   python train.py --dataset breastmnist --epochs 2 --subset 256 --seed 1
# (its folders replaced by relative ones)
RECORDED = json.loads("""{"dataset": "breastmnist", "size": 28, "model": "resnet18", "epochs": 2, "batch_size": 64,
 "optimizer": "adamw", "lr": 0.002, "weight_decay": 0.0005, "schedule": "cosine", "warmup_epochs": 1.0,
 "label_smoothing": 0.0, "mixup": 0.0, "clip_grad": 0.0, "dropout": 0.2, "patience": 0, "select": "best",
 "augment": "light", "recipe": "general", "tta": false, "pretrained": false, "weights": null, "subset": 256,
 "amp": true, "precise_bn": true, "deterministic": false, "skip_md5": false, "seed": 1, "bootstrap": 2000, "device": "cpu", "data_dir": "data",
 "results_dir": "results", "runs_dir": "runs", "run_name": null, "world_size": 1, "workers": 0, "memmap": "auto",
 "command": "python train.py --dataset breastmnist --epochs 2 --subset 256 --seed 1 --device cpu"}""")
# The keys of a run made before --select, the recipes, torchrun, --workers, --memmap and precise BN existed
OLDER_KEYS = ("dataset", "size", "model", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule",
              "warmup_epochs", "label_smoothing", "mixup", "clip_grad", "dropout", "patience", "augment", "tta",
              "pretrained", "weights", "subset", "amp", "deterministic", "skip_md5", "seed", "device", "data_dir",
              "results_dir", "runs_dir", "run_name", "command")


def _args(*argv):
    return train.get_args_parser().parse_args(list(argv))


def _config(*argv, n_train=None) -> TrainConfig:
    """The complete config train.py makes for ``argv`` (one dataset x model) with ``n_train`` images."""
    (request,) = train.build_configs(_args(*argv))
    return config.with_recipe(request, n_train or data.dataset_info(request.dataset, request.size).n_samples["train"])


def test_the_doctests_hold():
    assert doctest.testmod(config).failed == 0


# ---------------------------------------------------------------- the recorded dict

def test_a_config_survives_its_dict_and_json():
    made = _config("--dataset", "adrenalmnist3d", "--lr", "0.01", "--tta", "--subset", "64", "--weights", "w.pth",
                   "--memmap", "never", "--run-name", "mine", "--optimizer", "sgd", "--no-amp", n_train=64)
    assert (made.pretrained, made.amp, made.optimizer, made.recipe) == (True, False, "sgd", "general")
    assert TrainConfig.from_dict(made.to_dict()) == made
    assert TrainConfig.from_dict(json.loads(json.dumps(made.to_dict()))) == made


def test_a_recorded_config_loads_and_gives_back_the_same_dict_key_for_key():
    loaded = TrainConfig.from_dict(RECORDED)
    assert (loaded.epochs, loaded.batch_size, loaded.lr, loaded.subset, loaded.seed) == (2, 64, 0.002, 256, 1)
    assert loaded.is_complete
    assert json.dumps(loaded.to_dict()) == json.dumps(RECORDED)  # same keys, order and values


def test_the_dict_holds_exactly_what_train_py_recorded_before():
    made = _config("--dataset", "breastmnist", "--epochs", "2", "--subset", "256", "--seed", "1",
                   "--device", "cpu", "--data-dir", "data", n_train=256)
    expected = dict(RECORDED, command=None)  # train.main() from a test records no command line
    assert json.dumps(made.to_dict()) == json.dumps(expected)


def test_a_run_from_before_the_newer_settings_loads_with_what_training_then_used():
    older = {key: RECORDED[key] for key in OLDER_KEYS}
    loaded = TrainConfig.from_dict(older)
    assert (loaded.select, loaded.world_size, loaded.workers, loaded.memmap, loaded.recipe, loaded.precise_bn) == \
        ("best", 1, 0, "auto", None, False)  # evaluated with BatchNorm's running statistics, as then
    assert {k: v for k, v in loaded.to_dict().items() if k in older} == older


@pytest.mark.parametrize("change,needle", [
    ({"lr": float("inf")}, "--lr inf: expected a finite number in (0, 10]"),
    ({"lr": 0}, "--lr 0: expected a finite number in (0, 10]"),
    ({"seed": -1}, "--seed -1: expected an integer >= 0 and <= 4294967295"),
    ({"seed": 2**70}, "--seed 1180591620717411303424: expected an integer >= 0 and <= 4294967295"),
    ({"workers": 10**11}, "--workers 100000000000: expected an integer >= 0 and <= 64"),
    ({"batch_size": 10**20}, "--batch-size 100000000000000000000: expected an integer >= 1 and <= 65536"),
    ({"warmup_epochs": 1e308}, "--warmup-epochs 1e+308: expected a finite number in [0, 10000]"),
    ({"lr": float("nan")}, "--lr nan"),
    ({"weight_decay": -1e-4}, "--weight-decay"),
    ({"label_smoothing": 1.0}, "--label-smoothing 1.0: expected a finite number in [0, 1)"),
    ({"dropout": 1.5}, "--dropout"),
    ({"mixup": "0.2"}, "--mixup '0.2'"),
    ({"epochs": 0}, "--epochs 0: expected an integer >= 1"),
    ({"epochs": 2.5}, "--epochs 2.5"),
    ({"batch_size": True}, "--batch-size True"),
    ({"patience": -1}, "--patience -1: expected an integer >= 0"),
    ({"optimizer": "lamb"}, "--optimizer 'lamb': expected one of adamw, sgd"),
    ({"select": "median"}, "--select"),
    ({"augment": "heavy"}, "--augment"),
    ({"memmap": "sometimes"}, "--memmap"),
    ({"amp": "yes"}, "--amp: expected true or false"),
    ({"world_size": 0}, "--world-size 0"),
    ({"dataset": ""}, "--dataset"),
    ({"model": "cnn", "pretrained": True}, "resnet18 only"),
])
def test_invalid_values_are_usage_errors_naming_the_setting(change, needle):
    with pytest.raises(cli.UsageError) as caught:
        TrainConfig.from_dict(dict(RECORDED, **change))
    assert needle in str(caught.value)


def test_a_recorded_dict_with_a_missing_or_unknown_setting_is_refused():
    with pytest.raises(cli.UsageError, match="lacks lr"):
        TrainConfig.from_dict({k: v for k, v in RECORDED.items() if k != "lr"})
    with pytest.raises(cli.UsageError, match="does not know: momentum"):
        TrainConfig.from_dict(dict(RECORDED, momentum=0.9))
    with pytest.raises(cli.UsageError, match="mapping"):
        TrainConfig.from_dict(["breastmnist"])


def test_numbers_are_floats_and_paths_are_text():
    loaded = TrainConfig.from_dict(dict(RECORDED, lr=1, warmup_epochs=0))
    assert loaded.lr == 1.0 and isinstance(loaded.lr, float) and isinstance(loaded.warmup_epochs, float)
    made = TrainConfig(dataset="breastmnist", data_dir=Path("data") / "medmnist", weights=Path("w.pth"))
    assert (made.data_dir, made.weights) == (str(Path("data") / "medmnist"), "w.pth")


# ---------------------------------------------------------------- the recipe fills what was left unset

def test_flags_left_out_take_the_tuned_recipe():
    made = _config("--dataset", "breastmnist")
    assert (made.epochs, made.batch_size, made.lr, made.augment, made.label_smoothing, made.select, made.recipe) == \
        (6, 32, 2e-3, "none", 0.1, "best", "tuned")
    made = _config("--dataset", "adrenalmnist3d")
    assert (made.epochs, made.batch_size, made.augment, made.select) == (12, 64, "strong", "last")


def test_every_flag_given_beats_the_recipe():
    made = _config("--dataset", "adrenalmnist3d", "--epochs", "2", "--batch-size", "16", "--lr", "0.01",
                   "--augment", "light", "--label-smoothing", "0", "--select", "best")
    assert (made.epochs, made.batch_size, made.lr, made.augment, made.label_smoothing, made.select) == \
        (2, 16, 0.01, "light", 0.0, "best")
    assert made.recipe == "tuned"  # the recipe the rest came from (here: nothing)


def test_a_value_equal_to_the_general_default_still_wins_over_a_tuned_recipe():
    # 0 and "none" are values, not "unset": breastmnist's tuned recipe has smoothing 0.1 and batch 32
    made = _config("--dataset", "breastmnist", "--label-smoothing", "0", "--batch-size", "64")
    assert (made.label_smoothing, made.batch_size, made.epochs) == (0.0, 64, 6)


def test_a_tuned_learning_rate_is_adamws_and_sgd_takes_its_own():
    assert _config("--dataset", "pneumoniamnist").lr == 1e-3
    assert _config("--dataset", "pneumoniamnist", "--optimizer", "sgd").lr == 0.05


def test_a_subset_uses_the_general_rule():
    made = _config("--dataset", "breastmnist", "--subset", "256", n_train=256)
    assert (made.epochs, made.batch_size, made.augment, made.recipe) == (15, 64, "light", "general")


def test_a_requested_config_is_incomplete_until_the_recipe_fills_it():
    (request,) = train.build_configs(_args("--dataset", "breastmnist", "--epochs", "3"))
    assert not request.is_complete and request.epochs == 3 and request.lr is None
    assert config.with_recipe(request, 546).is_complete


# ---------------------------------------------------------------- planning every run before any work

def test_the_plan_is_every_dataset_by_every_model_dataset_first():
    plan = train.build_configs(_args("--dataset", "breastmnist", "adrenalmnist3d", "--model", "cnn", "resnet18"))
    assert [(c.dataset, c.model) for c in plan] == [("breastmnist", "cnn"), ("breastmnist", "resnet18"),
                                                     ("adrenalmnist3d", "cnn"), ("adrenalmnist3d", "resnet18")]


def test_weights_imply_pretrained():
    (request,) = train.build_configs(_args("--dataset", "breastmnist", "--weights", "w.pth"))
    assert request.pretrained and request.weights == "w.pth"


@pytest.mark.parametrize("argv,needle", [
    ([], "choose a dataset"),
    (["--dataset", "breastmnist", "nosuchmnist"], "unknown dataset"),
    (["--dataset", "breastmnist", "--size", "32"], "sizes"),
    (["--dataset", "breastmnist", "pneumoniamnist", "--run-name", "one"], "--run-name names one run"),
    (["--dataset", "breastmnist", "--model", "resnet18", "cnn", "--weights", "w.pth"], "resnet18 only"),
    (["--dataset", "breastmnist", "--lr", "inf"], "--lr: expected a number in"),
])
def test_the_plan_refuses_bad_requests_before_any_work(argv, needle):
    with pytest.raises(cli.UsageError, match=needle.replace("-", r"\-")):
        train.build_configs(_args(*argv))


def test_the_global_batch_must_split_over_the_processes():
    config.check_batch(64, 4)
    with pytest.raises(cli.UsageError, match="use 63 or 66"):
        config.check_batch(64, 3)
    with pytest.raises(cli.UsageError, match="use 3$"):
        config.check_batch(2, 3)
    with pytest.raises(cli.UsageError, match="split evenly over the 3 processes"):
        config.plan(["breastmnist"], ["cnn"], {"batch_size": 64}, world_size=3)
