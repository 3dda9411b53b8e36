"""medscope.app.menu: the question table, answers -> argv, the menu loop and the pipeline.

These tests run the menu in-process against a folder of stand-in scripts (a
train.py that copies a real run instead of training, analysis scripts that
record the argv they get), so every path through the menu is checked in
seconds. tests/test_run_tool.py drives the real scripts through a pipe and a
pseudo-terminal.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import textwrap
import threading
import time
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
    if args.resume:  # finish the run: the epochs it had left, then completed
        record = Path(args.results_dir) / args.resume / "run.json"
        info = json.loads(record.read_text())
        info.update(status="completed", epochs_completed=info["config"]["epochs"])
        record.write_text(json.dumps(info))
        print(f"resumed {{args.resume}}")
        return 0
    results = Path(args.results_dir)
    for seed in args.seeds or [args.seed]:
        seq = 1 + sum(1 for p in results.iterdir() if p.name != "studies") if results.is_dir() else 1
        name = f"{{seq:04d}}_{{args.dataset[0]}}{{args.size}}_{{args.model[0]}}"
        shutil.copytree(TEMPLATE, results / name)
        shutil.copytree(EVENTS, Path(args.runs_dir) / name)
        print(f"results: {{results / name}}")
    if args.seeds:  # as the real one: a study of the seeds' runs
        (results / "studies" / f"{{args.dataset[0]}}{{args.size}}_{{args.model[0]}}").mkdir(parents=True)
    return 0
'''

FAKE_COMPARE = '''
"""Stand-in compare.py (or report.py): records its argv."""
import json

from medscope.app import cli

LOG = {log!r}


def get_args_parser():
    parser = cli.ArgumentParser(prog="{name}.py")
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--study", nargs="+", default=[])
    cli.add_common_args(parser, run_arg=None)
    return parser


def main(argv=None):
    get_args_parser().parse_args(argv)
    with open(LOG, "a") as fh:
        fh.write(json.dumps(["{name}", list(argv)]) + "\\n")
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
    (scripts / "report.py").symlink_to(ROOT / "report.py")  # the real one
    (scripts / "analyze_inference.py").write_text(FAKE_ANALYSIS.format(log=str(log), name="analyze_inference"))
    (scripts / "explain.py").write_text(FAKE_EXPLAIN.format(log=str(log)))
    (scripts / "quantize.py").write_text(FAKE_QUANTIZE.format(log=str(log)))

    class Lab:
        root = tmp_path
        script_dir = scripts
        results = tmp_path / "results"
        runs = tmp_path / "runs"
        template_events = events  # the TensorBoard folder of the run every add_run copies

        @staticmethod
        def calls():
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

        @staticmethod
        def add_run(name):
            shutil.copytree(run_2d, tmp_path / "results" / name, copy_function=light_copy)
            shutil.copytree(events, tmp_path / "runs" / name)
            return tmp_path / "results" / name

    return Lab


def light_copy(src, dst):
    """Copy a file, but a big one (a checkpoint, the inference outputs) as a few bytes: no menu test reads one."""
    if os.path.getsize(src) > 1_000_000:
        Path(dst).write_bytes(b"stand-in")
        return dst
    return shutil.copy2(src, dst)


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
    assert console.lines[0] == "medscope — MedMNIST model lab" and console.lines[1].startswith("data: ")
    assert console.lines[2:14] == [
        " 1. Train a model",
        " 2. Export TensorBoard scalars to CSV",
        " 3. Analyze inference outputs",
        " 4. Analyze weight complexity (LMC & Sample Entropy) (not available yet)",
        " 5. Explain: Grad-CAM, saliency, MC-dropout uncertainty, robustness, calibration",
        " 6. Export to ONNX and quantize to INT8",
        " 7. Write the report page and model card",
        " 8. Full pipeline (train, then every analysis)",
        " 9. Resume an interrupted run",
        " 10. List or delete runs",
        " 11. Compare runs (intervals, paired tests, the published baselines) (not available yet)",
        " 0. Quit"]
    assert "analyze_complexity.py is not available yet" in console.text
    assert console.prompts == ["choose [0-11]: ", "choose [0-11]: "]  # back at the menu, then quit


def test_header_names_the_data_folder_in_force_and_its_medmnist_files(lab, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("breastmnist.npz", "breastmnist_64.npz", "organmnist3d_64.npz", "notes.txt", "breastmnist.npz.part",
                 "mymnist_x.npz"):
        (data / name).write_bytes(b"")  # names only: nothing is opened
    (data / "pathmnist.npz").mkdir()  # a folder is no file
    header = session(lab, Console([]), common={"--data-dir": str(data)}).data_line()
    assert header == f"data: {data} (--data-dir): 3 MedMNIST files (breastmnist 28+64, organmnist3d 64)"
    assert menu.medmnist_files(data) == {"breastmnist": [28, 64], "organmnist3d": [64]}

    monkeypatch.setenv("MEDMNIST_DIR", str(data / "nowhere"))
    assert session(lab, Console([])).data_line() == (f"data: {data / 'nowhere'} ($MEDMNIST_DIR): no such folder yet; "
                                                     "train.py downloads each dataset there on first use")
    monkeypatch.delenv("MEDMNIST_DIR")
    monkeypatch.setattr(menu.runs_lib, "DEFAULT_DATA_DIR", tmp_path)  # ~/.medmnist, here holding no .npz
    assert session(lab, Console([])).data_line() == (f"data: {tmp_path} (default): no MedMNIST files yet; "
                                                     "train.py downloads each dataset there on first use")
    for flag in ("bloodmnist", "chestmnist", "dermamnist", "octmnist", "pathmnist_128"):
        (tmp_path / f"{flag}.npz").write_bytes(b"")
    assert session(lab, Console([])).data_line().endswith(
        "5 MedMNIST files (bloodmnist 28, chestmnist 28, dermamnist 28, octmnist 28, +1 more)")

    console = Console(["0"])  # and the header is the menu's second line
    assert session(lab, console, common={"--data-dir": str(data)}).loop() == 0
    assert console.lines[1] == f"data: {data} (--data-dir): 3 MedMNIST files (breastmnist 28+64, organmnist3d 64)"


def test_a_script_that_fails_to_import_is_one_line_and_the_menu_goes_on(lab):
    (lab.script_dir / "analyze_complexity.py").write_text("raise RuntimeError('half written')\n")
    lab.add_run("0001_breastmnist28_resnet18")
    console = Console(["4", "0"])
    assert session(lab, console).loop() == 0
    assert "error: could not load analyze_complexity.py: RuntimeError: half written" in console.text
    assert "Traceback" not in console.text


def test_ctrl_c_while_a_script_loads_takes_effect_once_it_is_loaded(lab):
    """An import stopped half way can leave NumPy or PyTorch unusable for the rest of the session."""
    imports = lab.root / "imports.txt"
    (lab.script_dir / "analyze_complexity.py").write_text(textwrap.dedent(f'''
        import signal
        with open({str(imports)!r}, "a") as fh:
            fh.write("imported\\n")
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the import
        FINISHED = True  # ... which still runs to its end
    ''') + FAKE_ANALYSIS.format(log=str(lab.root / "calls.jsonl"), name="analyze_complexity"))
    lab.add_run("0001_breastmnist28_resnet18")
    handler = signal.getsignal(signal.SIGINT)
    console = Console(["4", "4", "", "0"])
    assert session(lab, console).loop() == 0
    assert "(cancelled: back to the menu)" in console.lines
    assert imports.read_text() == "imported\n"  # loaded once: the second visit found it ready
    assert [call[0] for call in lab.calls()] == ["analyze_complexity"]
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C is the session's again


def test_train_reasks_bad_answers_and_passes_only_what_differs_from_train_defaults(lab):
    breast = str(data.dataset_flags().index("breastmnist") + 1)
    console = Console(["12", "1",
                       "99", "lungmnist", "breastmnist",  # dataset: out of range, unknown, by name
                       "5", "",  # size: out of range, then the default
                       "2",  # model: cnn
                       "0", "many", "3",  # epochs
                       "maybe", "y",  # advanced options
                       "", "", "", "3", "1.5", "0.1", "", "", "64", "", "",  # recipe, batch, lr, augment, dropout,
                       # select, patience, subset, seed, seeds
                       "0"])
    assert session(lab, console).loop() == 0
    assert console.prompts[2:8] == [f"dataset [{breast}]: "] * 3 + ["image size [1]: "] * 2 + ["model [1]: "]
    epochs = recipes.default_recipe("breastmnist", "cnn").epochs
    assert f"epochs [{epochs}]: " in console.prompts and "advanced options? (y/n) [n]: " in console.prompts
    assert "train on a random subset of N images [all]: " in console.prompts
    for hint in ("  type a number from 0 to 11", "  choose a number from 1 to 18 (Enter: %s)" % breast,
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
    console = Console(["1", "breastmnist", "", "", "", "y", "", "", "", "", "", "", "", "", "0", "", "0"])
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
    assert console.prompts[-1] == "choose [0-11]: " and lab.calls() == []


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


def test_quick_pipeline_hands_each_step_its_quick_flags(lab, capsys):
    """(The stand-ins refuse flags they do not know; the real scripts' parsers take these:
    tests/test_readme_commands.py runs the real quick pipeline.)"""
    args = run_tool.get_args_parser().parse_args(
        ["--pipeline", "--dataset", "breastmnist", "--model", "cnn", "--epochs", "1", "--subset", "16", "--quick",
         "--results-dir", str(lab.results), "--runs-dir", str(lab.runs), "--device", "cpu"])
    menu.main(args, script_dir=lab.script_dir)
    shown = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("$ python ")]
    steps = {Path(words[2]).stem + (f" {words[3]}" if words[2].endswith("explain.py") else ""): words[3:]
             for words in shown}
    assert set(steps) == {"train", "export_scalars", "analyze_inference", "explain gradcam", "explain saliency",
                          "quantize", "report"}
    for step, argv in steps.items():
        quick = list(menu.QUICK_ARGS.get(step, ()))
        assert argv[len(argv) - len(quick):] == quick, step


def test_pipeline_with_several_seeds_analyses_each_run_then_compares_the_study(lab, capsys):
    for script in ("compare", "report"):
        (lab.script_dir / f"{script}.py").unlink(missing_ok=True)
        (lab.script_dir / f"{script}.py").write_text(FAKE_COMPARE.format(log=str(lab.root / "calls.jsonl"),
                                                                         name=script))
    args = run_tool.get_args_parser().parse_args(
        ["--pipeline", "--dataset", "breastmnist", "--model", "cnn", "--epochs", "1", "--seeds", "0", "1",
         "--results-dir", str(lab.results), "--runs-dir", str(lab.runs)])
    menu.main(args, script_dir=lab.script_dir)
    common = ["--results-dir", str(lab.results), "--runs-dir", str(lab.runs)]
    calls = lab.calls()
    assert calls[0][0] == "train" and calls[0][1][calls[0][1].index("--seeds"):][:3] == ["--seeds", "0", "1"]
    runs = ["0001_breastmnist28_cnn", "0002_breastmnist28_cnn"]
    assert [argv[argv.index("--run") + 1] for name, argv in calls if name == "analyze_inference"] == runs
    assert calls[-2:] == [["compare", ["--study", "breastmnist28_cnn", *common]],
                          ["report", ["--study", "breastmnist28_cnn", *common]]]
    out = capsys.readouterr().out
    assert f"pipeline summary for 2 runs in {menu._shown_path(lab.results)}/:" in out
    assert "0002_breastmnist28_cnn: explain saliency" in out and "compare --study breastmnist28_cnn" in out


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
             ("--pipeline", "--dataset", "adrenalmnist3d", "--size", "128"): "--size 128: choose one of: 28, 64",
             ("--quick",): "--quick: only with --pipeline"}
    for argv, message in cases.items():
        with pytest.raises(menu.cli.UsageError, match=message):
            menu.main(parse([*argv, "--results-dir", str(lab.results)]), script_dir=lab.script_dir)
    assert lab.calls() == []


def test_question_table_rows_are_complete():
    """Every item names its script; every question can produce a default and an argv entry."""
    keys = [item.key for item in menu.ITEMS]
    assert keys == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
    assert [item.script for item in menu.ITEMS] == ["train", "export_scalars", "analyze_inference",
                                                    "analyze_complexity", "explain", "quantize", "report", None, "train",
                                                    None, "compare"]
    for item in menu.ITEMS:
        for question in item.questions:
            assert question.choices or question.parse or question.flag, question.key
            # an answer becomes part of the script's argv, or the menu acts on it itself
            assert (question.flag or question.positional or question.to_argv or question.key == "advanced"
                    or item.action is not None)


def test_describe_changes_doctest():
    import doctest

    assert doctest.testmod(menu).failed == 0


def test_session_loads_scripts_beside_run_tool_by_default():
    session = menu.Session()
    assert session.script_dir == ROOT and session.available("train") and session.available("export_scalars")
    assert Path(session.load("export_scalars").__file__).resolve() == ROOT / "export_scalars.py"
    assert not session.available("no_such_script")


# --------------------------------------------------------------------------- runs that did not complete

def set_record(folder: Path, *, drop=(), **fields) -> dict:
    """Edit run.json as an earlier process would have left it."""
    info = json.loads((folder / "run.json").read_text())
    info.update(fields)
    for key in drop:
        info.pop(key, None)
    (folder / "run.json").write_text(json.dumps(info))
    return info


def stopped(lab, name: str, status: str, done: int = 1, planned: int = 3, drop=(), **fields) -> Path:
    """A copy of the template run that stopped after ``done`` of ``planned`` epochs."""
    folder = lab.add_run(name)
    info = json.loads((folder / "run.json").read_text())
    set_record(folder, status=status, epochs_completed=done, config=dict(info["config"], epochs=planned),
               drop=("metrics", "finished", *drop), **fields)
    return folder


def age(folder: Path, seconds: float) -> None:
    """Make the run's files look last written ``seconds`` ago."""
    stamp = time.time() - seconds
    for name in ("run.json", "last.pt", "history.csv"):
        os.utime(folder / name, (stamp, stamp))


