"""Default recipes: tuned where measured, the general rule elsewhere, and a given flag always wins."""
import pytest

import train
from medscope import data
from medscope.train import recipes


def _config(argv, flag="breastmnist", model="resnet18", n_train=None):
    args = train.get_args_parser().parse_args(["--dataset", flag, *argv])
    info = data.dataset_info(flag, args.size)
    return train._config(args, info, model, n_train or info.n_samples["train"])


@pytest.mark.parametrize("flag", sorted(recipes.TUNED))
def test_tuned_recipes_apply_to_resnet18_at_28px_on_the_whole_split(flag):
    assert recipes.default_recipe(flag) == recipes.TUNED[flag]
    assert recipes.default_recipe(flag).source == "tuned"
    full = data.dataset_info(flag).n_samples["train"]
    for other in (recipes.default_recipe(flag, "cnn"), recipes.default_recipe(flag, n_train=full - 1),
                  recipes.default_recipe(flag, size=64)):
        assert other.source == "general" and other.batch_size == 64 and other.augment == "light"
        assert other.select == "best"


def test_general_rule_sees_about_8000_images_in_3_to_15_epochs():
    assert [recipes.general_epochs(n) for n in (1, 546, 1188, 2000, 4708, 89_996)] == [15, 15, 7, 4, 3, 3]
    general = recipes.default_recipe("pathmnist")
    assert (general.epochs, general.batch_size, general.learning_rate("adamw"), general.augment,
            general.label_smoothing) == (3, 64, 2e-3, "light", 0.0)


def test_a_tuned_learning_rate_belongs_to_adamw_and_sgd_keeps_its_own():
    pneumonia = recipes.default_recipe("pneumoniamnist")
    assert pneumonia.learning_rate("adamw") == 1e-3 and pneumonia.learning_rate("sgd") == 0.05


def test_train_config_takes_the_recipe_for_flags_left_out():
    cfg = _config([])
    assert (cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["augment"], cfg["label_smoothing"], cfg["recipe"]) == \
        (6, 32, 2e-3, "none", 0.1, "tuned")
    cfg = _config([], flag="adrenalmnist3d")
    assert (cfg["epochs"], cfg["batch_size"], cfg["augment"], cfg["select"]) == (12, 64, "strong", "last")
    assert _config([])["select"] == "best"


def test_every_flag_given_beats_the_recipe():
    cfg = _config(["--epochs", "2", "--batch-size", "16", "--lr", "0.01", "--augment", "light",
                   "--label-smoothing", "0", "--select", "best"], flag="adrenalmnist3d")
    assert (cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["augment"], cfg["label_smoothing"], cfg["select"]) == \
        (2, 16, 0.01, "light", 0.0, "best")


def test_a_subset_uses_the_general_rule():
    cfg = _config(["--subset", "256"], n_train=256)
    assert (cfg["epochs"], cfg["batch_size"], cfg["augment"], cfg["recipe"]) == (15, 64, "light", "general")
