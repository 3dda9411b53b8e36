"""Default training recipes: what ``train.py`` uses for the settings a user leaves unset.

A recipe is chosen per run from the dataset, the model and the image size:

- a **tuned** recipe where one was measured: ResNet-18 at 28 px on
  breastmnist, pneumoniamnist and adrenalmnist3d, chosen by mean validation
  AUC over three seeds among the variants `bench/recipe_sweep.py` tried
  within the wall-time budget of a 2-core laptop CPU (docs/BENCHMARKS.md
  lists every variant and its result);
- otherwise the **general** rule: AdamW at 2e-3, batch 64, light
  augmentation, and enough epochs to see about ``IMAGE_BUDGET`` training
  images (between ``MIN_EPOCHS`` and ``MAX_EPOCHS``), so a default 28 px run
  takes minutes on a CPU.

``--recipe tuned|general`` forces one (``auto``, the default, takes the tuned
recipe where it applies). Every value the user gives on the command line wins
over the recipe; the run records the values it used, and which recipe, in
``run.json``'s ``config``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from medscope.errors import UsageError

IMAGE_BUDGET = 8000
CHOICES = ("auto", "tuned", "general")  # --recipe
MIN_EPOCHS, MAX_EPOCHS = 3, 15
DEFAULT_LR = {"adamw": 2e-3, "sgd": 0.05}


@dataclass(frozen=True)
class Recipe:
    """The defaults of one run. ``lr=None`` means the optimizer's default (``DEFAULT_LR``)."""

    epochs: int
    batch_size: int = 64
    lr: float | None = None
    augment: str = "light"
    label_smoothing: float = 0.0
    select: str = "best"  # the run's model: the epoch of highest validation AUC, or the last
    source: str = "general"  # "general" or "tuned"
    reason: str = ""  # why this recipe applies to the run, for the printed line

    def learning_rate(self, optimizer: str) -> float:
        # a tuned learning rate belongs to AdamW; SGD keeps its own default
        return self.lr if self.lr is not None and optimizer == "adamw" else DEFAULT_LR[optimizer]


# Tuned for model "resnet18" at 28 px (validation AUC, 3 seeds; see docs/BENCHMARKS.md).
# Short schedules on small sets converge faster without augmentation and with smaller batches;
# the 3D set overfits within a few epochs unless the augmentation is strong. Its validation
# split (98 volumes, 22 positive) is too small to choose among epochs: the highest validation
# AUC is often an early epoch whose probabilities are not yet calibrated, so the run keeps the
# last epoch, where the cosine schedule has annealed (CPU seeds 0-2: test AUC / ACC 0.847 / 0.814
# for the last epoch against 0.841 / 0.809 for the best by validation AUC).
TUNED: dict[str, Recipe] = {
    "breastmnist": Recipe(epochs=6, batch_size=32, augment="none", label_smoothing=0.1, source="tuned"),
    "pneumoniamnist": Recipe(epochs=2, batch_size=32, lr=1e-3, source="tuned"),
    "adrenalmnist3d": Recipe(epochs=12, augment="strong", select="last", source="tuned"),
}


def general_epochs(n_train: int, image_budget: int = IMAGE_BUDGET) -> int:
    """Epochs that show the model about ``image_budget`` images, clamped to [MIN_EPOCHS, MAX_EPOCHS].

    ``epochs = clamp(round(image_budget / n_train), 3, 15)``; ``image_budget`` is
    ``IMAGE_BUDGET`` in every run (bench/lodo_general_rule.py tries others).

    >>> general_epochs(546), general_epochs(100_000), general_epochs(10), general_epochs(1188, 4000)
    (15, 3, 15, 3)
    """
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(image_budget / max(n_train, 1)))))


def default_recipe(flag: str, model: str = "resnet18", size: int = 28, n_train: int | None = None,
                   choice: str = "auto") -> Recipe:
    """The recipe for a run of ``model`` on ``flag`` at ``size`` px with ``n_train`` training images.

    A tuned recipe applies to ResNet-18 at 28 px on the full training split of a
    dataset it was measured on: with ``--subset`` (``n_train`` smaller than the
    split), another model or size, the general rule applies. ``choice`` is
    ``--recipe``: ``"auto"`` takes the tuned recipe where it applies,
    ``"general"`` forces the general rule, ``"tuned"`` refuses a run the tuned
    recipe does not apply to (:class:`~medscope.errors.UsageError`).
    :attr:`Recipe.reason` says why.

    >>> default_recipe("breastmnist").epochs, default_recipe("breastmnist", "cnn").epochs
    (6, 15)
    >>> default_recipe("breastmnist", n_train=32).source
    'general'
    >>> default_recipe("breastmnist", choice="general").reason
    '--recipe general'
    """
    from medscope.data import dataset_info

    if choice not in CHOICES:
        raise UsageError(f"--recipe {choice!r}: choose one of {', '.join(CHOICES)}")
    full = dataset_info(flag, size).n_samples["train"]
    n_train = full if n_train is None else n_train
    general = Recipe(epochs=general_epochs(n_train))
    if choice == "general":
        return replace(general, reason="--recipe general")
    tuned = TUNED.get(flag)
    if tuned is None:
        why_not = f"no tuned recipe for {flag} (tuned: {', '.join(TUNED)})"
    elif model != "resnet18":
        why_not = f"the tuned recipe for {flag} is for resnet18, not {model}"
    elif size != 28:
        why_not = f"the tuned recipe for {flag} is for 28 px, not {size}"
    elif n_train < full:
        why_not = f"the tuned recipe for {flag} is for the full training split ({full} images), not {n_train}"
    else:
        return replace(tuned, reason=f"tuned for {flag} (resnet18, 28 px; docs/BENCHMARKS.md)")
    if choice == "tuned":
        raise UsageError(f"--recipe tuned: {why_not}; leave --recipe out or use --recipe general")
    return replace(general, reason=why_not)
