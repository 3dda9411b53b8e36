"""medscope.app.menu: the question table, answers -> argv, the menu loop and the pipeline.

These tests run the menu in-process against a folder of stand-in scripts (a
train.py that copies a real run instead of training, analysis scripts that
record the argv they get), so every path through the menu is checked in
seconds. tests/test_run_tool.py drives the real scripts through a pipe and a
pseudo-terminal.
"""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

import run_tool
from medscope import data
from medscope.app import menu
from medscope.train import recipes
from tests.conftest import ROOT

FAKE_TRAIN = '''
"""Stand-in for train.py: the real parser, but it copies a finished run instead of training."""
import json, shutil
from pathlib import Path

from train import get_args_parser  # the real questions' defaults and choices

LOG, TEMPLATE, EVENTS = {log!r}, {template!r}, {events!r}


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with open(LOG, "a") as fh:
        fh.write(json.dumps(["train", list(argv)]) + "\\n")
    results = Path(args.results_dir)
    seq = 1 + sum(1 for p in results.iterdir()) if results.is_dir() else 1
    name = f"{{seq:04d}}_{{args.dataset[0]}}{{args.size}}_{{args.model[0]}}"
    shutil.copytree(TEMPLATE, results / name)
    shutil.copytree(EVENTS, Path(args.runs_dir) / name)
    print(f"results: {{results / name}}")
    return 0
'''

FAKE_ANALYSIS = '''
"""Stand-in analysis script: records its argv and writes one file into the run."""
import json

from medscope import atomic, runs
from medscope.app import cli

LOG = {log!r}


def get_args_parser():
    parser = cli.ArgumentParser(prog="{name}.py")
    cli.add_common_args(parser, run_arg="one")
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with open(LOG, "a") as fh:
        fh.write(json.dumps(["{name}", list(argv)]) + "\\n")
    run = runs.resolve_run(args.results_dir, args.run)
    atomic.write_text(run.path / "{name}" / "out.txt", "ok")
    return 0
'''

FAKE_EXPLAIN = '''
"""Stand-in explain.py with subcommands, each taking the common flags."""
import json

from medscope import atomic, runs
from medscope.app import cli

LOG = {log!r}


def get_args_parser():
    parser = cli.ArgumentParser(prog="explain.py")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("gradcam", "Grad-CAM heat maps"), ("saliency", "gradient saliency maps")):
        cli.add_common_args(sub.add_parser(name, help=text), run_arg="one")
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    with open(LOG, "a") as fh:
        fh.write(json.dumps(["explain", list(argv)]) + "\\n")
    run = runs.resolve_run(args.results_dir, args.run)
    atomic.write_text(run.path / args.command / "map.txt", "ok")
    return 0
'''

FAKE_QUANTIZE = '''
"""Stand-in quantize.py: takes only --run and --results-dir, and refuses the run."""
import json

from medscope.app import cli

LOG = {log!r}


def get_args_parser():
    parser = cli.ArgumentParser(prog="quantize.py")
    parser.add_argument("--run")
    parser.add_argument("--results-dir", default="results")
    return parser


def main(argv=None):
    get_args_parser().parse_args(argv)
    with open(LOG, "a") as fh:
        fh.write(json.dumps(["quantize", list(argv)]) + "\\n")
    raise cli.UsageError("this stand-in never quantizes")
'''


