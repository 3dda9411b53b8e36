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
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from medscope.app import cli
from medscope.runs import Run, list_runs

TITLE = "medscope — MedMNIST model lab"
SCRIPT_DIR = Path(__file__).resolve().parents[1]
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
    """The recipe train.py would use for the answers so far (medscope/recipes.py)."""
    from medscope import data
    from medscope.train import recipes

    size = int(answers.get("size") or 28)
    n_train = data.dataset_info(answers["dataset"], size).n_samples["train"]
    subset = answers.get("subset") or session.presets.get("subset")
    if subset:
        n_train = min(n_train, subset)
    return recipes.default_recipe(answers["dataset"], answers.get("model") or "resnet18", size, n_train)


def _recipe_value(field: str):
    """train.py's default for ``field`` as its recipe gives it (lr: AdamW's, the menu's optimizer)."""

    def default(session: "Session", answers: dict):
        recipe = train_recipe(session, answers)
        return recipe.learning_rate("adamw") if field == "lr" else getattr(recipe, field)

    return default


default_epochs = _recipe_value("epochs")


def run_choices(session: "Session", answers: dict) -> Choices:
    runs = list_runs(session.results_dir)
    if not runs:
        raise Back(f"no runs in {session.results_dir}/ yet; train one first (item 1)")
    rows = [describe_run(run) for run in runs]
    widths = [max(len(r[i]) for r in rows + [RUN_COLUMNS]) for i in range(len(RUN_COLUMNS))]

    def line(cells):
        return "  ".join(c.rjust(w) if i in (2, 4, 5) else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return Choices([Option(run.name, line(row)) for run, row in zip(runs, rows)], header=line(RUN_COLUMNS))


def run_or_all_choices(session: "Session", answers: dict) -> Choices:
    listed = run_choices(session, answers)
    return Choices(listed.options + [Option(ALL_RUNS, "all runs, one combined file")], listed.header)


RUN_COLUMNS = ("run", "dataset", "size", "model", "epochs", "test AUC", "date")


def describe_run(run: Run) -> tuple[str, ...]:
    """The run list's columns, read from run.json (unreadable fields show as '?')."""
    try:
        info = run.info()
    except cli.UsageError:
        info = {}
    cfg = info.get("config") or {}
    auc = (info.get("metrics") or {}).get("test_auc")
    status = info.get("status", "?")
    date = str(info.get("finished") or info.get("created") or "")[:16].replace("T", " ")
    return (run.name, str(cfg.get("dataset", "?")), str(cfg.get("size", "?")), str(cfg.get("model", "?")),
            str(info.get("epochs_completed", cfg.get("epochs", "?"))),
            f"{auc:.3f}" if isinstance(auc, (int, float)) else "—",
            date + ("" if status == "completed" else f" ({status})"))


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
    return run_choices(session, answers).options[0].value


RUN = Question("run", "run", choices=run_choices, default=_newest, flag="--run")
RUN_OR_ALL = Question("run", "run", choices=run_or_all_choices, default=_newest,
                      to_argv=lambda v: [ALL_RUNS] if v == ALL_RUNS else ["--run", v])

TRAIN_QUESTIONS = (
    Question("dataset", "dataset", choices=dataset_choices, default=default_dataset, flag="--dataset"),
    Question("size", "image size", choices=size_choices, default="28", flag="--size"),
    Question("model", "model", choices=model_choices, default="resnet18", flag="--model"),
    Question("epochs", "epochs", parse=cli.positive_int, default=default_epochs, flag="--epochs"),
    Question("advanced", "advanced options? (y/n)", parse=yes_no, default=False, show=lambda v: "y" if v else "n"),
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
)


def _train_choices(session: "Session", flag: str) -> Choices:
    """The choices train.py's parser allows for ``flag``."""
    return Choices([Option(str(c), str(c)) for c in session.parser("train")._option_string_actions[flag].choices])


@dataclass(frozen=True)
class Item:
    """One line of the main menu."""

    key: str
    title: str
    script: str | None  # module beside run_tool.py; None for the pipeline
    questions: tuple[Question, ...] = ()
    in_pipeline: bool = False  # run by the full pipeline after training, in this order


ITEMS = (
    Item("1", "Train a model", "train", TRAIN_QUESTIONS),
    Item("2", "Export TensorBoard scalars to CSV", "export_scalars", (RUN_OR_ALL,), in_pipeline=True),
    Item("3", "Analyze inference outputs", "analyze_inference", (RUN,), in_pipeline=True),
    Item("4", "Analyze weight complexity (LMC & Sample Entropy)", "analyze_complexity", (RUN,), in_pipeline=True),
    Item("5", "Explain: Grad-CAM, saliency, MC-dropout uncertainty, robustness", "explain",
         (RUN, Question("subcommand", "what to explain", choices=subcommand_choices,
                        default=lambda s, a: subcommand_choices(s, a).options[0].value, positional=True,
                        each=True)),
         in_pipeline=True),
    Item("6", "Export to ONNX and quantize to INT8", "quantize", (RUN,), in_pipeline=True),
    Item("7", "Write the report page and model card", "report", (RUN,), in_pipeline=True),
    Item("8", "Full pipeline (train, then every analysis)", None, TRAIN_QUESTIONS),
)
PIPELINE_KEY = "8"
TRAIN_KEY = "1"


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
    _modules: dict = field(default_factory=dict)
    _parsers: dict = field(default_factory=dict)

    # ---- scripts
    def script_path(self, script: str) -> Path:
        return Path(self.script_dir) / f"{script}.py"

    def available(self, script: str | None) -> bool:
        return script is None or self.script_path(script).is_file()

    def load(self, script: str):
        """The script's module (imported once). Raises Back when it cannot be loaded."""
        if script in self._modules:
            return self._modules[script]
        path = self.script_path(script).resolve()
        try:
            spec = importlib.util.find_spec(script)
            if spec is not None and spec.origin and Path(spec.origin).resolve() == path:
                module = importlib.import_module(script)
            else:  # a script folder off sys.path: load it under a private name, shadowing nothing
                spec = importlib.util.spec_from_file_location(f"_medscope_menu_{script}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            if not callable(getattr(module, "main", None)):
                raise AttributeError("it has no main(argv)")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken script must not end the menu
            raise Back(f"error: could not load {path.name}: {exc.__class__.__name__}: {exc}") from None
        self._modules[script] = module
        return module

    def parser(self, script: str) -> argparse.ArgumentParser:
        if script not in self._parsers:
            self._parsers[script] = self.load(script).get_args_parser()
        return self._parsers[script]

    def local_sizes(self, flag: str) -> set[int]:
        """Sizes of ``flag`` whose .npz file is in the data folder."""
        folder = Path(self.common.get("--data-dir") or cli.default_data_dir()).expanduser()
        sizes = set()
        if (folder / f"{flag}.npz").is_file():
            sizes.add(28)
        for path in folder.glob(f"{flag}_*.npz") if folder.is_dir() else ():
            tail = path.stem[len(flag) + 1:]
            if tail.isdigit():
                sizes.add(int(tail))
        return sizes

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

    def argv_for(self, script: str, questions: Sequence[Question], answers: dict) -> list[str]:
        """The script's argv for these answers, plus the common flags it accepts."""
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
            if value is not None and flag in accepted and flag not in asked:
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
        self.load(item.script or "train")  # a broken script is reported before any question
        if item.key == PIPELINE_KEY:
            answers = self.answers_for(item, interactive=True)
            self.pipeline(answers)
            return
        answers = self.answers_for(item, interactive=True)
        argv = self.argv_for(item.script, item.questions, answers)
        run = answers.get("run") if answers.get("run") != ALL_RUNS else None
        result = self.call(item.script, argv, run=run)
        if result.code == 0:
            where = f" in {_shown_path(Path(self.results_dir) / run)}/" if run else ""
            self.out(f"done in {result.seconds:.1f}s; results{where}: {result.produced or 'nothing new'}")
        else:
            self.out(f"{item.script}.py {result.status}; back to the menu")

    def pipeline(self, train_answers: dict) -> int:
        """Train, export scalars, run every analysis that exists; print a table. Returns an exit code."""
        train_item = next(i for i in ITEMS if i.key == TRAIN_KEY)
        steps = [i for i in ITEMS if i.in_pipeline]
        names_before = {r.name for r in list_runs(self.results_dir)}
        self.out("pipeline: train, then " + ", ".join(
            f"{i.script}{'' if self.available(i.script) else ' (not available yet)'}" for i in steps), flush=True)
        result = self.call("train", self.argv_for("train", train_item.questions, train_answers), name="train")
        results = [result]
        new_runs = [r for r in list_runs(self.results_dir) if r.name not in names_before]
        if result.code != 0 or not new_runs:
            self.print_table(results, None)
            return result.code or cli.EXIT_FAILURE
        run = new_runs[0]
        for item in steps:
            if not self.available(item.script):
                results.append(StepResult(item.script, "not available yet"))
                continue
            try:
                for answers in list(self.pipeline_answers(item, run.name)):
                    label = " ".join([item.script] + [str(answers[q.key]) for q in item.questions if q.positional])
                    step = self.call(item.script, self.argv_for(item.script, item.questions, answers), name=label,
                                     run=run.name)
                    results.append(step)
                    if step.code == cli.EXIT_INTERRUPTED:
                        self.print_table(results, run)
                        return cli.EXIT_INTERRUPTED
            except Back as exc:  # the script would not load, or has nothing to offer
                self.out(str(exc))
                results.append(StepResult(item.script, "failed (could not load)", cli.EXIT_FAILURE))
        self.print_table(results, run)
        return cli.EXIT_OK if all(r.code == 0 or r.code is None for r in results) else cli.EXIT_FAILURE

    def pipeline_answers(self, item: Item, run_name: str):
        """The answers for one item in the pipeline: the new run, every option of an ``each`` question."""
        self.current_script = item.script
        fixed = {"run": run_name}
        each = [q for q in item.questions if q.each]
        option_lists = [[o.value for o in q.choices(self, fixed).options] for q in each]
        for combo in itertools.product(*option_lists):
            presets = dict(fixed, **{q.key: v for q, v in zip(each, combo)})
            yield self.answers_for(item, interactive=False, presets=presets)

    def print_table(self, results: list[StepResult], run: Run | None) -> None:
        self.out("")
        self.out(f"pipeline summary{f' for {run.name} ({_shown_path(run.path)})' if run else ''}:")
        rows = [("step", "status", "time", "produced")]
        for r in results:
            rows.append((r.name, r.status, f"{r.seconds:.1f}s" if r.seconds is not None else "", r.produced))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            self.out("  " + "  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                                       row[3]]).rstrip())

    # ---- the loop
    def main_menu(self) -> str:
        lines = [TITLE]
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
                      script_dir=Path(script_dir), input_fn=input_fn)
    pipeline_only = {"dataset": args.dataset, "size": args.size, "model": args.model, "epochs": args.epochs}
    if not args.pipeline:
        given = [f"--{k}" for k, v in pipeline_only.items() if v is not None]
        if given:
            raise cli.UsageError(f"{', '.join(given)}: only with --pipeline (the menu asks for these)")
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
    try:
        answers = session.answers_for(train_item, interactive=False, presets=pipeline_only)
    except Back as exc:
        raise cli.UsageError(str(exc)) from None
    return session.pipeline(answers)