def test_resume_lists_runs_that_stopped_with_a_checkpoint_and_runs_train_resume(lab):
    lab.add_run("0001_breastmnist28_resnet18")  # completed: nothing to resume
    stopped(lab, "0002_breastmnist28_resnet18", "interrupted", 1, 3)
    (stopped(lab, "0003_breastmnist28_resnet18", "failed", 0, 3) / "last.pt").unlink()  # nothing to go on from
    stopped(lab, "0004_breastmnist28_resnet18", "running", 2, 3, pid=os.getpid(), host=socket.gethostname())
    age(stopped(lab, "0005_breastmnist28_resnet18", "running", 2, 4, drop=("pid", "host")), 2 * 3600)
    console = Console(["9", "9", "2", "0"])
    assert session(lab, console, common={"--seed": "5"}).loop() == 0
    table = console.lines[console.lines.index("run to resume:") + 1:console.lines.index("run to resume:") + 4]
    assert table[0].split() == ["run", "dataset", "size", "model", "status", "epochs", "last", "saved"]
    assert table[1].split()[:7] == ["1.", "0005_breastmnist28_resnet18", "breastmnist", "28", "resnet18", "stalled",
                                    "2/4"]  # running, but nothing written for two hours and no process known
    assert table[2].split()[:7] == ["2.", "0002_breastmnist28_resnet18", "breastmnist", "28", "resnet18",
                                    "interrupted", "1/3"]
    assert console.prompts[1:4] == ["run to resume [1]: ", "run to resume [1]: ", "choose [0-11]: "]
    assert "  choose a number from 1 to 2 (Enter: 1)" in console.lines
    (call,) = lab.calls()  # the run's own seed goes on: run_tool's --seed is not passed
    assert call == ["train", ["--resume", "0002_breastmnist28_resnet18", "--results-dir", str(lab.results),
                              "--runs-dir", str(lab.runs)]]
    command = f"$ {session(lab, Console([])).command_line('train', call[1])}"
    done = next(i for i, line in enumerate(console.lines) if line.startswith("done in "))
    assert console.lines.index(command) < done  # the command line first, then what came of it
    assert json.loads((lab.results / "0002_breastmnist28_resnet18" / "run.json").read_text())["status"] == "completed"


