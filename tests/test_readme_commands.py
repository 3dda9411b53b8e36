"""Every command in README.md runs, as written, and does what the README says it does.

The commands are read from README.md's ```bash blocks (and the few complete commands of its prose,
PROSE). Each ``## `` section's commands run in README order, as real processes, in one fresh folder
that is their working folder, so results/ and runs/ are the test's own and later commands find what
earlier ones made: the tour trains, analyses, trains seeds, compares and reports in one folder, and the
run and study names the README prints are the ones the commands make.

A command runs as written plus only the flags of SHRINK, which make it small (a flag the command gives
keeps the README's value). A command that does not run is in SKIP, with the reason. A new command in
README.md is run here as soon as it is there, or fails
``test_every_readme_command_is_run_or_skipped_with_a_reason`` until SHRINK (or SKIP) names it.
"""
from __future__ import annotations

import codecs
import csv
import fnmatch
import itertools
import json
import os
import re
import resource
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from medscope.runs import RunLayout, ResultsLayout, list_runs, resolve_run
from tests.conftest import ROOT

README = ROOT / "README.md"

# Flags appended to a README command to keep it short, by script (and explain.py's subcommand).
SHRINK = {
    "train.py": "--epochs 1 --subset 64 --bootstrap 200 --device cpu",
    "export_scalars.py": "--device cpu",
    "analyze_inference.py": "--tsne-points 200 --device cpu",
    "analyze_complexity.py": "--device cpu",  # nothing to shrink: exact Sample Entropy of every tensor
    "explain.py gradcam": "--n 4 --steps 5 --max-figures 4 --device cpu",
    "explain.py saliency": "--n 4 --steps 5 --max-figures 4 --samples 5 --device cpu",
    "explain.py uncertainty": "--passes 5 --bootstrap 200 --device cpu",
    "explain.py robustness": "--perturbations gaussian_noise --severities 1 --n-saliency 8 --n-examples 1 "
                             "--bootstrap 200 --device cpu",
    "explain.py calibrate": "--bootstrap 200 --device cpu",
    "quantize.py": "--calib 16 --runs 5 --warmup 1 --throughput-runs 1 --batch-size 8 --test-subset 32 --device cpu",
    "compare.py": "--bootstrap 200 --device cpu",
    "report.py": "--bootstrap 200 --device cpu",
    "run_tool.py": "",  # the menu: its answers come on stdin (STDIN, or the README's printf)
    "run_tool.py --pipeline": "--epochs 1 --subset 64 --quick --device cpu",  # --quick: QUICK_ARGS for each step
    "tensorboard": "--host 127.0.0.1 --port {free_port}",
}

# The menu, as a user who only looks at it: "0" quits.
STDIN = {"python run_tool.py": "0\n"}

# README commands that no test here runs, and why.
SKIP = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt":
        "the install: CI runs it verbatim on a clean clone (.ci/run; tests/test_readme.py checks that it does)",
    "python -m pytest": "the test suite itself, which CI runs verbatim",
    "torchrun --standalone --nproc_per_node=4 train.py --dataset pathmnist --size 224 --workers 4":
        "needs 4 CUDA GPUs (NCCL); tests/test_cuda.py and tests/test_distributed.py cover the parts",
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv-id=tissue224 --rdzv-backend=c10d --rdzv-endpoint=node0:29500 "
    "train.py --dataset tissuemnist --size 224 --workers 4": "needs two machines with 8 CUDA GPUs each",
    "torchrun --nnodes=2 --nproc_per_node=8 --node-rank=0 --master-addr=node0 --master-port=29500 train.py ...":
        "needs two machines with 8 CUDA GPUs each; '...' stands for the training flags",
}

# Complete commands in the README's prose, and the section whose folder they run in (after its blocks).
PROSE = {
    "tensorboard --logdir runs": "Run",
    "printf '2\\n1\\n0\\n' | python run_tool.py": "A short tour",
}