@pytest.fixture
def lab(tmp_path, run_2d):
    """A folder of stand-in scripts (no analyze_complexity.py) and an empty results/runs pair."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    log = tmp_path / "calls.jsonl"
    events = run_2d.parent.parent / "runs" / run_2d.name
    (scripts / "train.py").write_text(FAKE_TRAIN.format(log=str(log), template=str(run_2d), events=str(events)))
    (scripts / "export_scalars.py").symlink_to(ROOT / "export_scalars.py")  # the real one
    (scripts / "analyze_inference.py").write_text(FAKE_ANALYSIS.format(log=str(log), name="analyze_inference"))
    (scripts / "explain.py").write_text(FAKE_EXPLAIN.format(log=str(log)))
    (scripts / "quantize.py").write_text(FAKE_QUANTIZE.format(log=str(log)))
    (scripts / "report.py").symlink_to(ROOT / "report.py")  # the real one

    class Lab:
        root = tmp_path
        script_dir = scripts
        results = tmp_path / "results"
        runs = tmp_path / "runs"

        @staticmethod
        def calls():
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

        @staticmethod
        def add_run(name):
            shutil.copytree(run_2d, tmp_path / "results" / name)
            shutil.copytree(events, tmp_path / "runs" / name)
            return tmp_path / "results" / name

    return Lab


class Console:
    """Scripted answers for ``input()``; records prompts and output lines; end of answers = end of input."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.prompts: list[str] = []
        self.lines: list[str] = []

    def input(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def print(self, *parts, **_):
        self.lines.extend(" ".join(str(p) for p in parts).split("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def session(lab, console, **kwargs) -> menu.Session:
    common = {"--results-dir": str(lab.results), "--runs-dir": str(lab.runs), **kwargs.pop("common", {})}
    return menu.Session(results_dir=str(lab.results), common=common, script_dir=lab.script_dir,
                        input_fn=console.input, out=console.print, **kwargs)


def test_main_menu_lists_every_item_and_marks_missing_scripts(lab):
    console = Console(["4", "0"])
    assert session(lab, console).loop() == 0
    assert console.lines[:10] == [
        "medscope — MedMNIST model lab",
        " 1. Train a model",
        " 2. Export TensorBoard scalars to CSV",
        " 3. Analyze inference outputs",
        " 4. Analyze weight complexity (LMC & Sample Entropy) (not available yet)",
        " 5. Explain: Grad-CAM, saliency, MC-dropout uncertainty, robustness",
        " 6. Export to ONNX and quantize to INT8",
        " 7. Write the report page and model card",
        " 8. Full pipeline (train, then every analysis)",
        " 0. Quit"]
    assert "analyze_complexity.py is not available yet" in console.text
    assert console.prompts == ["choose [0-8]: ", "choose [0-8]: "]  # back at the menu, then quit


def test_a_script_that_fails_to_import_is_one_line_and_the_menu_goes_on(lab):
    (lab.script_dir / "analyze_complexity.py").write_text("raise RuntimeError('half written')\n")
    lab.add_run("0001_breastmnist28_resnet18")
    console = Console(["4", "0"])
    assert session(lab, console).loop() == 0
    assert "error: could not load analyze_complexity.py: RuntimeError: half written" in console.text
    assert "Traceback" not in console.text


def test_train_reasks_bad_answers_and_passes_only_what_differs_from_train_defaults(lab):
    breast = str(data.dataset_flags().index("breastmnist") + 1)
    console = Console(["9", "1",
                       "99", "lungmnist", "breastmnist",  # dataset: out of range, unknown, by name
                       "5", "",  # size: out of range, then the default
                       "2",  # model: cnn
                       "0", "many", "3",  # epochs
                       "maybe", "y",  # advanced options
                       "", "", "3", "1.5", "0.1", "", "", "64", "",  # batch, lr, augment, dropout, select,
                       # patience, subset, seed
                       "0"])
    assert session(lab, console).loop() == 0
    assert console.prompts[2:8] == [f"dataset [{breast}]: "] * 3 + ["image size [1]: "] * 2 + ["model [1]: "]
    epochs = recipes.default_recipe("breastmnist", "cnn").epochs
    assert f"epochs [{epochs}]: " in console.prompts and "advanced options? (y/n) [n]: " in console.prompts
    assert "train on a random subset of N images [all]: " in console.prompts
    for hint in ("  type a number from 0 to 8", "  choose a number from 1 to 18 (Enter: %s)" % breast,
                 "  choose a number from 1 to 4 (Enter: 1)", f"  expected a positive integer, got 0 (Enter: {epochs})",
                 f"  expected a positive integer, got 'many' (Enter: {epochs})", "  answer y or n (Enter: n)",
                 "  expected a number in [0, 1), got 1.5 (Enter: 0.2)"):
        assert hint in console.lines
    (call,) = lab.calls()
    assert call == ["train", ["--dataset", "breastmnist", "--size", "28", "--model", "cnn", "--epochs", "3",
                              "--augment", "strong", "--dropout", "0.1", "--subset", "64",
                              "--results-dir", str(lab.results), "--runs-dir", str(lab.runs)]]
    assert f"$ {session(lab, Console([])).command_line('train', call[1])}" in console.lines
    assert "done in " in console.text and "results/0001_breastmnist28_cnn/ (" in console.text


def test_run_tool_presets_become_defaults_and_an_answer_beats_them(lab):
    console = Console(["1", "breastmnist", "", "", "", "", "0"])
    presets = {"subset": 32, "seed": 5}
    assert session(lab, console, presets=presets, common={"--seed": "5"}).loop() == 0
    (call,) = lab.calls()
    epochs = str(recipes.general_epochs(32))  # train.py's default for the 32 images --subset leaves
    assert call[1][:8] == ["--dataset", "breastmnist", "--size", "28", "--model", "resnet18", "--epochs", epochs]
    assert call[1][8:12] == ["--subset", "32", "--seed", "5"]
    console = Console(["1", "breastmnist", "", "", "", "y", "", "", "", "", "", "", "", "0", "0"])
    assert session(lab, console, presets=presets, common={"--seed": "5"}).loop() == 0
    assert "--seed" not in lab.calls()[1][1]  # seed 0 asked and answered: train's default, and no --seed 5


def test_run_list_is_newest_first_with_its_columns(lab):
    lab.add_run("0001_breastmnist28_resnet18")
    newest = lab.add_run("0002_breastmnist28_resnet18")
    info = json.loads((newest / "run.json").read_text())
    console = Console(["3", "x", "", "0"])
    assert session(lab, console).loop() == 0
    header = next(line for line in console.lines if "test AUC" in line).split()
    assert header == ["run", "dataset", "size", "model", "epochs", "test", "AUC", "date"]
    first = next(line for line in console.lines if line.startswith("   1. ")).split()
    assert first[1:6] == ["0002_breastmnist28_resnet18", "breastmnist", "28", "resnet18", "2"]
    assert first[6] == f"{info['metrics']['test_auc']:.3f}" and first[7] == info["finished"][:10]
    assert any(line.startswith("   2. 0001_breastmnist28_resnet18") for line in console.lines)
    assert "  choose a number from 1 to 2 (Enter: 1)" in console.lines
    assert lab.calls()[0][1][:2] == ["--run", "0002_breastmnist28_resnet18"]


def test_items_needing_a_run_say_so_when_there_is_none(lab):
    console = Console(["3", "0"])
    assert session(lab, console).loop() == 0
    assert f"  no runs in {lab.results}/ yet; train one first (item 1)" in console.lines
    assert lab.calls() == []


def test_export_item_offers_all_runs(lab):
    lab.add_run("0001_breastmnist28_resnet18")
    lab.add_run("0002_breastmnist28_resnet18")
    console = Console(["2", "3", "0"])
    assert session(lab, console).loop() == 0
    assert "   3. all runs, one combined file" in console.lines
    assert (lab.results / "tensorboard_scalars_all.csv").is_file()
    assert any(line.startswith("$ ") and line.endswith(f"export_scalars.py --all --results-dir {lab.results} "
                                                       f"--runs-dir {lab.runs}") for line in console.lines)


def test_explain_asks_for_a_subcommand_listed_by_its_own_parser(lab):
    run = lab.add_run("0001_breastmnist28_resnet18")
    console = Console(["5", "", "2", "0"])
    assert session(lab, console).loop() == 0
    assert "   1. gradcam      Grad-CAM heat maps" in console.lines
    assert "   2. saliency     gradient saliency maps" in console.lines
    (call,) = lab.calls()
    assert call == ["explain", ["saliency", "--run", run.name, "--results-dir", str(lab.results),
                                "--runs-dir", str(lab.runs)]]
    assert "done in " in console.text and "saliency/ (1 file)" in console.text


def test_ctrl_c_in_a_question_goes_back_and_at_the_menu_says_bye(lab):
    console = Console(["1", KeyboardInterrupt(), KeyboardInterrupt()])
    assert session(lab, console).loop() == 0
    assert "(cancelled: back to the menu)" in console.lines and console.lines[-1] == "bye"
    assert console.text.count(" 0. Quit") == 2 and lab.calls() == []


def test_end_of_input_in_a_question_goes_back_and_at_the_menu_ends(lab):
    console = Console(["1", "breastmnist"])
    assert session(lab, console).loop() == 0
    assert "(end of input: back to the menu)" in console.lines
    assert console.prompts[-1] == "choose [0-8]: " and lab.calls() == []


def test_pipeline_trains_then_runs_every_available_script_on_the_new_run(lab, capsys):
    lab.add_run("0001_breastmnist28_resnet18")  # an older run the pipeline must not touch
    args = run_tool.get_args_parser().parse_args(
        ["--pipeline", "--dataset", "breastmnist", "--model", "cnn", "--epochs", "1", "--subset", "16",
         "--results-dir", str(lab.results), "--runs-dir", str(lab.runs), "--device", "cpu"])
    assert menu.main(args, script_dir=lab.script_dir) == 1  # the stand-in quantize.py refuses
    new = "0002_breastmnist28_cnn"
    common = ["--results-dir", str(lab.results), "--runs-dir", str(lab.runs), "--device", "cpu"]
    calls = lab.calls()
    assert calls == [
        ["train", ["--dataset", "breastmnist", "--size", "28", "--model", "cnn", "--epochs", "1", "--subset", "16",
                   *common]],
        ["analyze_inference", ["--run", new, *common]],
        ["explain", ["gradcam", "--run", new, *common]],
        ["explain", ["saliency", "--run", new, *common]],
        ["quantize", ["--run", new, "--results-dir", str(lab.results)]],  # only the flags it accepts
    ]
    assert (lab.results / new / "tensorboard_scalars.csv").is_file()  # the real export_scalars.py ran
    assert not (lab.results / "0001_breastmnist28_resnet18" / "tensorboard_scalars.csv").exists()
    out = capsys.readouterr().out
    table = out[out.index("pipeline summary"):].splitlines()
    assert table[0] == f"pipeline summary for {new} ({menu._shown_path(lab.results / new)}):"
    rows = {line.split("  ")[1].strip(): line for line in table[2:] if line.strip()}
    assert rows.keys() == {"train", "export_scalars", "analyze_inference", "analyze_complexity", "explain gradcam",
                           "explain saliency", "quantize", "report"}
    assert " ok " in rows["train"] and f"{new}/ (" in rows["train"]
    assert rows["export_scalars"].endswith("tensorboard_scalars.csv, tensorboard_scalars_wide.csv")
    assert rows["analyze_inference"].endswith("analyze_inference/ (1 file)")
    assert rows["analyze_complexity"].endswith("not available yet")
    assert rows["explain saliency"].endswith("saliency/ (1 file)")
    assert "failed (exit 2)" in rows["quantize"]
    assert " ok " in rows["report"] and rows["report"].endswith("model_card.json, model_card.md, report.html")
    assert list(rows)[-1] == "report"  # the last step: it shows what the others wrote
    assert f"$ {menu.Session(script_dir=lab.script_dir).command_line('explain', calls[3][1])}" in out


def test_pipeline_item_asks_the_train_questions_then_runs_everything(lab, capsys):
    console = Console(["8", "breastmnist", "", "cnn", "1", "", "0"])
    assert session(lab, console).loop() == 0
    assert [call[0] for call in lab.calls()] == ["train", "analyze_inference", "explain", "explain", "quantize"]
    assert "pipeline summary for 0001_breastmnist28_cnn" in capsys.readouterr().out + console.text


def test_pipeline_stops_after_a_failed_training(lab, capsys):
    args = run_tool.get_args_parser().parse_args(["--pipeline", "--dataset", "breastmnist", "--size", "64",
                                                  "--results-dir", str(lab.results), "--runs-dir", str(lab.runs)])
    (lab.script_dir / "train.py").write_text(textwrap.dedent('''
        from train import get_args_parser
        from medscope.app import cli

        def main(argv=None):
            get_args_parser().parse_args(argv)
            raise cli.UsageError("breastmnist_64.npz not found")
    '''))
    assert menu.main(args, script_dir=lab.script_dir) == 2
    captured = capsys.readouterr()
    assert "error: breastmnist_64.npz not found" in captured.err
    assert "failed (exit 2)" in captured.out and "export_scalars" not in captured.out.split("summary")[1]


def test_bad_pipeline_flags_are_usage_errors(lab):
    parse = run_tool.get_args_parser().parse_args
    cases = {("--dataset", "breastmnist"): "--dataset: only with --pipeline",
             ("--pipeline",): "--pipeline needs --dataset",
             ("--pipeline", "--dataset", "lungmnist"): "--dataset lungmnist: choose one of: pathmnist",
             ("--pipeline", "--dataset", "breastmnist", "--model", "vit"): "--model vit: choose one of: resnet18, cnn",
             ("--pipeline", "--dataset", "adrenalmnist3d", "--size", "128"): "--size 128: choose one of: 28, 64"}
    for argv, message in cases.items():
        with pytest.raises(menu.cli.UsageError, match=message):
            menu.main(parse([*argv, "--results-dir", str(lab.results)]), script_dir=lab.script_dir)
    assert lab.calls() == []


def test_question_table_rows_are_complete():
    """Every item names its script; every question can produce a default and an argv entry."""
    keys = [item.key for item in menu.ITEMS]
    assert keys == ["1", "2", "3", "4", "5", "6", "7", "8"]
    assert [item.script for item in menu.ITEMS] == ["train", "export_scalars", "analyze_inference",
                                                    "analyze_complexity", "explain", "quantize", "report", None]
    for item in menu.ITEMS:
        for question in item.questions:
            assert question.choices or question.parse or question.flag, question.key
            assert question.flag or question.positional or question.to_argv or question.key == "advanced"


def test_describe_changes_doctest():
    import doctest

    assert doctest.testmod(menu).failed == 0


def test_session_loads_scripts_beside_run_tool_by_default():
    session = menu.Session()
    assert session.script_dir == ROOT and session.available("train") and session.available("export_scalars")
    assert Path(session.load("export_scalars").__file__).resolve() == ROOT / "export_scalars.py"
    assert not session.available("no_such_script")