def test_resume_with_nothing_to_resume_is_one_line_and_back_to_the_menu(lab):
    lab.add_run("0001_breastmnist28_resnet18")
    stopped(lab, "0002_breastmnist28_resnet18", "running", pid=os.getpid(), host=socket.gethostname())  # alive
    console = Console(["9", "0"])
    assert session(lab, console).loop() == 0
    assert console.prompts == ["choose [0-11]: ", "choose [0-11]: "] and lab.calls() == []
    said = console.lines[console.lines.index(" 0. Quit") + 1:console.lines.index(" 0. Quit", 14)]
    assert said == [f"  no run to resume in {lab.results}/ (none stopped before its last epoch with a last.pt "
                    "to go on from)", "", "medscope — MedMNIST model lab"] + said[3:]
    assert said[3].startswith("data: ")


def test_default_run_is_the_newest_completed_and_unfinished_runs_are_marked(lab):
    lab.add_run("0001_breastmnist28_resnet18")
    stopped(lab, "0002_breastmnist28_resnet18", "interrupted", 1, 2)
    stopped(lab, "0003_breastmnist28_resnet18", "running", 1, 2, pid=os.getpid(), host=socket.gethostname())
    console = Console(["3", "", "0"])
    assert session(lab, console).loop() == 0
    rows = [line for line in console.lines if line.startswith("   ") and "_breastmnist28_" in line]
    assert [row.split()[1:3] for row in rows] == [["0003_breastmnist28_resnet18", "[running]"],
                                                 ["0002_breastmnist28_resnet18", "[interrupted]"],
                                                 ["0001_breastmnist28_resnet18", "breastmnist"]]
    assert rows[1].split()[6] == "1/2" and rows[1].split()[7] == "—"  # epochs done/planned, no test AUC
    assert "run [3]: " in console.prompts  # Enter: the newest completed run, not the newer unfinished ones
    assert lab.calls()[0][1][:2] == ["--run", "0001_breastmnist28_resnet18"]


