"""run_tool.py as a user meets it: through a pipe, on a pseudo-terminal, and as --pipeline."""
from __future__ import annotations

import csv
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, interrupted_run

RUN_TOOL = str(ROOT / "run_tool.py")


def seeded_workdir(run: Path, root: Path) -> Path:
    """``root`` with results/<run>/ and runs/<run>/ copied from a trained run."""
    shutil.copytree(run, root / "results" / run.name)
    shutil.copytree(run.parent.parent / "runs" / run.name, root / "runs" / run.name)
    return root


def pipe(answers: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUN_TOOL, *args], input=answers, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


@pytest.mark.slow
def test_menu_through_a_pipe_trains_exports_reasks_and_ends_at_end_of_input(tmp_path, medmnist_dir):
    answers = "\n".join([
        "12",  # not an item: asked again
        "1", "lungmnist", "breastmnist", "", "cnn", "zero", "1", "",  # train: 1 epoch of the small CNN
        "2", "",  # export the newest run's scalars
    ]) + "\n"  # ... and then the input ends, with no "0"
    done = pipe(answers, "--subset", "32", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "  type a number from 0 to 11" in out
    assert re.search(r"  choose a number from 1 to 18 \(Enter: \d+\)", out)
    from medscope.train import recipes

    assert f"  expected a positive integer, got 'zero' (Enter: {recipes.general_epochs(32)})" in out
    assert "$ python ../" not in out  # commands are shown runnable from where the user is
    train_cmd = next(line for line in out.splitlines() if line.startswith("$ ") and "train.py" in line)
    assert train_cmd.endswith("train.py --dataset breastmnist --size 28 --model cnn --epochs 1 --subset 32 "
                              "--device cpu")
    (run,) = (tmp_path / "results").iterdir()
    assert run.name == "0001_breastmnist28_cnn"
    assert f"$ python {RUN_TOOL[:-len('run_tool.py')]}export_scalars.py --run {run.name} --device cpu" in out
    assert f"results in results/{run.name}/: tensorboard_scalars.csv, tensorboard_scalars_wide.csv" in out
    with open(run / "tensorboard_scalars.csv", newline="") as fh:
        tidy = list(csv.DictReader(fh))
    with open(run / "history.csv", newline="") as fh:
        (history,) = list(csv.DictReader(fh))
    (auc,) = [r for r in tidy if r["tag"] == "auc/val"]
    assert np.float32(float(auc["value"])) == np.float32(float(history["val_auc"]))
    assert out.rstrip().endswith("choose [0-11]:")  # ended at the menu by end of input
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_menu_resumes_a_run_interrupted_by_ctrl_c(tmp_path, medmnist_dir, monkeypatch):
    run, _ = interrupted_run(tmp_path, medmnist_dir, monkeypatch, 2, "--dataset", "breastmnist", "--model", "cnn",
                             "--epochs", "2", "--subset", "32", "--device", "cpu")
    before = json.loads((run / "run.json").read_text())
    assert before["status"] == "interrupted" and before["epochs_completed"] == 1
    done = pipe("9\n\n", "--device", "cpu", cwd=tmp_path)  # item 9, Enter: the newest run to resume
    assert done.returncode == 0, done.stderr
    out = done.stdout
    row = re.search(rf"   1\. {run.name}  breastmnist +28  cnn +interrupted +1/2  \d{{4}}-\d\d-\d\d \d\d:\d\d\n", out)
    assert row and "run to resume [1]: " in out, out
    command = f"$ python {RUN_TOOL[:-len('run_tool.py')]}train.py --resume {run.name} --device cpu"
    assert command in out and out.index(command) < out.index(f"resuming {run.name} after epoch 1/2")
    after = json.loads((run / "run.json").read_text())
    assert after["status"] == "completed" and after["epochs_completed"] == 2
    assert [row["epoch"] for row in csv.DictReader(open(run / "history.csv", newline=""))] == ["1", "2"]
    assert f"results in results/{run.name}/: " in out and "Traceback" not in done.stderr


def test_end_of_input_at_once_exits_0_with_a_newline(tmp_path):
    done = pipe("", cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and done.stdout.endswith("choose [0-11]: \n") and done.stderr == ""
    assert "|" not in done.stdout and "\r" not in done.stdout  # no spinner in a pipe


def test_bad_flags_are_one_line_and_exit_2(tmp_path):
    for args, message in {("--dataset", "breastmnist"): "--dataset: only with --pipeline",
                          ("--pipeline",): "--pipeline needs --dataset",
                          ("--epochs", "0"): "argument --epochs: expected a positive integer"}.items():
        done = pipe("", *args, cwd=tmp_path, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "results").exists()


# the menu's spinner as the terminal receives it: each frame drawn over the last, then blanked out
SPINNER_FRAME = re.compile(r"\r[|/\\-] [^\r\n]* \.\.\. *(?=\r)")
SPINNER_ERASED = re.compile(r"\r +\r")


class Terminal:
    """run_tool.py on a pseudo-terminal: what a person at a keyboard sees and types."""

    def __init__(self, args, cwd: Path):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes run_tool.py, with the pty as its controlling terminal
            try:
                import signal  # a person's terminal delivers Ctrl-C: undo what the test runner inherited
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, RUN_TOOL, *args], dict(os.environ, TERM="dumb"))
            finally:
                os._exit(127)
        self.seen = ""
        self.spinner_frames = 0  # frames of the menu's spinner seen (and dropped, as the screen erases them)

    def read_until(self, text: str, timeout: float = 60) -> str:
        """Everything shown up to and including ``text`` (ANSI escapes dropped)."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"never saw {text!r}; the screen shows:\n{self.seen[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child has gone and closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"run_tool.py ended before {text!r}; it showed:\n{self.seen[-2000:]}")
                self.seen += re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", chunk.decode("utf-8", "replace"))
                self.spinner_frames += len(SPINNER_FRAME.findall(self.seen))
                self.seen = SPINNER_ERASED.sub("", SPINNER_FRAME.sub("", self.seen))
        shown, _, self.seen = self.seen.partition(text)
        return shown + text

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def ctrl_c(self, after: float = 0.5) -> None:
        """Ctrl-C as a person types it: some time after the prompt appeared.

        Typed within microseconds of the prompt, the signal can land after CPython's readline
        has drawn the prompt but before it blocks in select(); select() then waits for a key
        and the Ctrl-C shows only after the next one (CPython's readline loop has no timeout
        without an input hook). On a loaded machine that window is wide enough for a test to
        hit; a person cannot.
        """
        time.sleep(after)
        os.write(self.fd, b"\x03")

    def exit_code(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # drain the screen so the child never blocks on a full terminal
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 4096)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        raise AssertionError("run_tool.py did not exit")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def test_prompts_on_a_terminal_read_as_a_person_sees_them(run_2d, tmp_path):
    seeded_workdir(run_2d, tmp_path)
    term = Terminal([], cwd=tmp_path)
    try:
        screen = term.read_until("choose [0-11]: ")
        assert f"medscope — MedMNIST model lab\r\ndata: {os.environ['MEDMNIST_DIR']} ($MEDMNIST_DIR): " in screen
        assert " MedMNIST files (" in screen and ")\r\n 1. Train a model\r\n" in screen
        assert " 0. Quit\r\nchoose [0-11]: " in screen
        term.type("2\r")
        screen = term.read_until("run [1]: ")
        assert "2\r\nrun:\r\n" in screen  # the terminal echoes what was typed; the menu adds no second copy
        row = rf"   1\. {run_2d.name}  breastmnist +28  resnet18 +2 +0\.\d{{3}}  \d{{4}}-\d\d-\d\d \d\d:\d\d"
        assert re.search(row, screen)
        assert "   2. all runs, one combined file" in screen
        term.type("7\r")
        assert term.read_until("run [1]: ").endswith("7\r\n  choose a number from 1 to 2 (Enter: 1)\r\nrun [1]: ")
        term.ctrl_c()  # in a question: back to the menu
        screen = term.read_until("choose [0-11]: ")
        assert "(cancelled: back to the menu)" in screen and " 1. Train a model" in screen
        term.type("2\r")
        term.read_until("run [1]: ")
        term.type("\r")  # Enter takes the default: the newest run
        screen = term.read_until("choose [0-11]: ", timeout=120)
        assert f"$ python {RUN_TOOL[:-len('run_tool.py')]}export_scalars.py --run {run_2d.name}" in screen
        assert f"results in results/{run_2d.name}/: tensorboard_scalars.csv, tensorboard_scalars_wide.csv" in screen
        term.ctrl_c()  # at the menu: a clean goodbye
        assert "bye" in term.read_until("bye")
        assert term.exit_code() == 0
    finally:
        term.close()
    assert (tmp_path / "results" / run_2d.name / "tensorboard_scalars.csv").is_file()


def test_pipeline_argv_of_every_real_script_parses_with_its_own_parser(run_2d, tmp_path):
    """The flags the pipeline hands each script that exists are ones that script accepts.

    (Running them all is what ``python run_tool.py --pipeline`` does; here only
    their own parsers are asked, so the check stays cheap however many exist.)
    """
    from medscope.app import menu

    seeded_workdir(run_2d, tmp_path)
    session = menu.Session(results_dir=str(tmp_path / "results"),
                           common={"--results-dir": str(tmp_path / "results"), "--runs-dir": str(tmp_path / "runs"),
                                   "--data-dir": str(tmp_path), "--device": "cpu", "--seed": "3"})
    checked = []
    for item in menu.ITEMS:
        if not item.in_pipeline or not session.available(item.script):
            continue
        for answers in session.pipeline_answers(item, run_2d.name):
            argv = session.argv_for(item.script, item.questions, answers)
            args = session.parser(item.script).parse_args(argv)  # a UsageError here fails the test
            assert args.results_dir == str(tmp_path / "results")
            assert getattr(args, "run") in (run_2d.name, [run_2d.name])
            checked.append(" ".join([item.script, *argv[:1]]))
    assert "export_scalars --run" in checked


def test_undecodable_bytes_in_the_menu_are_asked_again_not_a_crash(tmp_path):
    done = subprocess.run([sys.executable, RUN_TOOL], input=b"\xff\xfe\n0\n", cwd=tmp_path, capture_output=True,
                          timeout=120, env=dict(os.environ))
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0 and b"Traceback" not in done.stderr
    assert "  type a number from 0 to 11" in out and out.count("choose [0-11]: ") == 2