@dataclass(frozen=True)
class Command:
    section: str  # the ``## `` heading it is under
    line: str  # as written, continuation lines joined, without its comment
    comment: str = ""  # what the README says after '#' on its line


def _block_commands(section: str, lines: list[str]) -> list[Command]:
    """The commands of one ```bash block: comment lines dropped, ``\\`` continuations joined."""
    commands, pending = [], ""
    for raw in lines:
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, _, comment = (pending + line).partition(" #")
        commands.append(Command(section, " ".join(line.split()), comment.strip()))
        pending = ""
    assert not pending, f"README.md: a ```bash block in '{section}' ends inside a continued line"
    return commands


def readme_commands() -> list[Command]:
    """Every command of README.md's ```bash blocks, in README order, with its ``## `` section."""
    section, block, commands = "", None, []
    for line in README.read_text().splitlines():
        if block is not None:
            if line.strip() == "```":
                commands += _block_commands(section, block)
                block = None
            else:
                block.append(line)
        elif line.startswith("## "):
            section = line[3:].strip()
        elif line.strip() == "```bash":
            block = []
    return commands


def prose_commands() -> list[Command]:
    text = README.read_text()
    for line in PROSE:
        assert f"`{line}`" in text, f"PROSE: README.md no longer says `{line}`"
    return [Command(section, line) for line, section in PROSE.items()]


def shrink_key(words: list[str]) -> str:
    """The SHRINK entry of a command's words: its script (and explain.py's subcommand, run_tool's --pipeline)."""
    if words[0] == "tensorboard":
        return "tensorboard"
    script = next((w for w in words if w.endswith(".py")), words[0])
    after = words[words.index(script) + 1:]
    if script == "explain.py":
        return f"explain.py {after[0] if after else ''}".strip()
    if script == "run_tool.py" and "--pipeline" in after:
        return "run_tool.py --pipeline"
    return script


def _flag_groups(words: list[str]) -> list[list[str]]:
    groups = []
    for word in words:
        if word.startswith("--"):
            groups.append([word])
        else:
            groups[-1].append(word)
    return groups


def shrunk(words: list[str], extra: str) -> list[str]:
    """``words`` with SHRINK's flags appended, but those the command already gives."""
    given = {w.split("=")[0] for w in words if w.startswith("--")}
    added = [w for group in _flag_groups(extra.split()) if group[0] not in given for w in group]
    return words + added


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Planned:
    """A README command made ready to start: its process's argv, stdin, and the words it ran with."""
    words: list[str]  # the README's words plus SHRINK's flags
    argv: list[str]
    stdin: str | None
    key: str


def plan(command: Command) -> Planned:
    line, stdin = command.line, STDIN.get(command.line)
    piped = re.fullmatch(r"printf '([^']*)' \| (.+)", line)
    if piped:  # the shell's printf: its escapes become the lines on stdin
        stdin, line = codecs.decode(piped.group(1), "unicode_escape"), piped.group(2)
    words = shlex.split(line)
    assert not {"&&", "|", ";", ">", "<"} & set(words), f"{command.line!r}: shell syntax this test cannot run"
    key = shrink_key(words)
    assert key in SHRINK, f"{command.line!r}: no SHRINK entry for {key!r}"
    words = shrunk(words, SHRINK[key].format(free_port=free_port()))
    if words[0] == "python":  # the scripts of the repository, run from the test's folder
        argv = [sys.executable, str(ROOT / words[1]), *words[2:]]
    elif words[0] == "torchrun":
        script = next(i for i, w in enumerate(words) if w.endswith(".py"))
        argv = [sys.executable, "-m", "torch.distributed.run", *words[1:script], str(ROOT / words[script]),
                *words[script + 1:]]
    elif words[0] == "tensorboard":
        argv = [str(Path(sys.executable).with_name("tensorboard")), *words[1:]]
    else:
        raise AssertionError(f"{command.line!r}: no way to start {words[0]!r}")
    return Planned(words, argv, stdin, key)


