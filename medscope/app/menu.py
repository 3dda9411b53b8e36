"""The numbered terminal menu of ``run_tool.py`` and its full pipeline.

Every item runs the ``main(argv)`` of a script beside ``run_tool.py`` through
:func:`medscope.app.cli.run`, so exit codes and one-line errors are those of the
script run by hand; the menu only turns answers into an ``argv`` (and prints it
as a command line first, so a session can be scripted later).

What each item asks lives in one table, :data:`ITEMS`: an item is a script
name plus a tuple of :class:`Question` rows. A later item adds a row, not code.

Input comes from ``input()``, so the menu works on a terminal and through a
pipe (``printf '2\\n1\\n0\\n' | python run_tool.py``). End of input or Ctrl-C at
the main menu ends the session (exit 0); during an item's questions they go
back to the main menu; an invalid answer is asked again with a hint.

Besides the scripts, the menu looks after the results folder: it resumes a run
that stopped before its last epoch (item 9, ``train.py --resume``), and lists
and deletes runs (item 10; a deletion is confirmed by typing the run's name and
an interrupted one leaves either the whole run or none of it listed). Its header
names the data folder in force and the MedMNIST files there; every run list
marks runs that did not complete (``[interrupted]``), and a default run is the
newest completed one. On a terminal, a pause of more than a second with
nothing printed (importing PyTorch, a script before its first line) shows a
spinner, erased before anything else is printed.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import importlib.util
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from medscope import runs as runs_lib
from medscope.app import cli
from medscope.runs import RUN_JSON, ResultsLayout, Run, list_runs

TITLE = "medscope — MedMNIST model lab"
PRELOADED = ("torch",)  # imported before the first script, Ctrl-C held back (see Session.load)
SCRIPT_DIR = Path(__file__).resolve().parents[2]  # medscope/app/menu.py -> the folder of run_tool.py
ALL_RUNS = "--all"


class Back(Exception):
    """Leave the current item and show the main menu again (with a reason, if any)."""


# --------------------------------------------------------------------------- questions

@dataclass(frozen=True)
class Option:
    """One numbered answer: ``value`` goes into argv, ``label`` is what the user reads."""

    value: str
    label: str


@dataclass(frozen=True)
class Choices:
    options: list[Option]
    header: str = ""  # column titles printed above the numbered list


@dataclass(frozen=True)
class Question:
    """One row of an item's question table.

    key      : name of the answer (later questions and defaults see earlier answers by key)
    prompt   : the words before ``[default]``
    choices  : ``(session, answers) -> Choices`` for a numbered list; None for a typed answer
    parse    : ``text -> value`` for a typed answer; raises ValueError (or argparse's
               ArgumentTypeError) whose message is the hint shown before asking again
    default  : a value, or ``(session, answers) -> value``; shown in brackets, Enter accepts it
    flag     : the script's option this answer becomes (``--epochs``); None with ``positional``
               or for an answer that only steers the questions
    positional : the answer is a positional argument (a subcommand), placed first
    always   : write the flag even when the value is the script's own default
    implied  : ``(session, answers) -> value`` the script takes by itself when the flag is left
               out (a recipe's value); with ``always=False`` that value is not written
    when     : ``answers -> bool``; the question is skipped (and takes its default) when False
    show     : ``value -> str`` for the default in brackets and the command line
    to_argv  : ``value -> list[str]`` when one flag is not enough (``--all``)
    each     : in the full pipeline, run the script once per option instead of once
    many     : a numbered list from which several answers may be chosen (``1 3``, ``2-4``,
               names); the value is a tuple in list order, ``()`` for none
    """

    key: str
    prompt: str
    choices: Callable[["Session", dict], Choices] | None = None
    parse: Callable[[str], Any] | None = None
    default: Any = None
    flag: str | None = None
    positional: bool = False
    always: bool = True
    implied: Callable[["Session", dict], Any] | None = None
    when: Callable[[dict], bool] | None = None
    show: Callable[[Any], str] | None = None
    to_argv: Callable[[Any], list[str]] | None = None
    each: bool = False
    many: bool = False

    def default_for(self, session: "Session", answers: dict):
        return self.default(session, answers) if callable(self.default) else self.default

    def display(self, value) -> str:
        if self.show is not None:
            return self.show(value)
        return "" if value is None else str(value)

    def accept(self, session: "Session", answers: dict, text: str, choices: Choices | None = None):
        """The value of a typed answer; ValueError with a hint when it is not acceptable."""
        if self.choices is not None:
            options = (choices or self.choices(session, answers)).options
            if self.many:
                return pick_many(text, [o.value for o in options])
            if text.isdigit() and 1 <= int(text) <= len(options):
                return options[int(text) - 1].value
            for option in options:  # the value itself is fine too: "breastmnist", a run name
                if text.lower() == option.value.lower():
                    return option.value
            raise ValueError(f"choose a number from 1 to {len(options)}")
        try:
            return self.parse(text) if self.parse else text
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise ValueError(str(exc)) from None


def yes_no(text: str) -> bool:
    answer = text.strip().lower()
    if answer in ("y", "yes"):
        return True
    if answer in ("n", "no"):
        return False
    raise ValueError("answer y or n")


def pick_many(text: str, values: Sequence[str]) -> tuple[str, ...]:
    """Several answers from a numbered list: numbers, ranges and values, in list order.

    Parameters
    ----------
    text : what was typed: numbers (1-based), ranges ``a-b`` and values, separated
        by spaces or commas
    values : the list's values, in the order shown

    Returns
    -------
    The chosen values, each once, in the order of ``values``. ValueError (with a
    hint) when a part is neither a number in range nor a value.

    >>> pick_many("3, 1-2 1", ["a", "b", "c", "d"])
    ('a', 'b', 'c')
    >>> pick_many("d", ["a", "b", "c", "d"])
    ('d',)
    """
    hint = f"choose numbers from 1 to {len(values)}, e.g. 2, or 1 3, or 2-4"
    chosen: set[int] = set()
    by_value = {v.lower(): i for i, v in enumerate(values)}
    for part in text.replace(",", " ").split():
        bounds = re.fullmatch(r"(\d+)-(\d+)", part)
        if part.isdigit() and 1 <= int(part) <= len(values):
            chosen.add(int(part) - 1)
        elif bounds and 1 <= int(bounds[1]) <= int(bounds[2]) <= len(values):
            chosen.update(range(int(bounds[1]) - 1, int(bounds[2])))
        elif part.lower() in by_value:
            chosen.add(by_value[part.lower()])
        else:
            raise ValueError(f"{part!r}? {hint}")
    if not chosen:
        raise ValueError(hint)
    return tuple(values[i] for i in sorted(chosen))


def optional_positive_int(text: str) -> int | None:
    if text.strip().lower() in ("all", "none", "-"):
        return None
    return cli.positive_int(text)


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


# --------------------------------------------------------------------------- answer lists

def dataset_choices(session: "Session", answers: dict) -> Choices:
    from medscope import data

    options = []
    for flag in data.dataset_flags():
        info = data.dataset_info(flag, 28)
        on_disk = "  on disk" if session.local_sizes(flag) else ""
        options.append(Option(flag, f"{flag:<18} {'3D' if info.is_3d else '2D'}  {info.task}, "
                                    f"{info.num_classes} {'labels' if 'multi-label' in info.task else 'classes'}"
                                    f"{on_disk}"))
    return Choices(options)


def default_dataset(session: "Session", answers: dict) -> str:
    from medscope import data

    flags = data.dataset_flags()
    on_disk = [f for f in flags if session.local_sizes(f)]
    return "breastmnist" if "breastmnist" in flags else (on_disk or flags)[0]


def size_choices(session: "Session", answers: dict) -> Choices:
    from medscope import data

    flag = answers["dataset"]
    sizes = data.SIZES_3D if data.dataset_info(flag, 28).is_3d else data.SIZES_2D
    local = session.local_sizes(flag)
    return Choices([Option(str(s), f"{s} px{'  on disk' if s in local else ''}") for s in sizes])


def model_choices(session: "Session", answers: dict) -> Choices:
    described = {"resnet18": "ResNet-18 (2D) / 3D ResNet-18 (r3d_18)", "cnn": "small plain CNN (fast)"}
    return Choices([Option(o.value, f"{o.value:<9} {described.get(o.value, '')}".rstrip())
                    for o in _train_choices(session, "--model").options])


def train_recipe(session: "Session", answers: dict):
    """The recipe train.py would use for the answers so far (medscope/train/recipes.py)."""
    from medscope import data
    from medscope.train import recipes

    size = int(answers.get("size") or 28)
    n_train = data.dataset_info(answers["dataset"], size).n_samples["train"]
    subset = answers.get("subset") or session.presets.get("subset")
    if subset:
        n_train = min(n_train, subset)
    return recipes.default_recipe(answers["dataset"], answers.get("model") or "resnet18", size, n_train,
                                  answers.get("recipe") or "auto")


def recipe_choices(session: "Session", answers: dict) -> Choices:
    """auto and general always; tuned where a tuned recipe applies to the answers so far."""
    applies = train_recipe(session, dict(answers, recipe="auto")).source == "tuned"
    described = {"auto": "tuned where measured, the general rule otherwise",
                 "tuned": "the recipe measured on this dataset", "general": "the rule for any dataset"}
    return Choices([Option(v, f"{v:<8} {described[v]}") for v in ("auto", "tuned", "general")
                    if v != "tuned" or applies])


def _recipe_value(field: str):
    """train.py's default for ``field`` as its recipe gives it (lr: AdamW's, the menu's optimizer)."""

    def default(session: "Session", answers: dict):
        recipe = train_recipe(session, answers)
        return recipe.learning_rate("adamw") if field == "lr" else getattr(recipe, field)

    return default


default_epochs = _recipe_value("epochs")


# --------------------------------------------------------------------------- runs, as the menu lists them

# A `running` run whose process cannot be checked (another machine, or run.json without a pid) is
# taken as stalled, and offered for resuming, after this long with nothing written to its folder,
# or three of its longest epochs when that is longer.
STALL_AFTER_S = 3600.0
RESUMABLE = ("interrupted", "failed", "killed", "stalled")


@dataclass(frozen=True)
class RunRecord:
    """A run folder with its run.json and the state the menu shows for it.

    ``state`` is run.json's status with what can be checked from here:
    ``killed`` when its process on this machine is gone (:meth:`Run.status`),
    ``stalled`` for a ``running`` run no process is known to hold that has
    written nothing for a long time (:func:`stall_after`), and ``unreadable``
    when run.json cannot be read.
    """

    run: Run
    info: dict
    state: str

    @classmethod
    def read(cls, run: Run, now: float | None = None) -> "RunRecord":
        try:
            info = run.info()
        except cli.UsageError:
            return cls(run, {}, "unreadable")
        return cls(run, info, run_state(run, info, now))

    @property
    def completed(self) -> bool:
        return self.state == runs_lib.FINISHED

    @property
    def resumable(self) -> bool:
        """Stopped before its last epoch, and ``last.pt`` is there to go on from."""
        return self.state in RESUMABLE and self.run.layout.last_pt.is_file()

    @property
    def marked_name(self) -> str:
        """The name, with ``[state]`` after it unless the run completed."""
        return self.run.name if self.completed else f"{self.run.name} [{self.state}]"

    def config(self, key: str) -> str:
        return str((self.info.get("config") or {}).get(key, "?"))

    def metric(self, key: str) -> str:
        value = (self.info.get("metrics") or {}).get(key)
        return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"

    def epochs(self) -> str:
        """Epochs completed, and ``done/planned`` when the run did not complete."""
        done = self.info.get("epochs_completed")
        planned = (self.info.get("config") or {}).get("epochs")
        if self.completed:
            return str(done if done is not None else planned if planned is not None else "?")
        return f"{done if done is not None else 0}/{planned if planned is not None else '?'}"

    def date(self, key: str = "created") -> str:
        return str(self.info.get(key) or "")[:16].replace("T", " ")


def run_state(run: Run, info: dict, now: float | None = None) -> str:
    """The state of a run as the menu shows it (see :class:`RunRecord`)."""
    status = run.status(info)  # 'killed' once its process on this machine is gone
    if status != "running" or (info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int)):
        return status  # not running, or running with a live process on this machine
    quiet = (time.time() if now is None else now) - last_activity(run)
    return "stalled" if quiet > stall_after(run) else "running"