def test_with_no_completed_run_the_default_is_the_newest(lab):
    stopped(lab, "0001_breastmnist28_resnet18", "interrupted")
    stopped(lab, "0002_breastmnist28_resnet18", "failed")
    console = Console(["3", "", "0"])
    assert session(lab, console).loop() == 0
    assert "run [1]: " in console.prompts and lab.calls()[0][1][:2] == ["--run", "0002_breastmnist28_resnet18"]


def test_run_states(lab):
    here = {"pid": os.getpid(), "host": socket.gethostname()}
    cases = {
        "completed": ({"status": "completed"}, 0),
        "interrupted": ({"status": "interrupted"}, 0),
        "killed": ({"status": "running", "pid": 2 ** 22 + 7, "host": socket.gethostname()}, 0),  # no such process
        "running": ({"status": "running", **here}, 10 * 3600),  # alive here: running, however quiet
        "stalled": ({"status": "running", "host": "another-machine", "pid": 1}, 2 * 3600),
    }
    for seq, (expected, (fields, quiet)) in enumerate(cases.items(), 1):
        folder = lab.add_run(f"{seq:04d}_x")
        set_record(folder, **fields)
        age(folder, quiet)
        assert menu.RunRecord.read(menu.Run(folder)).state == expected
    folder = lab.add_run("0009_x")  # running elsewhere, quiet for less than the hour: still running
    set_record(folder, status="running", host="another-machine", pid=1)
    age(folder, 1800)
    assert menu.RunRecord.read(menu.Run(folder)).state == "running"
    (lab.results / "0009_x" / "run.json").write_text("{not json")
    assert menu.RunRecord.read(menu.Run(folder)).marked_name == "0009_x [unreadable]"