# --------------------------------------------------------------------------- the checks

@dataclass
class Before:
    """The folder as it was before a command: what the command made is what is new after it."""
    runs: set[str]
    studies: set[str]
    comparisons: set[str]
    time: float

    @classmethod
    def of(cls, work: Path) -> "Before":
        layout = ResultsLayout(work / "results")
        return cls({r.name for r in list_runs(layout.root)}, _names(layout.studies_dir),
                   _names(layout.comparisons_dir), time.time())


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _values(words: list[str], flag: str) -> list[str]:
    """The words after the last ``flag`` up to the next flag, or []."""
    if flag not in words:
        return []
    after = words[len(words) - words[::-1].index(flag):]
    return list(itertools.takewhile(lambda w: not w.startswith("--"), after))


def _positional(words: list[str]) -> list[str]:
    """The words after the script that come before its first flag."""
    script = next(i for i, w in enumerate(words) if w.endswith(".py"))
    return list(itertools.takewhile(lambda w: not w.startswith("--"), words[script + 1:]))


def _info(run: Path) -> dict:
    return json.loads(RunLayout(run).run_json.read_text())


def _new(path: Path, before: Before) -> Path:
    assert path.is_file() and path.stat().st_mtime >= before.time - 1, f"{path} was not written by the command"
    return path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def check_train(p: Planned, work: Path, before: Before) -> None:
    results = work / "results"
    new = sorted({r.name for r in list_runs(results)} - before.runs)
    datasets, models = _values(p.words, "--dataset"), _values(p.words, "--model") or ["resnet18"]
    seeds = _values(p.words, "--seeds")
    assert len(new) == len(datasets) * len(models) * max(1, len(seeds)), new
    for name in new:
        info = _info(results / name)
        assert info["status"] == "completed", (name, info["status"])
        assert re.fullmatch(rf"\d{{4}}_{info['config']['dataset']}\d+_{info['config']['model']}", name)
        if p.words[0] == "torchrun":
            nproc = int(next(w for w in p.words if w.startswith("--nproc_per_node=")).split("=")[1])
            assert info["config"]["world_size"] == nproc
    if len(seeds) > 1:  # one study per dataset x model, of its seeds' runs, named by their span
        groups: dict[tuple, list[str]] = {}
        for name in new:
            config = _info(results / name)["config"]
            groups.setdefault((config["dataset"], config["size"], config["model"]), []).append(name)
        expected = {f"{names[0][:4]}-{names[-1][:4]}_{dataset}{size}_{model}_seeds": names
                    for (dataset, size, model), names in groups.items()}
        studies = ResultsLayout(results).studies_dir
        assert _names(studies) - before.studies == set(expected)
        for study, names in expected.items():
            assert json.loads((studies / study / "study.json").read_text())["runs"] == names
            assert len(names) == len(seeds)


def _target(p: Planned, work: Path) -> Path:
    """The run a script works on: --run's (name or prefix), else the newest completed one."""
    spec = _values(p.words, "--run")
    return resolve_run(work / "results", spec[0] if spec else None).path