def last_activity(run: Run) -> float:
    """When training last wrote to the run folder (seconds since the epoch; mtimes)."""
    layout = run.layout
    stamps = [p.stat().st_mtime for p in (layout.run_json, layout.last_pt, layout.history_csv) if p.exists()]
    return max(stamps, default=0.0)


def stall_after(run: Run) -> float:
    """Seconds of silence after which a ``running`` run counts as stalled: the larger of
    :data:`STALL_AFTER_S` and three times its longest epoch in history.csv."""
    longest = 0.0
    try:
        with open(run.layout.history_csv, newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    longest = max(longest, float(row.get("epoch_seconds") or 0))
                except ValueError:
                    continue
    except OSError:
        pass
    return max(STALL_AFTER_S, 3 * longest)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> tuple[str, list[str]]:
    """Aligned columns: the header line and one line per row (columns in ``right`` right-aligned).

    >>> table(("a", "bb"), [("xyz", "1"), ("q", "22")], right=(1,))
    ('a    bb', ['xyz   1', 'q    22'])
    """
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return line(header), [line(r) for r in rows]


def _no_runs(session: "Session") -> Back:
    return Back(f"no runs in {session.results_dir}/ yet; train one first (item 1)")


RUN_COLUMNS = ("run", "dataset", "size", "model", "epochs", "test AUC", "date")


def describe_run(record: RunRecord) -> tuple[str, ...]:
    """The columns of the run list of items 2-6, from run.json (unreadable fields show as '?')."""
    return (record.marked_name, record.config("dataset"), record.config("size"), record.config("model"),
            record.epochs(), record.metric("test_auc"), record.date("finished") or record.date("created"))


def run_choices(session: "Session", answers: dict) -> Choices:
    records = session.run_records()
    if not records:
        raise _no_runs(session)
    header, lines = table(RUN_COLUMNS, [describe_run(r) for r in records], right=(2, 4, 5))
    return Choices([Option(r.run.name, line) for r, line in zip(records, lines)], header=header)


def run_or_all_choices(session: "Session", answers: dict) -> Choices:
    listed = run_choices(session, answers)
    return Choices(listed.options + [Option(ALL_RUNS, "all runs, one combined file")], listed.header)


RESUME_COLUMNS = ("run", "dataset", "size", "model", "status", "epochs", "last saved")


def resumable_choices(session: "Session", answers: dict) -> Choices:
    """Runs that stopped before their last epoch and kept ``last.pt``, newest first."""
    records = [r for r in session.run_records() if r.resumable]
    if not records:
        raise Back(f"no run to resume in {session.results_dir}/ (none stopped before its last epoch "
                   "with a last.pt to go on from)")
    rows = [(r.run.name, r.config("dataset"), r.config("size"), r.config("model"), r.state, r.epochs(),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(r.run.layout.last_pt.stat().st_mtime)))
            for r in records]
    header, lines = table(RESUME_COLUMNS, rows, right=(2, 5))
    return Choices([Option(r.run.name, line) for r, line in zip(records, lines)], header=header)


