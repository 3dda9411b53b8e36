"""Default recipes: tuned where measured, the general rule elsewhere.

That a given flag always wins over the recipe is tested with the config that
applies it (tests/test_config.py).
"""
import dataclasses
import doctest

import pytest

from medscope import data
from medscope.errors import UsageError
from medscope.train import recipes


@pytest.mark.parametrize("flag", sorted(recipes.TUNED))
def test_tuned_recipes_apply_to_resnet18_at_28px_on_the_whole_split(flag):
    assert dataclasses.replace(recipes.default_recipe(flag), reason="") == recipes.TUNED[flag]
    assert recipes.default_recipe(flag).source == "tuned"
    assert recipes.default_recipe(flag).reason.startswith(f"tuned for {flag}")
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


@pytest.mark.parametrize("flag", sorted(recipes.TUNED))
def test_recipe_general_forces_the_general_rule_on_a_tuned_dataset(flag):
    general = recipes.default_recipe(flag, choice="general")
    full = data.dataset_info(flag).n_samples["train"]
    assert dataclasses.replace(general, reason="") == recipes.Recipe(epochs=recipes.general_epochs(full))
    assert general.reason == "--recipe general"


def test_recipe_tuned_refuses_a_run_it_was_not_measured_for_and_says_why():
    with pytest.raises(UsageError, match="no tuned recipe for pathmnist"):
        recipes.default_recipe("pathmnist", choice="tuned")
    with pytest.raises(UsageError, match="for resnet18, not cnn"):
        recipes.default_recipe("breastmnist", "cnn", choice="tuned")
    assert recipes.default_recipe("breastmnist", choice="tuned").source == "tuned"


def test_auto_says_why_the_general_rule_applies():
    assert recipes.default_recipe("pathmnist").reason.startswith("no tuned recipe for pathmnist")
    assert recipes.default_recipe("breastmnist", size=64).reason == "the tuned recipe for breastmnist is for 28 px, not 64"
    assert "full training split (546 images), not 100" in recipes.default_recipe("breastmnist", n_train=100).reason


def test_every_flag_and_size_gets_a_deterministic_recipe_from_its_metadata():
    for flag in data.dataset_flags():
        for size in data.SIZES_3D if flag.endswith("3d") else data.SIZES_2D:
            first, again = recipes.default_recipe(flag, size=size), recipes.default_recipe(flag, size=size)
            assert first == again
            assert first.source == ("tuned" if flag in recipes.TUNED and size == 28 else "general")
            if first.source == "general":
                assert recipes.MIN_EPOCHS <= first.epochs <= recipes.MAX_EPOCHS


def test_the_doctests_hold():
    assert doctest.testmod(recipes).failed == 0