def check_run_files(p: Planned, work: Path, before: Before) -> None:
    """An analysis of one run wrote its main files into that run's folder (the values they hold checked where
    the README promises them)."""
    run = RunLayout(_target(p, work))
    if p.key == "export_scalars.py":
        tags = {row["tag"] for row in _rows(_new(run.tensorboard_scalars_csv, before))}
        assert {"auc/val", "loss/train"} <= tags, tags
    elif p.key == "analyze_inference.py":
        assert _rows(_new(run.inference_summary_csv, before))
    elif p.key == "analyze_complexity.py":
        states = {row["state"] for row in _rows(_new(run.complexity_results_csv, before))}
        assert states == ({"trained", "initial"} if "--compare-init" in p.words else {"trained"})
    elif p.key in ("explain.py gradcam", "explain.py saliency"):
        method = p.key.split()[1]
        rows = _rows(_new(run.root / method / f"{method}_metrics.csv", before))
        assert len([row for row in rows if row["row"] == "image"]) == int(_values(p.words, "--n")[0])
    elif p.key == "explain.py uncertainty":
        assert _rows(_new(run.uncertainty_dir / "uncertainty_per_image.csv", before))
    elif p.key == "explain.py robustness":
        conditions = {(row["perturbation"], int(row["severity"]))
                      for row in _rows(_new(run.robustness_dir / "robustness_results.csv", before))}
        asked = itertools.product(_values(p.words, "--perturbations"), map(int, _values(p.words, "--severities")))
        assert conditions == set(asked) | {("clean", 0)}
    elif p.key == "explain.py calibrate":
        _new(run.calibration_dir / "calibration_report.md", before)
    elif p.key == "quantize.py":
        for name in ("model_fp32.onnx", "model_int8_static.onnx", "model_int8_dynamic.onnx", "export_report.md"):
            _new(run.export_dir / name, before)
    elif p.key == "report.py":
        for path in (run.report_html, run.model_card_md, run.model_card_json):
            _new(path, before)
    else:
        raise AssertionError(f"no check for {p.key}")


def _compared_runs(p: Planned, work: Path) -> set[str]:
    """The runs a compare.py or report.py command names: by name, prefix or glob, or through --study."""
    def named(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatch(name, pattern) or name.startswith(pattern) for pattern in patterns)

    layout = ResultsLayout(work / "results")
    runs = {r.name for r in list_runs(layout.root) if named(r.name, _positional(p.words))}
    for study in _names(layout.studies_dir):
        if named(study, _values(p.words, "--study")):
            runs |= set(json.loads((layout.studies_dir / study / "study.json").read_text())["runs"])
    return runs


def _new_comparison(work: Path, before: Before) -> Path:
    folder = ResultsLayout(work / "results").comparisons_dir
    (made,) = _names(folder) - before.comparisons
    return folder / made


def check_compare(p: Planned, work: Path, before: Before) -> None:
    runs, folder = _compared_runs(p, work), _new_comparison(work, before)
    assert len(runs) > 1
    compared = {row["name"] for row in _rows(_new(folder / "comparison.csv", before)) if row.get("kind") == "run"}
    assert compared == runs
    assert all(name in _new(folder / "comparison.md", before).read_text() for name in runs)


def check_report(p: Planned, work: Path, before: Before) -> None:
    studies = _values(p.words, "--study")
    if len(studies) == 1:  # one study: its page beside study.json
        _new(ResultsLayout(work / "results").studies_dir / studies[0] / "report.html", before)
    elif studies or len(_compared_runs(p, work)) > 1:  # a comparison page, with compare.py's files
        _new(_new_comparison(work, before) / "report.html", before)
    else:  # one run's page
        check_run_files(p, work, before)


def check_menu(p: Planned, work: Path, before: Before, done: subprocess.CompletedProcess) -> None:
    assert "choose [0-" in done.stdout
    if p.stdin == "0\n":  # looked at, and left
        assert {r.name for r in list_runs(work / "results")} == before.runs
    else:  # the README's printf: item 2, the first run offered (the newest), then 0
        assert p.stdin == "2\n1\n0\n"
        _new(RunLayout(_target(p, work)).tensorboard_scalars_csv, before)


def check_pipeline(p: Planned, work: Path, before: Before, done: subprocess.CompletedProcess) -> None:
    results = work / "results"
    (run,) = {r.name for r in list_runs(results)} - before.runs
    assert _info(results / run)["status"] == "completed"
    summary = [line for line in done.stdout[done.stdout.index("pipeline summary"):].splitlines()[2:] if line.strip()]
    steps = {line.split()[0] + (" " + line.split()[1] if line.split()[0] == "explain" else "") for line in summary}
    assert {"train", "export_scalars", "analyze_inference", "analyze_complexity", "explain gradcam",
            "explain uncertainty", "explain robustness", "explain calibrate", "quantize", "report"} <= steps
    assert all(" ok " in line for line in summary), "\n".join(summary)
    layout = RunLayout(results / run)
    for path in (layout.tensorboard_scalars_csv, layout.report_html, layout.export_dir / "model_int8_static.onnx"):
        _new(path, before)


