"""Default recipes: tuned where measured, the general rule elsewhere.

That a given flag always wins over the recipe is tested with the config that
applies it (tests/test_config.py).
"""
import doctest

import pytest

from medscope import data
from medscope.train import recipes


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


def test_the_doctests_hold():
    assert doctest.testmod(recipes).failed == 0
