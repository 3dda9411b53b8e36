"""The settings of one training run, typed and checked: :class:`TrainConfig`.

One :class:`TrainConfig` holds every setting ``train.py`` takes for one
dataset x model. Its plain-dict form (:meth:`TrainConfig.to_dict`) is what
``run.json``'s ``config`` and every checkpoint's ``config`` hold, key for key,
and :meth:`TrainConfig.from_dict` reads it back (runs written before a key
existed get the value training used when it was absent).

A config is built in two steps, because the defaults of some settings depend
on the training split:

1. :func:`plan` makes the *requested* config of every dataset x model from the
   values the user gave; the settings a recipe decides (:data:`RECIPE_FIELDS`)
   stay ``None`` where the user left them unset. Every value is checked here,
   before any data is read or any run folder is made.
2. :func:`with_recipe` fills those from :func:`medscope.train.recipes.default_recipe`
   once the number of training images is known. A value the user gave always wins.

Every check raises :class:`~medscope.errors.UsageError` with one line that
names the setting as its flag (``--lr``).
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medscope import limits
from medscope.errors import UsageError
from medscope.models import MODELS
from medscope.train import recipes
from medscope.train.augment import LEVELS
from medscope.train.loop import OPTIMIZERS, SCHEDULES, SELECTIONS

MEMMAP = ("auto", "always", "never")  # --memmap: memory-map the splits by size, always, or never
RECIPES = ("general", "tuned")  # recipes.Recipe.source: what a run records
RECIPE_CHOICES = recipes.CHOICES  # what a request may ask for (--recipe); "auto" becomes one of RECIPES
# Settings a recipe fills when the user leaves them unset (None in a requested config).
RECIPE_FIELDS = ("epochs", "batch_size", "lr", "label_smoothing", "select", "augment")
# Settings every recorded config holds: the ones training reads without a fallback.
REQUIRED = ("dataset", "size", "model", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule",
            "warmup_epochs", "label_smoothing", "mixup", "clip_grad", "dropout", "patience", "augment", "seed")

# What training used for a setting absent from a run made before it existed, where that is not the field's default
ABSENT = {"select": "best", "precise_bn": False}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every setting of one training run; the defaults are ``train.py``'s.

    The fields are in the order of the recorded dict. ``None`` in a field of
    :data:`RECIPE_FIELDS` means "the recipe's" (:func:`with_recipe` fills it);
    ``recipe`` is the request's ``--recipe`` (``"auto"``, ``"tuned"`` or
    ``"general"``) until :func:`with_recipe` records which recipe filled them
    (``"general"`` or ``"tuned"``).
    Creating a config checks every value (:class:`~medscope.errors.UsageError`).

    >>> TrainConfig(dataset="breastmnist", epochs=2).lr is None
    True
    >>> TrainConfig(dataset="breastmnist", lr=float("nan"))
    Traceback (most recent call last):
    ...
    medscope.errors.UsageError: --lr nan: expected a finite number in (0, 10]
    """

    dataset: str
    size: int = 28  # image size in pixels
    model: str = "resnet18"
    epochs: int | None = None
    batch_size: int | None = None  # the global batch: under torchrun each process takes 1/world_size of it
    optimizer: str = "adamw"
    lr: float | None = None  # peak learning rate
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float | None = None
    mixup: float = 0.0  # MixUp Beta(alpha, alpha); 0 disables
    clip_grad: float = 0.0  # gradient norm clip; 0 disables
    dropout: float = 0.2
    patience: int = 0  # epochs without a better validation AUC before stopping; 0 never stops early
    select: str | None = None  # the run's model: the "best" epoch by validation AUC, or the "last"
    augment: str | None = None
    recipe: str | None = None  # --recipe in a request; the recipe used in a filled config
    tta: bool = False
    pretrained: bool = False
    weights: str | None = None  # a local torchvision state dict to start from
    subset: int | None = None  # train on a random subset of this many images
    amp: bool = True
    precise_bn: bool = True  # BatchNorm statistics recomputed on training images before each evaluation
    deterministic: bool = False
    skip_md5: bool = False
    seed: int = 0
    bootstrap: int = 2000  # resamples for the 95% intervals of the final metrics; 0: none
    device: str = "auto"
    data_dir: str | None = None
    results_dir: str = "results"
    runs_dir: str = "runs"
    run_name: str | None = None
    world_size: int = 1  # processes that trained the run
    workers: int = 0  # background loader processes
    memmap: str = "auto"
    command: str | None = None  # the command line that started the run, where known

    def __post_init__(self):
        _check(self)

    @property
    def is_complete(self) -> bool:
        """Whether every setting a recipe decides has a value (the config can train)."""
        return all(getattr(self, name) is not None for name in RECIPE_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """The plain, JSON-able dict that run.json and checkpoints record (field order)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> TrainConfig:
        """The config of a recorded dict (run.json's or a checkpoint's ``config``).

        Settings added after a run was made take the value training used when
        they were absent (``select`` "best", ``world_size`` 1, ...). A missing
        required setting, an unknown one or a bad value is a UsageError.

        >>> config = TrainConfig(dataset="breastmnist", epochs=2, batch_size=32, lr=1e-3, label_smoothing=0.0,
        ...                      select="best", augment="none", recipe="general")
        >>> TrainConfig.from_dict(config.to_dict()) == config
        True
        """
        if not isinstance(recorded, Mapping):
            raise UsageError(f"a run's config must be a mapping of settings, not {type(recorded).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(recorded) - names)
        if unknown:
            raise UsageError(f"the run's config has settings this version does not know: {', '.join(unknown)}")
        missing = [name for name in REQUIRED if name not in recorded]
        if missing:
            raise UsageError(f"the run's config lacks {', '.join(missing)}")
        return cls(**{**ABSENT, **recorded})


# The settings a user gives as flags of the same name; the others are set per run (dataset, model),
# by the recipe, or by the job (world_size, command).
USER_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                      if f.name not in ("dataset", "model", "world_size", "command"))


# ------------------------------------------------------------------ building

def plan(datasets: Sequence[str] | None, models: Sequence[str], settings: Mapping[str, Any], *,
         world_size: int = 1, command: str | None = None) -> list[TrainConfig]:
    """The requested config of every dataset x model, in training order (dataset-major).

    Parameters
    ----------
    datasets, models : sequences of str
        MedMNIST flags and model names; one run each pair.
    settings : mapping
        The other settings as given (field name -> value); ``None`` for a
        :data:`RECIPE_FIELDS` setting leaves it to the recipe.
    world_size : int
        Processes that will train: the global batch must split evenly over them.
    command : str, optional
        The command line to record.

    Everything is checked before anything is done: the dataset names and
    sizes, ``run_name`` naming a single run, every value, and a given batch
    against ``world_size``. ``weights`` implies ``pretrained``.
    """
    from medscope.data import dataset_flags, dataset_info

    if not datasets:
        raise UsageError("choose a dataset with --dataset, e.g. --dataset breastmnist "
                         f"(one of: {', '.join(dataset_flags())})")
    size = settings.get("size", TrainConfig.size)
    flags = [dataset_info(flag, size).flag for flag in datasets]  # unknown names and sizes end here
    if settings.get("run_name") and len(flags) * len(models) > 1:
        raise UsageError("--run-name names one run; drop it when training several datasets or models")
    settings = dict(settings, world_size=world_size, command=command)
    if settings.get("weights"):
        settings["pretrained"] = True
    configs = [TrainConfig(dataset=flag, model=model, **settings) for flag in flags for model in models]
    for config in configs:
        if config.batch_size is not None:
            check_batch(config.batch_size, world_size)
    return configs


def with_recipe(config: TrainConfig, n_train: int) -> TrainConfig:
    """``config`` with every setting left to the recipe filled, for ``n_train`` training images.

    The recipe is :func:`medscope.train.recipes.default_recipe` of the run's
    dataset, model and size, as ``config.recipe`` asks (``None``: auto);
    ``recipe`` then records its source. A set value is kept.
    The learning rate a recipe gives depends on the optimizer
    (:meth:`~medscope.train.recipes.Recipe.learning_rate`).
    """
    recipe = chosen_recipe(config, n_train)
    default = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "lr": recipe.learning_rate(config.optimizer),
               "label_smoothing": recipe.label_smoothing, "select": recipe.select, "augment": recipe.augment}
    filled = {name: value for name, value in default.items() if getattr(config, name) is None}
    return dataclasses.replace(config, recipe=recipe.source, **filled)  # checked like a new config


def chosen_recipe(config: TrainConfig, n_train: int) -> recipes.Recipe:
    """The recipe ``config`` asks for (``config.recipe``: auto, tuned or general) with the reason it applies."""
    return recipes.default_recipe(config.dataset, config.model, config.size, n_train, config.recipe or "auto")


def check_batch(batch_size: int, world_size: int) -> None:
    """The global batch must split evenly over the processes (UsageError with the nearest that do).

    >>> check_batch(64, 4)  # 16 images per process
    >>> try:
    ...     check_batch(64, 3)
    ... except UsageError as exc:
    ...     print(str(exc).split("; ")[1])
    use 63 or 66
    """
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        nearest = " or ".join(str(b) for b in (lower, lower + world_size) if b > 0)
        raise UsageError(f"--batch-size {batch_size} is the global batch and must split evenly over the "
                         f"{world_size} processes; use {nearest}")


def memory_mapped(memmap: str) -> bool | None:
    """``data.load_dataset``'s ``mmap`` for a ``memmap`` setting: None decides by size.

    >>> [memory_mapped(m) for m in MEMMAP]
    [None, True, False]
    """
    return {"auto": None, "always": True, "never": False}[memmap]


# ------------------------------------------------------------------ checks

def _check(config: TrainConfig) -> None:
    """Raise UsageError for the first setting of ``config`` with a bad type or value."""
    _text(config, "dataset")
    _integer(config, "size", 1)
    _choice(config, "model", MODELS)
    _integer(config, "epochs", 1, limits.EPOCHS_MAX, optional=True)
    _integer(config, "batch_size", 1, limits.BATCH_SIZE_MAX, optional=True)
    _choice(config, "optimizer", OPTIMIZERS)
    _number(config, "lr", maximum=limits.LR_MAX, positive=True, optional=True)
    _number(config, "weight_decay", maximum=limits.WEIGHT_DECAY_MAX)
    _choice(config, "schedule", SCHEDULES)
    _number(config, "warmup_epochs", maximum=limits.EPOCHS_MAX)
    _number(config, "label_smoothing", below=1.0, optional=True)
    _number(config, "mixup", maximum=limits.MIXUP_MAX)
    _number(config, "clip_grad", maximum=limits.CLIP_GRAD_MAX)
    _number(config, "dropout", below=1.0)
    _integer(config, "patience", 0, limits.EPOCHS_MAX)
    _choice(config, "select", SELECTIONS, optional=True)
    _choice(config, "augment", LEVELS, optional=True)
    _choice(config, "recipe", RECIPE_CHOICES, optional=True)
    for name in ("tta", "pretrained", "amp", "precise_bn", "deterministic", "skip_md5"):
        if not isinstance(getattr(config, name), bool):
            raise UsageError(f"{_flag(name)}: expected true or false, got {getattr(config, name)!r}")
    _path(config, "weights")
    _integer(config, "subset", 1, limits.IMAGES_MAX, optional=True)
    _integer(config, "seed", 0, limits.SEED_MAX)
    _integer(config, "bootstrap", 0, limits.RESAMPLES_MAX)
    _text(config, "device")
    for name in ("data_dir", "results_dir", "runs_dir"):
        _path(config, name, optional=name == "data_dir")
    for name in ("run_name", "command"):
        _text(config, name, optional=True)
    _integer(config, "world_size", 1)
    _integer(config, "workers", 0, limits.WORKERS_MAX)
    _choice(config, "memmap", MEMMAP)
    if config.pretrained and config.model != "resnet18":
        raise UsageError("--pretrained is for resnet18 only; the plain CNN has no pretrained weights")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(config, name: str, *, below: float | None = None, maximum: float | None = None,
            positive: bool = False, optional: bool = False) -> None:
    """A finite float >= 0 (> 0 if ``positive``; < ``below``, <= ``maximum``); an int is taken as the same float."""
    value = getattr(config, name)
    if value is None and optional:
        return
    start = "(0" if positive else "[0"
    expected = (f"a finite number in {start}, {below:g})" if below is not None else
                f"a finite number in {start}, {maximum:g}]" if maximum is not None else "a finite number >= 0")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{_flag(name)} {value!r}: expected {expected}")
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0) and (below is None or value < below)
            and (maximum is None or value <= maximum)):
        raise UsageError(f"{_flag(name)} {value}: expected {expected}")
    object.__setattr__(config, name, float(value))  # frozen: set once, while the config is made


def _integer(config, name: str, minimum: int | None, maximum: int | None = None, *, optional: bool = False) -> None:
    """An int >= ``minimum`` and <= ``maximum`` (the bounds of medscope/limits.py)."""
    value = getattr(config, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        expected = "an integer" if minimum is None else f"an integer >= {minimum}"
        expected += f" and <= {maximum}" if maximum is not None else ""
        raise UsageError(f"{_flag(name)} {value!r}: expected {expected}")


def _choice(config, name: str, choices: Sequence[str], *, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if value not in choices:
        raise UsageError(f"{_flag(name)} {value!r}: expected one of {', '.join(choices)}")


def _path(config, name: str, *, optional: bool = True) -> None:
    """A folder or file: text, or a path object taken as its text."""
    value = getattr(config, name)
    if isinstance(value, os.PathLike) or (isinstance(value, str) and type(value) is not str):
        # plain text, also for a str subclass such as cli.LeftOut: checkpoints hold the config and
        # torch.load(..., weights_only=True) takes no class of ours
        value = str(os.fspath(value))
        object.__setattr__(config, name, value)
    _text(config, name, optional=optional)


def _text(config, name: str, *, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise UsageError(f"{_flag(name)} {value!r}: expected a non-empty text")