LIST_COLUMNS = ("run", "dataset", "size", "model", "status", "epochs", "test AUC", "test ACC", "created")


def run_table_choices(session: "Session", answers: dict) -> Choices:
    """Every run with its status and test metrics (the list of item 9)."""
    records = session.run_records()
    if not records:
        raise _no_runs(session)
    rows = [(r.run.name, r.config("dataset"), r.config("size"), r.config("model"), r.state, r.epochs(),
             r.metric("test_auc"), r.metric("test_acc"), r.date("created")) for r in records]
    header, lines = table(LIST_COLUMNS, rows, right=(2, 5, 6, 7))
    return Choices([Option(r.run.name, line) for r, line in zip(records, lines)], header=header)


def subcommand_choices(session: "Session", answers: dict) -> Choices:
    """The subcommands of the item's script, read from its own parser."""
    parser = session.parser(session.current_script)
    for action in parser._actions:  # argparse keeps subcommands in one _SubParsersAction
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return Choices([Option(name, f"{name:<12} {helps.get(name, '')}".rstrip()) for name in action.choices])
    raise Back(f"{session.current_script}.py has no subcommands")


# --------------------------------------------------------------------------- the table

def _advanced(answers: dict) -> bool:
    return bool(answers.get("advanced"))


def _train_default(dest: str, preset: str | None = None):
    """train.py's own default for ``dest`` (a run_tool flag such as --seed may preset it)."""

    def default(session: "Session", answers: dict):
        if preset is not None and session.presets.get(preset) is not None:
            return session.presets[preset]
        return session.parser("train").get_default(dest)

    return default


def _newest(session: "Session", answers: dict) -> str:
    """The newest completed run (the newest of all when none completed)."""
    records = session.run_records()
    if not records:
        raise _no_runs(session)
    return next((r for r in records if r.completed), records[0]).run.name


RUN = Question("run", "run", choices=run_choices, default=_newest, flag="--run")
RESUME = Question("run", "run to resume", choices=resumable_choices,
                  default=lambda s, a: resumable_choices(s, a).options[0].value, flag="--resume")
DELETE = Question("runs", "delete which runs? (numbers such as 2, 1 3 or 2-4)", choices=run_table_choices,
                  many=True, default=(), show=lambda v: ", ".join(v) if v else "none")