def test_a_run_quiet_for_less_than_three_of_its_epochs_is_not_stalled(lab):
    folder = lab.add_run("0001_x")
    set_record(folder, status="running", drop=("pid", "host"))
    (folder / "history.csv").write_text("epoch,epoch_seconds\n1,1500\n2,2400.5\n")
    age(folder, 2 * 3600)  # two hours of silence, but one epoch has taken 40 minutes
    assert menu.stall_after(menu.Run(folder)) == 3 * 2400.5
    assert menu.RunRecord.read(menu.Run(folder)).state == "running"


# --------------------------------------------------------------------------- list and delete

def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_list_shows_every_run_and_deletes_only_after_the_name_is_typed(lab):
    for name in ("0001_breastmnist28_resnet18", "0002_breastmnist28_resnet18", "0003_breastmnist28_resnet18"):
        lab.add_run(name)
    stopped(lab, "0004_breastmnist28_resnet18", "interrupted", 1, 2)
    info = json.loads((lab.results / "0002_breastmnist28_resnet18" / "run.json").read_text())
    before = tree(lab.root)
    console = Console(["10", "7", "3", "0002",  # a wrong number, then run 3 (0002); a wrong name
                       "10", "",  # just the list: Enter deletes nothing
                       "0"])
    assert session(lab, console).loop() == 0
    assert tree(lab.root) == before  # nothing deleted without the name
    header = console.lines[console.lines.index("delete which runs? (numbers such as 2, 1 3 or 2-4):") + 1].split()
    assert header == ["run", "dataset", "size", "model", "status", "epochs", "test", "AUC", "test", "ACC", "created"]
    row = next(line for line in console.lines if line.startswith("   3. ")).split()
    assert row[1:10] == ["0002_breastmnist28_resnet18", "breastmnist", "28", "resnet18", "completed", "2",
                         f"{info['metrics']['test_auc']:.3f}", f"{info['metrics']['test_acc']:.3f}",
                         info["created"][:10]]
    assert next(line for line in console.lines if line.startswith("   1. ")).split()[5:8] == ["interrupted", "1/2", "—"]
    assert "  '7'? choose numbers from 1 to 4, e.g. 2, or 1 3, or 2-4 (Enter: none)" in console.lines
    assert console.prompts[1:4] == ["delete which runs? (numbers such as 2, 1 3 or 2-4) [none]: "] * 2 + [
        "type the run's name to confirm (Enter keeps it): "]
    assert "  nothing deleted ('0002' is not '0002_breastmnist28_resnet18')" in console.lines
    assert console.lines.count("  nothing deleted") == 1  # the second visit: Enter at the list

    name = "0002_breastmnist28_resnet18"
    folders = [lab.results / name, lab.runs / name]
    # a copied run records the TensorBoard folder of the run it was copied from: another run's, never removed
    set_record(folders[0], tensorboard_dir=str(lab.template_events))
    sizes = [(sum(1 for f in d.rglob("*") if f.is_file()), sum(f.stat().st_size for f in d.rglob("*") if f.is_file()))
             for d in folders]
    console = Console(["10", "3", name, "0"])
    assert session(lab, console).loop() == 0
    gone = {p for p in before if p.split("/")[1:2] == [name]}
    assert tree(lab.root) == before - gone  # exactly the run and its TensorBoard folder
    shown = [menu._shown_path(d) for d in folders]
    said = console.lines[console.lines.index("this deletes, for good:") + 1:]
    assert said[:4] == [f"  {shown[0]}/  ({sizes[0][0]} files, {menu.human_bytes(sizes[0][1])})",
                        f"  {shown[1]}/  ({sizes[1][0]} file{'s' if sizes[1][0] > 1 else ''}, "
                        f"{menu.human_bytes(sizes[1][1])})",
                        f"  {menu._shown_path(lab.template_events)}/ left in place: not {name}'s folder inside "
                        f"{lab.runs}/",
                        f"  removed {shown[0]}/ and {shown[1]}/ ({sizes[0][0] + sizes[1][0]} files, "
                        f"{menu.human_bytes(sizes[0][1] + sizes[1][1])})"]
    assert any(lab.template_events.iterdir())