def run_tensorboard(p: Planned, work: Path, env: dict) -> None:
    """TensorBoard starts, answers on its port and lists the folder's runs; then it is stopped."""
    if not Path(p.argv[0]).is_file():
        pytest.skip("tensorboard is not installed")
    port = _values(p.words, "--port")[0]
    proc = subprocess.Popen(p.argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, listed = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as response:
                    assert response.status == 200
                    listed = json.loads(response.read())
                if listed:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200
        assert set(listed or []) == _names(work / "runs")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_and_check(command: Command, work: Path, env: dict) -> None:
    p = plan(command)
    if p.key == "tensorboard":
        run_tensorboard(p, work, env)
        return
    before, cpu = Before.of(work), _children_cpu()
    done = subprocess.run(p.argv, cwd=work, env=env, input=p.stdin if p.stdin is not None else "",
                          capture_output=True, text=True, timeout=600)
    # shown with -s and on a failure: where the time goes (CPU time too, the machine may be shared)
    print(f"{time.time() - before.time:6.1f}s (CPU {_children_cpu() - cpu:6.1f}s)  $ {shlex.join(p.words)}")
    shown = f"$ {shlex.join(p.words)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0 and "Traceback" not in done.stderr, shown
    named = re.search(r"results/([^/\s]+)/", command.comment)
    if named:  # the comment names the run folder the command makes
        assert named.group(1) in {r.name for r in list_runs(work / "results")} - before.runs, shown
    if p.key == "train.py":
        check_train(p, work, before)
    elif p.key == "compare.py":
        check_compare(p, work, before)
    elif p.key == "report.py":
        check_report(p, work, before)
    elif p.key == "run_tool.py":
        check_menu(p, work, before, done)
    elif p.key == "run_tool.py --pipeline":
        check_pipeline(p, work, before, done)
    else:
        check_run_files(p, work, before)


# --------------------------------------------------------------------------- the tests

def _sections() -> list[str]:
    return list(dict.fromkeys(c.section for c in readme_commands() + prose_commands() if c.line not in SKIP))


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = readme_commands()
    lines = [c.line for c in commands]
    assert len(commands) >= 20 and "python train.py --dataset breastmnist" in lines  # the blocks were found
    assert not set(SKIP) - set(lines), f"SKIP names commands README.md no longer has: {set(SKIP) - set(lines)}"
    for command in commands + prose_commands():
        if command.line not in SKIP:
            plan(command)  # fails for a command no SHRINK entry (or runner) covers
    assert all(reason for reason in SKIP.values())
    assert {"Run", "A short tour"} <= set(_sections())


def test_quick_pipeline_flags_are_accepted_by_each_script():
    """run_tool.py --pipeline --quick hands each step QUICK_ARGS: every one parses with that script's parser."""
    from medscope.app import menu

    session = menu.Session(script_dir=ROOT)
    for step, flags in menu.QUICK_ARGS.items():
        script, *subcommand = step.split()
        args = session.parser(script).parse_args([*subcommand, *flags])  # a UsageError here fails the test
        assert vars(args)[flags[0].lstrip("-").replace("-", "_")] is not None


@pytest.mark.slow
@pytest.mark.parametrize("section", _sections())
def test_readme_section_commands_run_in_order_in_a_fresh_folder(section, tmp_path, medmnist_dir):
    env = dict(os.environ, MEDMNIST_DIR=str(medmnist_dir))
    commands = [c for c in readme_commands() if c.section == section and c.line not in SKIP]
    commands += [c for c in prose_commands() if c.section == section]
    for command in commands:
        run_and_check(command, tmp_path, env)