def seed_list(text: str) -> tuple[int, ...]:
    """Whitespace-separated integers, each once (``"0 1 2"``); empty for one run.

    >>> seed_list("0 1 2"), seed_list("")
    ((0, 1, 2), ())
    """
    try:
        seeds = tuple(int(part) for part in text.split())
    except ValueError:
        raise ValueError(f"expected whole numbers such as 0 1 2, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError("each seed once")
    return seeds


def _same_dataset_runs(session: "Session", answers: dict) -> tuple[str, ...]:
    """Default runs to compare: the completed runs of the newest completed run's dataset and size."""
    done = [r for r in session.run_records() if r.state == "completed"]
    if not done:
        return ()
    key = (done[0].config("dataset"), done[0].config("size"))
    return tuple(r.run.name for r in done if (r.config("dataset"), r.config("size")) == key)


COMPARE = Question("runs", "compare which runs? (numbers such as 1 2 or 1-3)", choices=run_table_choices,
                   many=True, default=_same_dataset_runs, to_argv=list,
                   show=lambda v: ", ".join(v) if v else "none")
RUN_OR_ALL = Question("run", "run", choices=run_or_all_choices, default=_newest,
                      to_argv=lambda v: [ALL_RUNS] if v == ALL_RUNS else ["--run", v])

TRAIN_QUESTIONS = (
    Question("dataset", "dataset", choices=dataset_choices, default=default_dataset, flag="--dataset"),
    Question("size", "image size", choices=size_choices, default="28", flag="--size"),
    Question("model", "model", choices=model_choices, default="resnet18", flag="--model"),
    Question("epochs", "epochs", parse=cli.positive_int, default=default_epochs, flag="--epochs"),
    Question("advanced", "advanced options? (y/n)", parse=yes_no, default=False, show=lambda v: "y" if v else "n"),
    Question("recipe", "recipe for the settings below", choices=recipe_choices, default="auto", flag="--recipe",
             always=False, when=_advanced),
    Question("batch_size", "batch size", parse=cli.positive_int, default=_recipe_value("batch_size"),
             flag="--batch-size", always=False, implied=_recipe_value("batch_size"), when=_advanced),
    Question("lr", "peak learning rate", parse=cli.non_negative_float, default=_recipe_value("lr"), flag="--lr",
             always=False, implied=_recipe_value("lr"), when=_advanced, show=lambda v: f"{v:g}"),
    Question("augment", "augmentation", choices=lambda s, a: _train_choices(s, "--augment"),
             default=_recipe_value("augment"), flag="--augment", always=False, implied=_recipe_value("augment"),
             when=_advanced),
    Question("dropout", "dropout before the classifier", parse=cli.probability, default=_train_default("dropout"),
             flag="--dropout", always=False, when=_advanced),
    Question("select", "model to keep (best: highest validation AUC, last: final epoch)",
             choices=lambda s, a: _train_choices(s, "--select"), default=_recipe_value("select"), flag="--select",
             always=False, implied=_recipe_value("select"), when=_advanced),
    Question("patience", "early-stop patience in epochs (0: never)", parse=cli.non_negative_int,
             default=_train_default("patience"), flag="--patience", always=False, when=_advanced),
    Question("subset", "train on a random subset of N images", parse=optional_positive_int,
             default=_train_default("subset", preset="subset"), flag="--subset", always=False, when=_advanced,
             show=lambda v: "all" if v is None else str(v)),
    Question("seed", "random seed", parse=integer, default=_train_default("seed", preset="seed"), flag="--seed",
             always=False, when=_advanced),
    Question("seeds", "several seeds, one run each and a study of them (e.g. 0 1 2; Enter: one run)",
             parse=seed_list, default=(), when=_advanced, show=lambda v: " ".join(map(str, v)) if v else "one run",
             to_argv=lambda v: ["--seeds", *map(str, v)] if v else []),
)


def _train_choices(session: "Session", flag: str) -> Choices:
    """The choices train.py's parser allows for ``flag``."""
    return Choices([Option(str(c), str(c)) for c in session.parser("train")._option_string_actions[flag].choices])


@dataclass(frozen=True)
class Item:
    """One line of the main menu."""

    key: str
    title: str
    script: str | None  # module beside run_tool.py; None for the pipeline and for menu actions
    questions: tuple[Question, ...] = ()
    in_pipeline: bool = False  # run by the full pipeline after training, in this order
    action: Callable[["Session", dict], None] | None = None  # done by the menu itself with the answers
    prepare: Callable[["Session"], None] | None = None  # run before anything is listed or asked
    not_passed: tuple[str, ...] = ()  # session-wide flags the script accepts but would ignore here


ITEMS = (
    Item("1", "Train a model", "train", TRAIN_QUESTIONS),
    Item("2", "Export TensorBoard scalars to CSV", "export_scalars", (RUN_OR_ALL,), in_pipeline=True),
    Item("3", "Analyze inference outputs", "analyze_inference", (RUN,), in_pipeline=True),
    Item("4", "Analyze weight complexity (LMC & Sample Entropy)", "analyze_complexity", (RUN,), in_pipeline=True),
    Item("5", "Explain: Grad-CAM, saliency, MC-dropout uncertainty, robustness, calibration", "explain",
         (RUN, Question("subcommand", "what to explain", choices=subcommand_choices,
                        default=lambda s, a: subcommand_choices(s, a).options[0].value, positional=True,
                        each=True)),
         in_pipeline=True),
    Item("6", "Export to ONNX and quantize to INT8", "quantize", (RUN,), in_pipeline=True),
    Item("7", "Write the report page and model card", "report", (RUN,), in_pipeline=True),
    Item("8", "Full pipeline (train, then every analysis)", None, TRAIN_QUESTIONS),
    # a resumed run goes on with its own seed (from last.pt), so run_tool's --seed is not passed
    Item("9", "Resume an interrupted run", "train", (RESUME,), not_passed=("--seed",)),
    Item("10", "List or delete runs", None, (DELETE,), prepare=lambda session: session.finish_deletions(),
         action=lambda session, answers: session.delete(answers["runs"])),
    Item("11", "Compare runs (intervals, paired tests, the published baselines)", "compare", (COMPARE,)),
)
PIPELINE_KEY = "8"
TRAIN_KEY = "1"

# run_tool.py --pipeline --quick: every step on a few images with few resamples, to see a setup work end
# to end in minutes (its numbers are not for reading). Keyed as the pipeline table names its steps.
QUICK_ARGS = {
    "train": ("--bootstrap", "200"),
    "analyze_inference": ("--tsne-points", "200"),
    "explain gradcam": ("--n", "4", "--steps", "5", "--max-figures", "4"),
    "explain saliency": ("--n", "4", "--steps", "5", "--max-figures", "4", "--samples", "5"),
    "explain uncertainty": ("--passes", "5", "--bootstrap", "200"),
    "explain robustness": ("--perturbations", "gaussian_noise", "--severities", "1", "--n-saliency", "8",
                           "--n-examples", "1", "--bootstrap", "200"),
    "explain calibrate": ("--bootstrap", "200"),
    "quantize": ("--calib", "16", "--runs", "5", "--warmup", "1", "--throughput-runs", "1", "--batch-size", "8",
                 "--test-subset", "32"),
    "compare": ("--bootstrap", "200"),
    "report": ("--bootstrap", "200"),
}


# --------------------------------------------------------------------------- running

@dataclass
class StepResult:
    name: str
    status: str  # "ok", "failed (exit N)", "interrupted", "not available yet"
    code: int | None = None
    seconds: float | None = None
    produced: str = ""


@dataclass
class Session:
    """One menu session: where results go, what the scripts get, how to read answers."""

    results_dir: str = "results"
    common: dict = field(default_factory=dict)  # flag -> value passed to every script that accepts it
    presets: dict = field(default_factory=dict)  # defaults preset by run_tool flags (subset, seed)
    script_dir: Path = SCRIPT_DIR
    input_fn: Callable[[str], str] = input
    echo: bool = False  # repeat answers read from a pipe, so the transcript reads like a terminal
    out: Callable[..., None] = print
    current_script: str | None = None
    quick: bool = False  # the pipeline adds QUICK_ARGS to each step
    _modules: dict = field(default_factory=dict)
    _parsers: dict = field(default_factory=dict)

    # ---- scripts
    def script_path(self, script: str) -> Path:
        return Path(self.script_dir) / f"{script}.py"

    def available(self, script: str | None) -> bool:
        return script is None or self.script_path(script).is_file()

    def load(self, script: str):
        """The script's module (imported once). Raises Back when it cannot be loaded.

        PyTorch is imported first (every script needs it, and it takes seconds), with
        a spinner. Ctrl-C is held back until the import is done: an import stopped
        half way leaves NumPy or PyTorch half initialised, and every later script of
        the session would fail to load. The module is kept, then Ctrl-C takes effect.
        """
        if script in self._modules:
            return self._modules[script]
        path = self.script_path(script).resolve()
        try:
            with Waiting(f"loading {path.name}") as waiting, \
                    _ctrl_c_held(lambda: waiting.say(f"loading {path.name}; Ctrl-C: back to the menu once loaded")):
                for name in PRELOADED:
                    if importlib.util.find_spec(name) is not None:
                        importlib.import_module(name)
                spec = importlib.util.find_spec(script)
                if spec is not None and spec.origin and Path(spec.origin).resolve() == path:
                    module = importlib.import_module(script)
                else:  # a script folder off sys.path: load it under a private name, shadowing nothing
                    spec = importlib.util.spec_from_file_location(f"_medscope_menu_{script}", path)
                    module = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(module)
                if not callable(getattr(module, "main", None)):
                    raise AttributeError("it has no main(argv)")
                self._modules[script] = module
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken script must not end the menu
            raise Back(f"error: could not load {path.name}: {exc.__class__.__name__}: {exc}") from None
        return module

    def parser(self, script: str) -> argparse.ArgumentParser:
        if script not in self._parsers:
            self._parsers[script] = self.load(script).get_args_parser()
        return self._parsers[script]

    def local_sizes(self, flag: str) -> set[int]:
        """Sizes of ``flag`` whose .npz file is in the data folder."""
        return set(medmnist_files(self.data_folder()[0]).get(flag, ()))

    def data_folder(self) -> tuple[str, str]:
        """The data folder the scripts will read, and where that choice comes from."""
        if self.common.get("--data-dir"):
            return str(self.common["--data-dir"]), "--data-dir"
        if os.environ.get("MEDMNIST_DIR"):
            return os.environ["MEDMNIST_DIR"], "$MEDMNIST_DIR"
        return str(runs_lib.DEFAULT_DATA_DIR), "default"

    def data_line(self) -> str:
        """The header line naming the data folder and the MedMNIST files in it (names only, no MD5)."""
        folder, source = self.data_folder()
        where = f"data: {folder} ({source})"
        if not Path(folder).expanduser().is_dir():
            return f"{where}: no such folder yet; train.py downloads each dataset there on first use"
        found = medmnist_files(folder)
        if not found:
            return f"{where}: no MedMNIST files yet; train.py downloads each dataset there on first use"
        count = sum(len(sizes) for sizes in found.values())
        named = [f"{flag} {'+'.join(map(str, sizes))}" for flag, sizes in found.items()]
        more = f", +{len(named) - 4} more" if len(named) > 4 else ""
        return f"{where}: {count} MedMNIST file{'s' if count != 1 else ''} ({', '.join(named[:4])}{more})"

    @property
    def runs_dir(self) -> str:
        return str(self.common.get("--runs-dir") or "runs")

    def run_records(self) -> list[RunRecord]:
        """The runs of the results folder, newest first, with their states (hidden folders left out)."""
        now = time.time()
        return [RunRecord.read(run, now) for run in list_runs(self.results_dir) if not run.name.startswith(".")]

    # ---- questions
    def ask(self, question: Question, answers: dict):
        """Ask until the answer is acceptable. EOFError and KeyboardInterrupt propagate."""
        choices = question.choices(self, answers) if question.choices else None
        default = question.default_for(self, answers)
        shown = question.display(default)
        if choices is not None:
            self.out(f"{question.prompt}:")
            if choices.header:
                self.out(f"      {choices.header}")
            for number, option in enumerate(choices.options, 1):
                self.out(f"  {number:>2}. {option.label}")
            values = [o.value for o in choices.options]
            if not question.many:
                shown = str(values.index(default) + 1) if default in values else ""
        prompt = f"{question.prompt} [{shown}]: " if shown else f"{question.prompt}: "
        while True:
            text = self.input_fn(prompt)
            if self.echo:
                self.out(text)
            text = text.strip()
            if not text:
                if shown or default is not None:
                    return default
                self.out("  please type an answer")
                continue
            try:
                return question.accept(self, answers, text, choices)
            except ValueError as exc:
                self.out(f"  {exc}" + (f" (Enter: {shown})" if shown else ""))

    def answers_for(self, item: Item, *, interactive: bool, presets: dict | None = None) -> dict:
        """Walk the item's question table: ask, or take presets and defaults without asking."""
        presets = presets or {}
        answers: dict = {}
        self.current_script = item.script or "train"
        for question in item.questions:
            if question.when is not None and not question.when(answers):
                answers[question.key] = question.default_for(self, answers)
            elif question.key in presets and presets[question.key] is not None:
                given = presets[question.key]
                try:
                    answers[question.key] = question.accept(self, answers, str(given))
                except ValueError as exc:
                    hint = str(exc)
                    if question.choices is not None:
                        hint = "choose one of: " + ", ".join(o.value for o in question.choices(self, answers).options)
                    raise cli.UsageError(f"--{question.key.replace('_', '-')} {given}: {hint}") from None
            elif interactive:
                answers[question.key] = self.ask(question, answers)
            else:
                answers[question.key] = question.default_for(self, answers)
        return answers

    def argv_for(self, script: str, questions: Sequence[Question], answers: dict,
                 not_passed: Sequence[str] = ()) -> list[str]:
        """The script's argv for these answers, plus the common flags it accepts (but ``not_passed``)."""
        parser = self.parser(script)
        positional, flags = [], []
        for question in questions:
            value = answers.get(question.key)
            if question.to_argv is not None:
                flags += question.to_argv(value)
            elif question.positional:
                positional.append(str(value))
            elif question.flag and value is not None:
                own = (question.implied(self, answers) if question.implied is not None
                       else _option_default(parser, question.flag))
                if not question.always and value == own:
                    continue
                flags += [question.flag, str(value)]
        accepted = _option_strings(parser, positional[:1])
        asked = {q.flag for q in questions if q.flag}  # an answer beats the session-wide flag
        for flag, value in self.common.items():
            if value is not None and flag in accepted and flag not in asked and flag not in not_passed:
                flags += [flag, str(value)]
        return positional + flags

    def command_line(self, script: str, argv: Sequence[str]) -> str:
        path = self.script_path(script)
        rel = os.path.relpath(path, Path.cwd())
        shown = rel if not rel.startswith("..") else str(path)
        return shlex.join(["python", shown, *argv])

    def call(self, script: str, argv: list[str], name: str | None = None, run: str | None = None) -> StepResult:
        """Run ``script.main(argv)`` through cli.run, timing it and noting what it wrote."""
        module = self.load(script)
        self.out(f"$ {self.command_line(script, argv)}", flush=True)
        before = snapshot(self.results_dir)
        started = time.perf_counter()
        with Waiting(f"starting {script}.py"):  # until the script prints its first line
            code = cli.run(module.main, argv)
        seconds = time.perf_counter() - started
        sys.stdout.flush()
        sys.stderr.flush()
        produced = describe_changes(self.results_dir, before, snapshot(self.results_dir), run)
        status = "ok" if code == 0 else ("interrupted" if code == cli.EXIT_INTERRUPTED else f"failed (exit {code})")
        return StepResult(name or script, status, code, seconds, produced)

    # ---- items
    def run_item(self, item: Item) -> None:
        """Ask the item's questions, then run it. Back / EOF / Ctrl-C lead back to the menu."""
        if not self.available(item.script):
            self.out(f"  {item.title}: {item.script}.py is not available yet")
            return
        if item.prepare is not None:
            item.prepare(self)
        if item.questions and item.questions[0].key in ("run", "runs"):
            item.questions[0].choices(self, {})  # no run to choose from: say so (Back) before loading anything
        if item.action is not None:
            item.action(self, self.answers_for(item, interactive=True))
            return
        self.load(item.script or "train")  # a broken script is reported before any question
        if item.key == PIPELINE_KEY:
            answers = self.answers_for(item, interactive=True)
            self.pipeline(answers)
            return
        answers = self.answers_for(item, interactive=True)
        argv = self.argv_for(item.script, item.questions, answers, item.not_passed)
        run = answers.get("run") if answers.get("run") != ALL_RUNS else None
        result = self.call(item.script, argv, run=run)
        if result.code == 0:
            where = f" in {_shown_path(Path(self.results_dir) / run)}/" if run else ""
            self.out(f"done in {result.seconds:.1f}s; results{where}: {result.produced or 'nothing new'}")
        else:
            self.out(f"{item.script}.py {result.status}; back to the menu")

    def pipeline(self, train_answers: dict) -> int:
        """Train, export scalars, run every analysis that exists on each new run; when training made
        several runs, compare them (compare.py, and report.py's comparison page); print a table.
        Returns an exit code."""
        train_item = next(i for i in ITEMS if i.key == TRAIN_KEY)
        steps = [i for i in ITEMS if i.in_pipeline]
        names_before = {r.name for r in list_runs(self.results_dir)}
        studies_before = set(self.study_names())
        several = len(train_answers.get("seeds") or ()) > 1
        self.out("pipeline: train, then " + ", ".join(
            f"{i.script}{'' if self.available(i.script) else ' (not available yet)'}" for i in steps)
            + (" on each run, then compare them" if several else ""), flush=True)
        train_argv = self.argv_for("train", train_item.questions, train_answers) + self.quick_args("train")
        result = self.call("train", train_argv, name="train")
        results = [result]
        new_runs = sorted((r for r in list_runs(self.results_dir) if r.name not in names_before),
                          key=lambda r: r.name)
        if result.code != 0 or not new_runs:
            self.print_table(results, None)
            return result.code or cli.EXIT_FAILURE
        for run in new_runs:
            for item in steps:
                if not self.available(item.script):
                    results.append(StepResult(item.script, "not available yet"))
                    continue
                try:
                    for answers in list(self.pipeline_answers(item, run.name)):
                        label = " ".join([item.script] + [str(answers[q.key]) for q in item.questions if q.positional])
                        argv = self.argv_for(item.script, item.questions, answers) + self.quick_args(label)
                        if len(new_runs) > 1:
                            label = f"{run.name}: {label}"
                        step = self.call(item.script, argv, name=label, run=run.name)
                        results.append(step)
                        if step.code == cli.EXIT_INTERRUPTED:
                            self.print_table(results, new_runs)
                            return cli.EXIT_INTERRUPTED
                except Back as exc:  # the script would not load, or has nothing to offer
                    self.out(str(exc))
                    results.append(StepResult(item.script, "failed (could not load)", cli.EXIT_FAILURE))
        if len(new_runs) > 1:
            studies = sorted(set(self.study_names()) - studies_before)
            # a study names its runs and adds mean ± sd across seeds; plain runs are compared by name
            chosen = ["--study", *studies] if studies else [r.name for r in new_runs]
            for script in ("compare", "report"):
                if not self.available(script):
                    results.append(StepResult(script, "not available yet"))
                    continue
                step = self.call(script, chosen + self.argv_for(script, (), {}) + self.quick_args(script),
                                 name=f"{script} {' '.join(chosen)}")
                results.append(step)
                if step.code == cli.EXIT_INTERRUPTED:
                    break
        self.print_table(results, new_runs)
        if any(r.code == cli.EXIT_INTERRUPTED for r in results):
            return cli.EXIT_INTERRUPTED
        return cli.EXIT_OK if all(r.code == 0 or r.code is None for r in results) else cli.EXIT_FAILURE

    def quick_args(self, step: str) -> list[str]:
        """With --quick, the flags that make this pipeline step small (QUICK_ARGS); else none."""
        return list(QUICK_ARGS.get(step, ())) if self.quick else []

    def study_names(self) -> list[str]:
        """The studies in the results folder (train.py --seeds writes one per dataset x model)."""
        folder = ResultsLayout(self.results_dir).studies_dir
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def pipeline_answers(self, item: Item, run_name: str):
        """The answers for one item in the pipeline: the new run, every option of an ``each`` question."""
        self.current_script = item.script
        fixed = {"run": run_name}
        each = [q for q in item.questions if q.each]
        option_lists = [[o.value for o in q.choices(self, fixed).options] for q in each]
        for combo in itertools.product(*option_lists):
            presets = dict(fixed, **{q.key: v for q, v in zip(each, combo)})
            yield self.answers_for(item, interactive=False, presets=presets)

    def print_table(self, results: list[StepResult], runs: Sequence[Run] | None) -> None:
        self.out("")
        where = ""
        if runs and len(runs) == 1:
            where = f" for {runs[0].name} ({_shown_path(runs[0].path)})"
        elif runs:
            where = f" for {len(runs)} runs in {_shown_path(Path(self.results_dir))}/"
        self.out(f"pipeline summary{where}:")
        rows = [("step", "status", "time", "produced")]
        for r in results:
            rows.append((r.name, r.status, f"{r.seconds:.1f}s" if r.seconds is not None else "", r.produced))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            self.out("  " + "  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                                       row[3]]).rstrip())

    def finish_deletions(self) -> None:
        """Remove what an interrupted deletion left (hidden folders), saying so."""
        for note in finish_interrupted_deletions(self.results_dir, self.runs_dir):
            self.out(f"  {note}")

    def delete(self, names: Sequence[str]) -> None:
        """Item 9 after the list: confirm, then remove each run and its TensorBoard folder."""
        if not names:
            self.out("  nothing deleted")
            return
        plans = []
        for name in names:
            try:
                plans.append(plan_deletion(Path(self.results_dir) / name, self.results_dir, self.runs_dir))
            except cli.UsageError as exc:
                self.out(f"  {exc}")
        if not plans:
            return
        self.out("this deletes, for good:")
        for plan in plans:
            for folder, (files, size) in zip(plan.folders, plan.sizes):
                self.out(f"  {_shown_path(folder)}/  ({_count(files, 'file')}, {human_bytes(size)})")
            for note in plan.kept:
                self.out(f"  {note}")
        if len(plans) == 1:
            expected, prompt = plans[0].run.name, "type the run's name to confirm (Enter keeps it)"
        else:
            expected, prompt = f"delete {len(plans)}", f"type 'delete {len(plans)}' to confirm (Enter keeps them)"
        typed = self.ask(Question("confirm", prompt, default=""), {})
        if typed != expected:
            self.out("  nothing deleted" + (f" ({typed!r} is not {expected!r})" if typed else ""))
            return
        for plan in plans:
            self.out(f"  {remove_run(plan)}")

    # ---- the loop
    def main_menu(self) -> str:
        lines = [TITLE, self.data_line()]
        for item in ITEMS:
            lines.append(f" {item.key}. {item.title}{'' if self.available(item.script) else ' (not available yet)'}")
        lines.append(" 0. Quit")
        return "\n".join(lines)

    def loop(self) -> int:
        keys = [i.key for i in ITEMS]
        while True:
            self.out(self.main_menu())
            while True:
                try:
                    text = self.input_fn(f"choose [0-{keys[-1]}]: ")
                except EOFError:
                    self.out("")
                    return cli.EXIT_OK
                except KeyboardInterrupt:
                    self.out("\nbye")
                    return cli.EXIT_OK
                if self.echo:
                    self.out(text)
                text = text.strip()
                if text in ("0", "q", "quit", "exit"):
                    return cli.EXIT_OK
                item = next((i for i in ITEMS if i.key == text), None)
                if item is not None:
                    break
                self.out(f"  type a number from 0 to {keys[-1]}")
            try:
                self.run_item(item)
            except Back as exc:
                if str(exc):
                    self.out(f"  {exc}")
            except EOFError:
                self.out("\n(end of input: back to the menu)")
            except KeyboardInterrupt:
                self.out("\n(cancelled: back to the menu)")
            except cli.UsageError as exc:  # a bad preset: say it, keep the session
                self.out(f"error: {exc}")
            self.out("")


# --------------------------------------------------------------------------- the data folder

MEDMNIST_FILE = re.compile(r"([a-z]+mnist(?:3d)?)(?:_(\d+))?\.npz")


def medmnist_files(folder: str | os.PathLike) -> dict[str, list[int]]:
    """The MedMNIST files in ``folder``, by name only: ``flag -> sizes`` (sorted).

    ``<flag>.npz`` is the 28 px file and ``<flag>_<size>.npz`` another size
    (DESIGN.md); nothing is opened or checked, so this is cheap enough for the
    menu's header. A missing folder has none.
    """
    folder = Path(folder).expanduser()
    found: dict[str, set[int]] = {}
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]
    except OSError:
        return {}
    for name in names:
        match = MEDMNIST_FILE.fullmatch(name)
        if match:
            found.setdefault(match[1], set()).add(int(match[2] or 28))
    return {flag: sorted(found[flag]) for flag in sorted(found)}


# --------------------------------------------------------------------------- deleting runs

TRASH_PREFIX = ".deleting-"  # a folder being removed; hidden, so no list shows it
SET_ASIDE_JSON = ".run.json.deleting"  # run.json of a run being removed: the folder is no run any more
TENSORBOARD_FILE = re.compile(r".*tfevents.*|.*\.pbtxt")  # what SummaryWriter and its plugins write


@dataclass(frozen=True)
class Deletion:
    """What deleting one run removes: its folder first, then its TensorBoard folders."""

    run: Run
    folders: tuple[Path, ...]
    sizes: tuple[tuple[int, int], ...]  # (files, bytes) of each folder
    kept: tuple[str, ...] = ()  # TensorBoard folders left in place, and why


def plan_deletion(folder: str | os.PathLike, results_dir: str | os.PathLike,
                  runs_dir: str | os.PathLike) -> Deletion:
    """What deleting the run folder ``folder`` would remove; nothing is touched.

    Refused (UsageError): anything but a real folder directly in ``results_dir``
    holding a run.json, and a run that is still training. Its TensorBoard folder
    is ``<runs_dir>/<run>`` and, when run.json records another one, that one too
    if it lies inside ``runs_dir`` and bears the run's name; either is removed
    only if it holds nothing but TensorBoard files.
    """
    folder = Path(folder)
    results = Path(results_dir).resolve()
    if (folder.is_symlink() or not folder.is_dir() or folder.name.startswith(".")
            or folder.resolve().parent != results):
        raise cli.UsageError(f"{folder} is not a run folder of {results_dir}/; nothing deleted")
    if not (folder / RUN_JSON).is_file():
        raise cli.UsageError(f"{folder} is not a run folder (no {RUN_JSON}); nothing deleted")
    run = Run(folder)
    record = RunRecord.read(run)
    if record.state == "running":
        pid = record.info.get("pid")
        raise cli.UsageError(f"{run.name} is still training{f' (process {pid})' if pid else ''}; "
                             "stop it first, then delete it")
    candidates = [run.layout.tensorboard_dir(runs_dir)]
    recorded = record.info.get("tensorboard_dir")
    if isinstance(recorded, str) and recorded:
        candidates.append(Path(recorded).expanduser())
    runs_root = Path(runs_dir).resolve()
    folders, kept, seen = [folder], [], {folder.resolve()}
    for tb in candidates:
        if not tb.is_dir() or tb.resolve() in seen:
            continue
        seen.add(tb.resolve())
        if tb.is_symlink() or runs_root not in tb.resolve().parents or tb.name != run.name:
            kept.append(f"{_shown_path(tb)}/ left in place: not {run.name}'s folder inside {runs_dir}/")
            continue
        stranger = _not_tensorboard(tb)
        if stranger is not None:
            kept.append(f"{_shown_path(tb)}/ left in place: it holds {stranger}, which TensorBoard does not write")
            continue
        folders.append(tb)
    return Deletion(run, tuple(folders), tuple(folder_size(f) for f in folders), tuple(kept))


def remove_run(plan: Deletion) -> str:
    """Remove what ``plan`` names; returns one line saying what went.

    The run leaves every run list in one atomic step (its run.json is renamed
    away), then each folder is renamed to a hidden ``.deleting-<name>`` beside
    it and removed. Ctrl-C is held back during the renames; an interruption
    later (or a crash) leaves only hidden folders, which
    :func:`finish_interrupted_deletions` removes.
    """
    moved, failed = [], []
    with _ctrl_c_held():
        os.replace(plan.folders[0] / RUN_JSON, plan.folders[0] / SET_ASIDE_JSON)
        for folder, size in zip(plan.folders, plan.sizes):
            target = _trash_name(folder)
            try:
                os.rename(folder, target)
            except OSError as exc:  # a TensorBoard folder on a read-only disk, say: the run is gone anyway
                failed.append(f"{_shown_path(folder)}/ ({exc.strerror or exc})")
                continue
            moved.append((folder, size, target))
    for _folder, _size, target in moved:
        shutil.rmtree(target, ignore_errors=True)
    files, size = sum(m[1][0] for m in moved), sum(m[1][1] for m in moved)
    gone = " and ".join(f"{_shown_path(folder)}/" for folder, _size, _target in moved)
    line = f"removed {gone} ({_count(files, 'file')}, {human_bytes(size)})"
    return line + (f"; could not remove {', '.join(failed)}" if failed else "")


def finish_interrupted_deletions(results_dir: str | os.PathLike, runs_dir: str | os.PathLike) -> list[str]:
    """Finish deletions that an interruption or a crash left half done; returns a note per run."""
    results, tb_root = Path(results_dir), Path(runs_dir)
    done = {}
    for parent in (results, tb_root):
        for trash in parent.glob(f"{TRASH_PREFIX}*") if parent.is_dir() else ():
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash, ignore_errors=True)
                done[re.sub(r"\.\d+$", "", trash.name[len(TRASH_PREFIX):])] = True
    for folder in results.iterdir() if results.is_dir() else ():
        if (not folder.is_symlink() and folder.is_dir() and (folder / SET_ASIDE_JSON).is_file()
                and not (folder / RUN_JSON).exists()):
            target = _trash_name(folder)
            os.rename(folder, target)
            shutil.rmtree(target, ignore_errors=True)
            done[folder.name] = True
    for name in done:  # its TensorBoard folder, when the interruption came before it was renamed
        tb = tb_root / name
        if (tb.is_dir() and not tb.is_symlink() and not (results / name).exists()
                and _not_tensorboard(tb) is None):
            target = _trash_name(tb)
            os.rename(tb, target)
            shutil.rmtree(target, ignore_errors=True)
    return [f"finished deleting {name} (an earlier deletion was interrupted)" for name in sorted(done)]