def test_delete_several_runs_asks_to_type_how_many(lab):
    for name in ("0001_a", "0002_b", "0003_c"):
        lab.add_run(name)
    console = Console(["10", "1-2", "delete 2", "0"])  # newest first: 0003 and 0002
    assert session(lab, console).loop() == 0
    assert "type 'delete 2' to confirm (Enter keeps them): " in console.prompts
    assert sorted(p.name for p in lab.results.iterdir()) == ["0001_a"]
    assert sorted(p.name for p in lab.runs.iterdir()) == ["0001_a"]
    assert sum(line.startswith("  removed ") for line in console.lines) == 2


def test_ctrl_c_or_end_of_input_at_the_confirmation_deletes_nothing(lab):
    lab.add_run("0001_a")
    before = tree(lab.root)
    for ending in (KeyboardInterrupt(), EOFError()):
        console = Console(["10", "1", ending, "0"])
        assert session(lab, console).loop() == 0
        assert tree(lab.root) == before


def test_delete_leaves_tensorboard_folders_it_cannot_vouch_for(lab, tmp_path):
    folder = lab.add_run("0001_a")
    elsewhere = tmp_path / "elsewhere" / "0001_a"  # recorded in run.json, but outside the runs folder
    elsewhere.mkdir(parents=True)
    (elsewhere / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    set_record(folder, tensorboard_dir=str(elsewhere))
    (lab.runs / "0001_a" / "notes.txt").write_text("mine")  # not something TensorBoard writes
    plan = menu.plan_deletion(folder, lab.results, lab.runs)
    assert plan.folders == (folder,)
    assert plan.kept == (f"{menu._shown_path(lab.runs / '0001_a')}/ left in place: it holds notes.txt, "
                         "which TensorBoard does not write",
                         f"{menu._shown_path(elsewhere)}/ left in place: not 0001_a's folder inside {lab.runs}/")
    print(menu.remove_run(plan))
    assert not folder.exists() and (lab.runs / "0001_a" / "notes.txt").is_file() and elsewhere.is_dir()

    folder = lab.add_run("0002_b")  # recorded elsewhere inside the runs folder, under its name: removed too
    nested = lab.runs / "old" / "0002_b"
    shutil.copytree(lab.runs / "0002_b", nested)
    set_record(folder, tensorboard_dir=str(nested))
    plan = menu.plan_deletion(folder, lab.results, lab.runs)
    assert plan.folders == (folder, lab.runs / "0002_b", nested) and plan.kept == ()
    assert menu.remove_run(plan).startswith(f"removed {menu._shown_path(folder)}/ and ")
    assert not (lab.runs / "0002_b").exists() and not nested.exists() and (lab.runs / "old").is_dir()


def test_delete_refuses_what_is_not_a_run_folder(lab, tmp_path):
    lab.add_run("0001_a")
    (lab.results / "0002_no_record").mkdir()
    (lab.results / "0002_no_record" / "history.csv").write_text("")
    (lab.results / "0003_link").symlink_to(lab.results / "0001_a")
    outside = lab.add_run("0004_b").rename(tmp_path / "0004_b")  # a run folder, but not in results/
    live = stopped(lab, "0005_live", "running", pid=os.getpid(), host=socket.gethostname())
    cases = {lab.results / "0002_no_record": "is not a run folder (no run.json)",
             lab.results / "0003_link": "is not a run folder of",
             outside: "is not a run folder of",
             lab.results: "is not a run folder of",
             lab.results / "0001_a" / "..": "is not a run folder of",
             live: f"0005_live is still training (process {os.getpid()}); stop it first"}
    for folder, message in cases.items():
        with pytest.raises(menu.cli.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            menu.plan_deletion(folder, lab.results, lab.runs)
    assert (lab.results / "0001_a" / "run.json").is_file() and (lab.results / "0002_no_record").is_dir()
    console = Console(["10", "1", "0"])  # through the menu: one line, nothing asked
    assert session(lab, console).loop() == 0
    assert f"  0005_live is still training (process {os.getpid()}); stop it first, then delete it" in console.lines
    assert not any(p.startswith("type ") for p in console.prompts) and live.is_dir()


def test_an_interrupted_deletion_leaves_none_of_the_run_listed_and_is_finished_later(lab, monkeypatch):
    lab.add_run("0001_a")
    folder = lab.add_run("0002_b")
    plan = menu.plan_deletion(folder, lab.results, lab.runs)
    real_rmtree = shutil.rmtree

    def interrupted(path, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(menu.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        menu.remove_run(plan)
    monkeypatch.setattr(menu.shutil, "rmtree", real_rmtree)
    assert [r.name for r in menu.list_runs(lab.results)] == ["0001_a"]  # gone from every list at once
    assert sorted(p.name for p in lab.results.iterdir()) == [".deleting-0002_b", "0001_a"]
    assert sorted(p.name for p in lab.runs.iterdir()) == [".deleting-0002_b", "0001_a"]

    # a crash just after run.json was set aside: the folder is no run, and its TensorBoard folder stays behind
    crashed = lab.add_run("0003_c")
    os.replace(crashed / "run.json", crashed / ".run.json.deleting")
    assert [r.name for r in menu.list_runs(lab.results)] == ["0001_a"]
    console = Console(["10", "", "0"])
    assert session(lab, console).loop() == 0
    assert "  finished deleting 0002_b (an earlier deletion was interrupted)" in console.lines
    assert "  finished deleting 0003_c (an earlier deletion was interrupted)" in console.lines
    assert sorted(p.name for p in lab.results.iterdir()) == ["0001_a"]
    assert sorted(p.name for p in lab.runs.iterdir()) == ["0001_a"]

    # the last run: what is left is removed even though there is no run to list any more
    monkeypatch.setattr(menu.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        menu.remove_run(menu.plan_deletion(lab.results / "0001_a", lab.results, lab.runs))
    monkeypatch.setattr(menu.shutil, "rmtree", real_rmtree)
    console = Console(["10", "0"])
    assert session(lab, console).loop() == 0
    said = console.lines.index("  finished deleting 0001_a (an earlier deletion was interrupted)")
    assert console.lines[said + 1] == f"  no runs in {lab.results}/ yet; train one first (item 1)"
    assert list(lab.results.iterdir()) == [] and list(lab.runs.iterdir()) == []


def test_ctrl_c_during_the_renames_takes_effect_after_them(lab, monkeypatch):
    folder = lab.add_run("0001_a")
    plan = menu.plan_deletion(folder, lab.results, lab.runs)
    real_rename, renamed = os.rename, []

    def rename_with_ctrl_c(src, dst):
        if not renamed:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C as the first folder is renamed
        real_rename(src, dst)
        renamed.append(Path(src).name)

    monkeypatch.setattr(menu.os, "rename", rename_with_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        menu.remove_run(plan)
    assert renamed == ["0001_a", "0001_a"]  # both folders moved aside before the interrupt was let through
    assert not folder.exists() and not (lab.runs / "0001_a").exists()
    assert signal.getsignal(signal.SIGINT) is handler


# --------------------------------------------------------------------------- the spinner

class FakeTerminal:
    def __init__(self, tty=True):
        self.tty, self.written, self.lock = tty, [], threading.Lock()

    def isatty(self):
        return self.tty

    def write(self, text):
        with self.lock:
            self.written.append(text)
        return len(text)

    def flush(self):
        pass

    @property
    def text(self):
        with self.lock:
            return "".join(self.written)


def test_spinner_shows_after_a_silent_pause_and_is_erased_before_the_first_output(monkeypatch):
    screen = FakeTerminal()
    monkeypatch.setattr("sys.stdout", screen)
    monkeypatch.setattr("sys.stderr", screen)
    with menu.Waiting("loading train.py", delay=0.05, interval=0.01):
        deadline = time.monotonic() + 10
        while screen.text.count("\r") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("epoch 1/2")
        time.sleep(0.05)  # the spinner would have turned several times by now
        print("epoch 2/2", file=__import__("sys").stderr)
    import sys

    assert sys.stdout is screen and sys.stderr is screen  # the streams are given back
    text = screen.text
    spinner, _, after = text.rpartition("\r" + " " * len("| loading train.py ...") + "\r")
    assert after == "epoch 1/2\nepoch 2/2\n"  # nothing of the spinner after the first output
    frames = spinner.split("\r")[1:]
    assert len(frames) >= 3 and all(f[0] in "|/-\\" and f[1:] == " loading train.py ..." for f in frames)


def test_spinner_stays_away_from_quick_work_and_pipes(monkeypatch):
    screen = FakeTerminal()
    monkeypatch.setattr("sys.stdout", screen)
    with menu.Waiting("quick", delay=5):
        print("done")
    assert screen.text == "done\n"  # never drawn, nothing to erase
    pipe = FakeTerminal(tty=False)
    monkeypatch.setattr("sys.stdout", pipe)
    with menu.Waiting("in a pipe", delay=0):
        time.sleep(0.05)
        import sys

        assert sys.stdout is pipe  # not even wrapped
    assert pipe.text == "" and not any(t.name == "medscope-waiting" for t in threading.enumerate())


def test_compare_item_defaults_to_the_completed_runs_of_the_newest_dataset(lab):
    (lab.script_dir / "compare.py").write_text(FAKE_COMPARE.format(log=str(lab.root / "calls.jsonl"), name="compare"))
    first, second = lab.add_run("0001_breastmnist28_resnet18"), lab.add_run("0002_breastmnist28_cnn")
    console = Console(["11", "", "11", "2", "0"])  # Enter: the default runs; then run 2 alone
    assert session(lab, console).loop() == 0
    calls = [argv for name, argv in lab.calls() if name == "compare"]
    assert calls[0][:2] == [second.name, first.name] and calls[1][:1] == [first.name]
    assert "--results-dir" in calls[0]


def test_train_offers_the_tuned_recipe_only_where_it_applies_and_passes_general(lab):
    console = Console(["1", "breastmnist", "", "1", "", "y", "3", "", "", "", "", "", "", "", "", "", "0"])
    assert session(lab, console).loop() == 0
    (call,) = lab.calls()
    assert call[1][call[1].index("--recipe"):][:2] == ["--recipe", "general"]
    assert any("tuned    the recipe measured on this dataset" in line for line in console.lines)
    console = Console(["1", "pathmnist", "", "1", "", "y", "", "", "", "", "", "", "", "", "", "", "0"])
    assert session(lab, console).loop() == 0
    assert "--recipe" not in lab.calls()[1][1]
    assert not any("tuned    the recipe" in line for line in console.lines)


def test_train_asks_for_several_seeds_among_the_advanced_options(lab):
    console = Console(["1", "breastmnist", "", "2", "1", "y", "", "", "", "", "", "", "", "", "", "x 1", "3 1 3", "3 4",
                       "0"])
    assert session(lab, console).loop() == 0
    (call,) = lab.calls()
    assert call[1][call[1].index("--seeds"):][:3] == ["--seeds", "3", "4"]
    assert "  expected whole numbers such as 0 1 2, got 'x 1' (Enter: one run)" in console.lines