def _trash_name(folder: Path) -> Path:
    """``.deleting-<name>`` beside ``folder`` (``.deleting-<name>.2`` and on if that is taken)."""
    for n in itertools.count(1):
        target = folder.with_name(f"{TRASH_PREFIX}{folder.name}{f'.{n}' if n > 1 else ''}")
        if not os.path.lexists(target):
            return target
    raise AssertionError("unreachable")


def _not_tensorboard(folder: Path) -> str | None:
    """The first file under ``folder`` that TensorBoard does not write (relative), or None."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if not TENSORBOARD_FILE.fullmatch(name):
                return (Path(root) / name).relative_to(folder).as_posix()
    return None


def folder_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``; links count as themselves and are not followed."""
    files = size = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
            files += 1
    return files, size


def human_bytes(n: int) -> str:
    """A size in decimal units.

    >>> human_bytes(999), human_bytes(108_184), human_bytes(5_123_456)
    ('999 B', '108 kB', '5.1 MB')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n} B"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@contextlib.contextmanager
def _ctrl_c_held(on_press: Callable[[], None] | None = None):
    """Hold Ctrl-C back while the block runs; it takes effect (KeyboardInterrupt) right after.

    For work that must not stop half way (renames, imports). ``on_press`` is
    called when Ctrl-C is pressed, to say so. Main thread only; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = []

    def hold(*_):
        pressed.append(True)
        if on_press is not None:
            on_press()

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


# --------------------------------------------------------------------------- waiting, visibly

class Waiting:
    """A spinner on the terminal while nothing is printed; erased before anything else is.

    ``with Waiting("loading train.py"):`` draws ``| loading train.py ...`` after
    ``delay`` seconds without output and turns it every ``interval`` seconds.
    While it is active, sys.stdout and sys.stderr are wrapped so that the first
    write (a print, a warning, a progress bar) erases it for good, so it never
    mixes with what the work prints. When ``stream`` is not a terminal (a pipe,
    a log, a test's capture) it does nothing at all. Output written to the file
    descriptors directly, bypassing sys.stdout (C extensions, child processes),
    is not seen; the line is still erased with a carriage return.
    """

    FRAMES = "|/-\\"

    def __init__(self, message: str, *, delay: float = 1.0, interval: float = 0.125, stream=None):
        self.message, self.delay, self.interval = message, delay, interval
        self.stream = stream
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._width = 0  # columns of spinner on screen now
        self._thread: threading.Thread | None = None
        self._saved: tuple | None = None

    def __enter__(self) -> "Waiting":
        self.stream = self.stream or sys.stdout
        try:
            on_terminal = self.stream.isatty()
        except (AttributeError, ValueError):
            on_terminal = False
        if not on_terminal:
            self._stopped.set()
            return self
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _StopsWaiting(sys.stdout, self), _StopsWaiting(sys.stderr, self)
        self._thread = threading.Thread(target=self._spin, name="medscope-waiting", daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        if self._stopped.wait(self.delay):
            return
        for frame in itertools.cycle(self.FRAMES):
            with self._lock:
                if self._stopped.is_set():
                    return
                text = f"{frame} {self.message} ..."
                self.stream.write("\r" + text.ljust(self._width))  # a shorter message covers a longer one
                self.stream.flush()
                self._width = max(self._width, len(text))
            if self._stopped.wait(self.interval):
                return

    def say(self, message: str) -> None:
        """Change the words after the spinner (from the next turn on)."""
        self.message = message

    def stop(self) -> None:
        """Erase the spinner (if drawn) and never draw it again."""
        if self._stopped.is_set() and not self._width:
            return
        with self._lock:
            self._stopped.set()
            if self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
                self._width = 0

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._saved is not None:
            for name, saved in zip(("stdout", "stderr"), self._saved):
                current = getattr(sys, name)
                if isinstance(current, _StopsWaiting) and current._waiting is self:
                    setattr(sys, name, saved)
        if self._thread is not None:
            self._thread.join(timeout=1.0)


class _StopsWaiting:
    """A stream whose first write stops a :class:`Waiting` spinner; everything else is the stream's."""

    def __init__(self, stream, waiting: Waiting):
        self._stream, self._waiting = stream, waiting

    def write(self, text):
        self._waiting.stop()
        return self._stream.write(text)

    def writelines(self, lines):
        self._waiting.stop()
        return self._stream.writelines(lines)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _option_strings(parser: argparse.ArgumentParser, subcommand: Sequence[str]) -> set[str]:
    """Option strings ``parser`` accepts (inside ``subcommand``'s parser when it has subcommands)."""
    accepted = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and subcommand and subcommand[0] in action.choices:
            accepted |= set(action.choices[subcommand[0]]._option_string_actions)
    return accepted


def _option_default(parser: argparse.ArgumentParser, flag: str):
    action = parser._option_string_actions.get(flag)
    return None if action is None else action.default


# --------------------------------------------------------------------------- what a step wrote

def snapshot(folder: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """``relative path -> (mtime_ns, size)`` of every file under ``folder``."""
    folder = Path(folder)
    found = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):  # atomic.py's temporary files
                continue
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            found[path.relative_to(folder).as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return found


def describe_changes(results_dir, before: dict, after: dict, run: str | None = None) -> str:
    """What a step wrote, briefly: file names, or ``folder/ (N files)``; run.json is implied.

    A new run folder is one entry; inside the run ``run`` names are relative to
    its folder; anything else is shown from ``results_dir``.

    >>> describe_changes("results", {"r/run.json": (1, 1)},
    ...                  {"r/run.json": (2, 1), "r/a.csv": (2, 5), "r/inference/x.png": (2, 9),
    ...                   "r/inference/y.csv": (2, 3), "s/run.json": (2, 1), "all.csv": (2, 4)}, "r")
    'results/all.csv, a.csv, inference/ (2 files), results/s/ (1 file)'
    """
    old_folders = {p.split("/")[0] for p in before if "/" in p}
    groups: dict[str, int] = {}
    for rel in sorted(p for p, stamp in after.items() if before.get(p) != stamp):
        parts = rel.split("/")
        if len(parts) > 1 and parts[0] not in old_folders:  # a run folder that did not exist before
            key = _shown_path(Path(results_dir) / parts[0]) + "/"
        elif parts[-1] == "run.json":  # updated by every script; listing it says nothing
            continue
        elif run and parts[0] == run:
            key = parts[1] + ("/" if len(parts) > 2 else "")
        else:
            key = _shown_path(Path(results_dir, *parts[:2])) + ("/" if len(parts) > 2 else "")
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(f"{key} ({count} file{'s' if count > 1 else ''})" if key.endswith("/") else key
                     for key, count in groups.items())


def _shown_path(path: Path) -> str:
    rel = os.path.relpath(path, Path.cwd())
    return rel if not rel.startswith("..") else str(path)


# --------------------------------------------------------------------------- entry point

def main(args: argparse.Namespace, *, script_dir: Path = SCRIPT_DIR, input_fn=input) -> int:
    """What ``run_tool.py`` does with its parsed arguments."""
    defaults_parser = argparse.ArgumentParser(add_help=False)
    cli.add_common_args(defaults_parser, run_arg=None)
    defaults = vars(defaults_parser.parse_args([]))
    # only flags the user changed travel on: the printed command lines stay short and exact
    common = {f"--{dest.replace('_', '-')}": getattr(args, dest) for dest in defaults
              if getattr(args, dest) != defaults[dest]}
    session = Session(results_dir=args.results_dir, common=common,
                      presets={"subset": args.subset, "seed": common.get("--seed")},
                      script_dir=Path(script_dir), input_fn=input_fn, quick=getattr(args, "quick", False))
    pipeline_only = {"dataset": args.dataset, "size": args.size, "model": args.model, "epochs": args.epochs,
                     "seeds": " ".join(map(str, args.seeds)) if args.seeds else None}
    if not args.pipeline:
        given = [f"--{k}" for k, v in pipeline_only.items() if v is not None]
        if given:
            raise cli.UsageError(f"{', '.join(given)}: only with --pipeline (the menu asks for these)")
        if session.quick:
            raise cli.UsageError("--quick: only with --pipeline (it makes the pipeline's steps small)")
        if input_fn is input:
            session.echo = not sys.stdin.isatty()
            if sys.stdin.isatty():
                try:
                    import readline  # noqa: F401 - line editing for input()
                except ImportError:
                    pass
        return session.loop()
    if not args.dataset:
        raise cli.UsageError("--pipeline needs --dataset, e.g. --pipeline --dataset breastmnist")
    if not session.available("train"):
        raise cli.UsageError(f"train.py not found in {script_dir}")
    train_item = next(i for i in ITEMS if i.key == TRAIN_KEY)
    if args.seeds:
        pipeline_only["advanced"] = "y"  # seeds is an advanced option; the others keep their defaults
    try:
        answers = session.answers_for(train_item, interactive=False, presets=pipeline_only)
    except Back as exc:
        raise cli.UsageError(str(exc)) from None
    return session.pipeline(answers)
