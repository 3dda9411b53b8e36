"""Hostile input and a hostile machine: signals sent to real training processes, a diverging run.

Every case ends in a truthful run.json status, a message that says what exists, and no
temporary file left behind (see docs/RELIABILITY.md).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medscope import runs
from medscope.app import cli
from tests.conftest import ROOT

TRAIN = ["--dataset", "breastmnist", "--model", "cnn", "--subset", "64", "--epochs", "30", "--device", "cpu"]


def _start(tmp_path, medmnist_dir):
    args = [sys.executable, "-u", str(ROOT / "train.py"), *TRAIN, "--data-dir", str(medmnist_dir),
            "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]
    return subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _after_first_epoch(proc) -> list[str]:
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"train.py ended early: {proc.stderr.read()}"
        lines.append(line)
        if line.startswith("epoch   1/"):
            return lines
    raise AssertionError("no epoch finished in 300 s")


def _temporaries(folder):
    return [p for p in folder.rglob("*.tmp")]


@pytest.mark.slow
def test_sigterm_stops_training_like_ctrl_c_with_a_resumable_checkpoint(tmp_path, medmnist_dir):
    proc = _start(tmp_path, medmnist_dir)
    _after_first_epoch(proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_TERMINATED and err.strip().endswith("terminated")
    (run,) = runs.list_runs(tmp_path / "results")
    info = run.info()
    assert info["status"] == "interrupted" and info["epochs_completed"] >= 1
    assert f"train.py --resume {run.path}" in out and run.layout.last_pt.is_file()
    assert _temporaries(tmp_path) == []
    assert "stopped: interrupted" in run.unfinished_note()


@pytest.mark.slow
def test_a_killed_run_is_reported_as_killed_by_every_later_reader(tmp_path, medmnist_dir, capsys):
    proc = _start(tmp_path, medmnist_dir)
    _after_first_epoch(proc)
    proc.kill()  # SIGKILL: no handler runs, run.json still says "running"
    proc.wait(timeout=60)
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["status"] == "running" and run.status() == "killed"
    assert cli.resolve_run(tmp_path / "results", run.name) == run
    err = capsys.readouterr().err
    assert "was killed (its process is gone)" in err and "--resume" in err
    # stale temporaries of the killed process are removable by the next writer
    stale = run.path / f".metrics.json.{proc.pid}.x.tmp"
    stale.write_text("half")
    from medscope import atomic

    assert stale in atomic.remove_stale_temporaries(run.path)


def test_ctrl_c_before_the_first_epoch_does_not_promise_a_checkpoint(tmp_path, medmnist_dir, monkeypatch, capsys):
    from tests.conftest import interrupted_run

    run, _ = interrupted_run(tmp_path, medmnist_dir, monkeypatch, 1, *TRAIN[:6], "--epochs", "2")
    out = capsys.readouterr().out
    assert "no checkpoint to resume from" in out and "--resume" not in out
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_a_diverging_run_stops_with_status_failed(tmp_path, medmnist_dir, monkeypatch, capsys):
    """A loss that explodes whatever the learning rate: three rollbacks at half the rate each, then failed."""
    import train
    from medscope.train import loop

    real_loss = loop.loss_fn
    monkeypatch.setattr(loop, "loss_fn", lambda *args: real_loss(*args) * 1e6)
    code = cli.run(train.main, [*TRAIN[:6], "--epochs", "2", "--optimizer", "sgd", "--lr", "10",
                                "--data-dir", str(medmnist_dir), "--results-dir", str(tmp_path / "results"),
                                "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE and err.startswith("failed: the ") and err.count("\n") == 1
    assert "exploded" in err and "after 3 rollbacks" in err and "Try a lower --lr" in err
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["status"] == "failed" and "loss" in run.info()["failure"]
    assert [r["lr_scale"] for r in run.info()["stability"]["rollbacks"]] == [0.5, 0.25, 0.125]


def test_os_errors_while_training_end_in_one_line_and_status_failed(tmp_path, medmnist_dir, monkeypatch, capsys):
    import errno

    import train
    from medscope import atomic

    real = atomic.write_csv

    def full_disk(path, *args, **kwargs):
        if str(path).endswith("history.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(atomic, "write_csv", full_disk)
    code = cli.run(train.main, [*TRAIN[:6], "--epochs", "1", "--data-dir", str(medmnist_dir),
                                "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT and err.startswith("error: No space left on device") and err.count("\n") == 1
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["status"] == "failed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; run as a normal user")
def test_a_read_only_results_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code = cli.run(lambda argv: runs.create_run(folder, tmp_path / "runs", "x") and 0, [])
    finally:
        folder.chmod(0o700)
    assert code == cli.EXIT_BAD_INPUT and "Permission denied" in capsys.readouterr().err


# ---------------------------------------------------------------- Ctrl-C while a script starts

SCRIPT_ARGS = {
    "train.py": ["--dataset", "breastmnist", "--model", "cnn", "--epochs", "30"],
    "analyze_inference.py": [], "analyze_complexity.py": [], "explain.py": ["gradcam"], "quantize.py": [],
    "export_scalars.py": [], "compare.py": ["0001"], "report.py": [],
    "run_tool.py": ["--pipeline", "--dataset", "breastmnist"],
}


@pytest.mark.parametrize("script", sorted(SCRIPT_ARGS))
def test_every_script_imports_the_error_boundary_before_anything_else_of_its_own(script):
    """What makes Ctrl-C during the imports one line: ``medscope.app.cli`` installs its handlers when imported,
    so it must be the script's first import beyond the standard library (the test below sends the signal)."""
    import ast

    tree = ast.parse((ROOT / script).read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    own = [node for node in imports if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
           and (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name).split(".")[0]
           not in sys.stdlib_module_names]
    first = own[0]
    assert isinstance(first, ast.ImportFrom) and first.module == "medscope.app" and first.names[0].name == "cli"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "explain.py", "report.py"])  # the heaviest imports, and the lightest
def test_ctrl_c_while_a_script_imports_is_one_line_and_130(tmp_path, script):
    """SIGINT during the seconds of importing torch and the analysis modules: no traceback.

    (Python's own start-up, before the script's first line runs, is not covered: about 20 ms.)
    """
    for delay in (0.4, 1.2):
        proc = subprocess.Popen([sys.executable, str(ROOT / script), *SCRIPT_ARGS[script],
                                 "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, (delay, err)
        if proc.returncode == cli.EXIT_INTERRUPTED:
            assert err.strip().splitlines()[-1] == "interrupted"
        else:  # it got as far as saying what is wrong with its (empty) results folder
            assert err.startswith("error: ") and err.endswith("\n"), (delay, err)
            # exit 2, or, when the signal lands while the interpreter shuts down (Python restores the
            # default handler there), death by SIGINT, which a shell reports as 130
            assert proc.returncode in (cli.EXIT_BAD_INPUT, -signal.SIGINT), (delay, proc.returncode, err)
        assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.tmp"))


# ---------------------------------------------------------------- a read-only or full results folder, per script

def _script_cases(name: str) -> dict:
    """Each script's command on run ``name`` (small settings: the point is where it writes)."""
    run = ["--run", name]
    return {
        "train.py": ["--dataset", "breastmnist", "--model", "cnn", "--epochs", "1", "--subset", "32"],
        "analyze_inference.py": [*run, "--tsne-points", "5"],
        "analyze_complexity.py": run,
        "explain.py gradcam": ["gradcam", *run, "--n", "2", "--steps", "2"],
        "explain.py saliency": ["saliency", *run, "--n", "2", "--steps", "2", "--samples", "2"],
        "explain.py uncertainty": ["uncertainty", *run, "--passes", "2"],
        "explain.py robustness": ["robustness", *run, "--perturbations", "gaussian_noise", "--severities", "1",
                                  "--n-saliency", "0", "--n-examples", "0"],
        "explain.py calibrate": ["calibrate", *run, "--bootstrap", "50"],
        "quantize.py": [*run, "--calib", "4", "--test-subset", "8", "--runs", "1", "--warmup", "1",
                        "--throughput-runs", "1"],
        "export_scalars.py": run,
        "compare.py": [name, "--bootstrap", "50"],
        "report.py": run,
    }


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, medmnist_dir):
    from tests.conftest import train_run

    return train_run(tmp_path_factory.mktemp("disk"), medmnist_dir, "--dataset", "breastmnist", "--model", "cnn",
                     "--epochs", "1", "--subset", "32", "--bootstrap", "50")


def _mount_small_filesystem(where, size_kb: int) -> None:
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small file system here ({done.stderr.strip() or 'mount failed'}); "
                    "run as root to test a full and a read-only disk")


def _folder_size_kb(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024


@pytest.fixture(params=["read-only", "full"])
def hostile_disk(request, small_run, tmp_path):
    """The run (and its TensorBoard folder) on a file system that is read-only, or full to the last byte."""
    import shutil

    mount = tmp_path / "disk"
    events = small_run.parent.parent / "runs" / small_run.name
    _mount_small_filesystem(mount, _folder_size_kb(small_run) + _folder_size_kb(events) + 512)
    try:
        shutil.copytree(small_run, mount / "results" / small_run.name)
        shutil.copytree(events, mount / "runs" / small_run.name)
        if request.param == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        else:
            with open(mount / "filler", "wb") as fh:  # take every byte left
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError:
                    pass
            try:
                with open(mount / "filler", "ab") as fh:
                    while True:
                        fh.write(b"\0")
                        fh.flush()
            except OSError:
                pass
        yield request.param, mount / "results", mount / "runs", small_run.name
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_every_script_on_a_read_only_or_full_disk_ends_in_one_line(hostile_disk, medmnist_dir, capsys):
    import importlib

    kind, results, runs_dir, name = hostile_disk
    expected = {"read-only": "Read-only file system", "full": "No space left on device"}[kind]
    before = (results / name / "run.json").read_text()
    for label, argv in _script_cases(name).items():
        main = importlib.import_module(label.split()[0].removesuffix(".py")).main
        code = cli.run(main, [*argv, "--results-dir", str(results), "--runs-dir", str(runs_dir),
                              "--data-dir", str(medmnist_dir), "--device", "cpu"])
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
        assert code == cli.EXIT_BAD_INPUT, (label, err)
        assert "Traceback" not in err and len(lines) == 1 and expected in lines[0], (label, err)
        assert (results / name / "run.json").read_text() == before, label  # the run's record is intact
        leftovers = [p for p in results.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".export-")]
        assert leftovers == [], (label, leftovers)


# ---------------------------------------------------------------- issue 27: hostile names in Markdown, numeric flags
# out of range, hostile pixels for predict_onnx.py

SCRIPT_PAYLOAD = "<script>alert(1)</script>"
IMG_PAYLOAD = "`<img src=x onerror=alert(1)>`"
HOSTILE_NAME = f"0098_{IMG_PAYLOAD}|x"  # a folder may be named anything but '/'
HOSTILE_CLASSES = [SCRIPT_PAYLOAD, f"{IMG_PAYLOAD} | b\nc"]


def _rename_hostile(run, name: str = HOSTILE_NAME):
    """``run`` (a copy) renamed to ``name``, its run.json and metrics.json holding hostile class names,
    data folder and command, as a run folder from someone else may."""
    from medscope.runs import RunLayout

    hostile = run.rename(run.with_name(name))
    layout = RunLayout(hostile)
    record = json.loads(layout.run_json.read_text())
    record["name"] = name
    record["dataset"]["class_names"] = HOSTILE_CLASSES
    record["config"]["data_dir"] = f"/data/{SCRIPT_PAYLOAD}"
    record["config"]["command"] = f"python train.py --data-dir '/data/{SCRIPT_PAYLOAD}' --run-name '{IMG_PAYLOAD}|x'"
    layout.run_json.write_text(json.dumps(record))
    metrics = json.loads(layout.metrics_json.read_text())
    metrics["class_names"] = HOSTILE_CLASSES
    metrics["test"]["per_class"] = dict(zip(HOSTILE_CLASSES, metrics["test"]["per_class"].values()))
    layout.metrics_json.write_text(json.dumps(metrics))
    return hostile


@pytest.fixture(scope="module")
def hostile_run(run_2d, tmp_path_factory):
    """A copy of run_2d under a hostile name, with hostile class names, data folder and command."""
    from tests.conftest import copy_run

    return _rename_hostile(copy_run(run_2d, tmp_path_factory.mktemp("hostile-names")))


class _Rendered:
    """What a Markdown viewer shows: the HTML elements (with attributes), table shapes and the visible text."""

    def __init__(self, text: str):
        from html.parser import HTMLParser

        import markdown

        elements, words, rows = [], [], []

        class Reader(HTMLParser):
            def handle_starttag(self, tag, attrs):
                elements.append((tag, dict(attrs)))
                if tag == "tr":
                    rows.append(0)
                elif tag in ("td", "th"):
                    rows[-1] += 1

            def handle_data(self, data):
                words.append(data)

        Reader().feed(markdown.markdown(text, extensions=["tables", "fenced_code"]))
        self.elements, self.text, self.row_widths = elements, "".join(words), rows

    def live_markup(self) -> list:
        """Elements a payload could have made: any script, any image but a file of the folder."""
        return [(tag, attrs) for tag, attrs in self.elements
                if tag == "script" or (tag == "img" and not str(attrs.get("src", "")).endswith(".png"))
                or any(name.startswith("on") for name in attrs)]


def _assert_shown_literally(path, *expected: str) -> _Rendered:
    raw = path.read_text()
    assert "<script" not in raw and "<img" not in raw and IMG_PAYLOAD not in raw, path.name
    assert f"{IMG_PAYLOAD}|x" not in raw  # its backticks and pipe are escaped too
    shown = _Rendered(raw)
    assert shown.live_markup() == [], (path.name, shown.live_markup())
    for text in expected:
        assert text in shown.text, (path.name, text)
    return shown


@pytest.mark.parametrize("value", [
    SCRIPT_PAYLOAD, IMG_PAYLOAD, f"{IMG_PAYLOAD}|x", "a | b || c", "two\nlines\n\n<script>x</script>", "tab\there\r",
    "*bold* _em_ __strong__ ~~gone~~ [link](javascript:alert(1)) ![i](x.png)", "# heading {: onclick=alert(1)}",
    "back\\slash \\<b> &lt;b&gt; &amp;", "``` fenced", "<!-- comment", "0007_breastmnist28_resnet18", "",
])
def test_markdown_text_and_code_show_any_value_literally_also_in_a_table(value):
    """The helpers every Markdown writer uses: rendered, the value reads as typed (control characters as their
    pictures), makes no element of its own and keeps a table row one row of two cells."""
    from medscope.report_text import markdown_code, markdown_code_block, markdown_text

    visible = "".join(chr(0x2400 + ord(c)) if ord(c) < 32 else c for c in value)
    for line in (f"- {markdown_text(value)}", f"- {markdown_code(value)}", "\n".join(markdown_code_block(value))):
        shown = _Rendered(line)
        assert visible.strip() in shown.text and [tag for tag, _ in shown.elements if tag not in
                                                  ("ul", "li", "p", "pre", "code")] == [], (line, shown.elements)
    table = _Rendered(f"| name | n |\n|---|---|\n| {markdown_text(value)} | 1 |")
    assert table.row_widths == [2, 2] and visible.strip() in table.text


@pytest.mark.slow
def test_model_card_and_comparison_show_hostile_names_literally(hostile_run, run_2d, capsys):
    """A run name, class names, data folder and command holding HTML, backticks, pipes and a newline are
    text in model_card.md and comparison.md: no live element, every table row as wide as its header."""
    import compare
    import report
    from tests.conftest import copy_run

    results = hostile_run.parent
    plain = copy_run(run_2d, results.parent)
    folders = ["--results-dir", str(results), "--runs-dir", str(results.parent / "runs")]
    assert cli.run(report.main, ["--run", str(hostile_run), *folders]) == 0
    card = _assert_shown_literally(hostile_run / "model_card.md", HOSTILE_NAME, SCRIPT_PAYLOAD,
                                   f"{IMG_PAYLOAD} | b\u240ac", f"--data-dir '/data/{SCRIPT_PAYLOAD}'")
    assert len(set(card.row_widths)) == 1  # the per-class table: every row has the header's columns
    out = results.parent / "comparison"
    assert cli.run(compare.main, [*folders, str(hostile_run), str(plain), "--baseline", str(plain),
                                  "--bootstrap", "20", "--out", str(out)]) == 0
    shown = _assert_shown_literally(out / "comparison.md", HOSTILE_NAME)
    assert shown.text.count(HOSTILE_NAME) >= 2  # the runs table and the tests table
    assert all(width in (4, 6, 8, 9) for width in shown.row_widths), shown.row_widths  # no row split by a '|'
    capsys.readouterr()


@pytest.mark.slow
def test_the_analysis_reports_show_a_hostile_run_name_literally(hostile_run, medmnist_dir, capsys):
    """uncertainty_report.md, calibration_report.md and robustness_report.md of the hostile run."""
    import explain
    from medscope.runs import RunLayout

    common = ["--run", str(hostile_run), "--results-dir", str(hostile_run.parent), "--data-dir", str(medmnist_dir),
              "--runs-dir", str(hostile_run.parent.parent / "runs"), "--device", "cpu"]
    for argv in (["uncertainty", "--passes", "2", "--threshold", "0.5", "--bootstrap", "20"],
                 ["calibrate", "--bootstrap", "20"],
                 ["robustness", "--perturbations", "gaussian_noise", "--severities", "1", "--n-saliency", "0",
                  "--n-examples", "0", "--bootstrap", "0"]):
        assert cli.run(explain.main, [*argv, *common]) == 0, capsys.readouterr().err
    layout = RunLayout(hostile_run)
    for report in (layout.uncertainty_dir / "uncertainty_report.md", layout.calibration_dir / "calibration_report.md",
                   layout.robustness_dir / "robustness_report.md"):
        _assert_shown_literally(report, HOSTILE_NAME)


NUMERIC_BASE = {  # each command's other arguments: the bad flag must be what stops it
    "train.py": ["--dataset", "breastmnist"], "analyze_inference.py": [], "analyze_complexity.py": [],
    "explain.py gradcam": ["gradcam"], "explain.py saliency": ["saliency"], "explain.py uncertainty": ["uncertainty"],
    "explain.py robustness": ["robustness"], "explain.py calibrate": ["calibrate"], "quantize.py": [],
    "compare.py": ["0001"], "report.py": [], "export_scalars.py": [], "run_tool.py": ["--pipeline", "--dataset",
                                                                                      "breastmnist"],
}
HUGE = str(10**20)
NUMERIC_CASES = [
    ("train.py", "--workers", "100000000000"), ("train.py", "--workers", "1e11"), ("train.py", "--bootstrap", "1e20"),
    ("train.py", "--bootstrap", HUGE), ("train.py", "--batch-size", "1e20"), ("train.py", "--batch-size", HUGE),
    ("train.py", "--lr", "1e300"), ("train.py", "--lr", "0"), ("train.py", "--lr", "nan"),
    ("train.py", "--warmup-epochs", "1e308"), ("train.py", "--epochs", HUGE), ("train.py", "--patience", HUGE),
    ("train.py", "--subset", HUGE), ("train.py", "--weight-decay", "1e300"), ("train.py", "--mixup", "inf"),
    ("train.py", "--clip-grad", "1e300"), ("train.py", "--dist-timeout", "1e308"), ("train.py", "--seed", str(2**70)),
    ("train.py", "--seed", "-1"), ("train.py", "--seeds", "-1"), ("train.py", "--seeds", str(2**32)),
    ("analyze_inference.py", "--bins", HUGE), ("analyze_inference.py", "--batch-size", HUGE),
    ("analyze_inference.py", "--tsne-points", HUGE), ("analyze_inference.py", "--seed", str(2**70)),
    ("analyze_complexity.py", "--workers", "100000000000"), ("analyze_complexity.py", "--bins", HUGE),
    ("analyze_complexity.py", "--m", "1000000"), ("analyze_complexity.py", "--r-factor", "1e300"),
    ("analyze_complexity.py", "--seed", "-1"),
    ("explain.py gradcam", "--steps", HUGE), ("explain.py gradcam", "--n", HUGE),
    ("explain.py gradcam", "--batch-size", "1e20"), ("explain.py gradcam", "--max-figures", "-1"),
    ("explain.py gradcam", "--ids", "-1"), ("explain.py gradcam", "--seed", str(2**70)),
    ("explain.py saliency", "--samples", "1e20"), ("explain.py saliency", "--samples", HUGE),
    ("explain.py saliency", "--noise", "1e300"), ("explain.py saliency", "--seed", "-1"),
    ("explain.py uncertainty", "--passes", "1e20"), ("explain.py uncertainty", "--passes", HUGE),
    ("explain.py uncertainty", "--bootstrap", HUGE), ("explain.py uncertainty", "--seed", str(2**70)),
    ("explain.py robustness", "--bootstrap", HUGE), ("explain.py robustness", "--n-saliency", HUGE),
    ("explain.py robustness", "--n-examples", "1000000"), ("explain.py robustness", "--seed", "-1"),
    ("explain.py calibrate", "--bins", "1e20"), ("explain.py calibrate", "--bootstrap", HUGE),
    ("explain.py calibrate", "--batch-size", HUGE), ("explain.py calibrate", "--seed", str(2**70)),
    ("quantize.py", "--threads", "1000000"), ("quantize.py", "--batch-size", "1e20"), ("quantize.py", "--runs", HUGE),
    ("quantize.py", "--warmup", HUGE), ("quantize.py", "--throughput-runs", HUGE), ("quantize.py", "--calib", HUGE),
    ("quantize.py", "--test-subset", HUGE), ("quantize.py", "--seed", "-1"), ("quantize.py", "--seed", str(2**70)),
    ("compare.py", "--bootstrap", HUGE), ("compare.py", "--seed", str(2**70)),
    ("report.py", "--bootstrap", HUGE), ("report.py", "--max-width", HUGE), ("report.py", "--seed", "-1"),
    ("export_scalars.py", "--seed", "-1"), ("run_tool.py", "--epochs", HUGE), ("run_tool.py", "--subset", HUGE),
    ("run_tool.py", "--seeds", str(2**70)),
]


def _main_of(command: str):
    import importlib

    return importlib.import_module(command.split()[0].removesuffix(".py")).main


@pytest.mark.parametrize("command, flag, value", NUMERIC_CASES)
def test_a_numeric_flag_out_of_range_is_one_line_and_exit_2_before_any_folder(tmp_path, capsys, command, flag, value):
    from tests.conftest import one_line_error

    argv = [*NUMERIC_BASE[command], flag, value, "--results-dir", str(tmp_path / "results"),
            "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]
    assert cli.run(_main_of(command), argv) == cli.EXIT_BAD_INPUT
    one_line_error(capsys, f"argument {flag}: expected")
    assert list(tmp_path.iterdir()) == []  # no results or TensorBoard folder, no run folder


@pytest.mark.parametrize("command, flag, value", [
    ("train.py", "--workers", "100000000000"), ("train.py", "--seed", str(2**70)), ("train.py", "--batch-size", HUGE),
    ("quantize.py", "--threads", "1000000"), ("explain.py uncertainty", "--passes", "1e20"),
])
def test_a_numeric_flag_out_of_range_ends_a_real_process_in_one_line(tmp_path, command, flag, value):
    script, *sub = command.split()
    done = subprocess.run([sys.executable, str(ROOT / script), *sub, *NUMERIC_BASE[command][len(sub):], flag, value,
                           "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == cli.EXIT_BAD_INPUT and done.stdout == ""
    assert done.stderr.count("\n") == 1 and f"argument {flag}: expected" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def _option_flags(parser, base) -> set:
    """The flags of ``parser`` (of its subcommand, for explain.py)."""
    actions = parser._actions
    sub = next((a for a in actions if a.dest == "command"), None)
    if sub is not None:
        actions = sub.choices[base[0]]._actions
    return {flag for action in actions for flag in action.option_strings}


def test_the_ends_of_every_range_are_accepted():
    """The bounds are inclusive: the largest seed numpy takes, the most workers, resamples, threads, ..."""
    import importlib

    from medscope import limits

    top = {"--seed": limits.SEED_MAX, "--workers": limits.WORKERS_MAX, "--bootstrap": limits.RESAMPLES_MAX,
           "--batch-size": limits.BATCH_SIZE_MAX, "--threads": limits.THREADS_MAX, "--passes": limits.PASSES_MAX,
           "--samples": limits.SAMPLES_MAX, "--steps": limits.STEPS_MAX, "--bins": limits.BINS_MAX,
           "--lr": limits.LR_MAX, "--warmup-epochs": limits.EPOCHS_MAX, "--epochs": limits.EPOCHS_MAX}
    for command, base in NUMERIC_BASE.items():
        parser = importlib.import_module(command.split()[0].removesuffix(".py")).get_args_parser()
        flags = _option_flags(parser, base)
        argv = [*base, *(part for flag, value in top.items() if flag in flags for part in (flag, str(value)))]
        parsed = parser.parse_args(argv)
        assert parsed.seed == limits.SEED_MAX, command
        assert all(getattr(parsed, flag[2:].replace("-", "_")) == value for flag, value in top.items()
                   if flag in flags), command


@pytest.fixture(scope="module")
def exported_hostile(hostile_run, medmnist_dir):
    """The hostile run exported by quantize.py (small settings): its export/ folder."""
    import quantize
    from medscope.runs import RunLayout

    assert cli.run(quantize.main, ["--run", str(hostile_run), "--results-dir", str(hostile_run.parent),
                                   "--runs-dir", str(hostile_run.parent.parent / "runs"),
                                   "--data-dir", str(medmnist_dir), "--device", "cpu", "--calib", "4",
                                   "--test-subset", "8", "--runs", "1", "--warmup", "1", "--throughput-runs", "1",
                                   "--batch-size", "2"]) == 0
    return RunLayout(hostile_run).export_dir


HOSTILE_PIXELS = {  # name: (the array, made with numpy; what the one line says)
    "one_nan": (lambda np: np.where(np.arange(784).reshape(28, 28) == 60, np.nan, 100).astype(np.float32),
                "1 pixel value(s) are not finite"),
    "inf": (lambda np: np.full((1, 28, 28), np.inf), "784 pixel value(s) are not finite"),
    "beyond_float32": (lambda np: np.full((28, 28), 1e300), "pixel values span 1e+300..1e+300; expected raw"),
    "complex": (lambda np: np.full((28, 28), 100 + 5j), "got dtype complex128"),
    "bool": (lambda np: np.ones((28, 28), bool), "got dtype bool"),
    "object": (lambda np: np.array([[1, 2]], dtype=object), "is not a readable .npy file"),
    "text": (lambda np: np.full((28, 28), "x"), "got dtype <U1"),
    "timedelta": (lambda np: np.zeros((28, 28), "m8[s]"), "got dtype timedelta64[s]"),
    "wrong_shape": (lambda np: np.zeros((3, 28, 28, 2), np.uint8), "is not a 1-channel 28 x 28 image"),
    "scalar": (lambda np: np.float32(7), "array of shape () is not a 1-channel"),
    "empty": (lambda np: np.zeros((0, 28, 28), np.uint8), "holds no images"),
    "truncated": (lambda np: np.zeros((28, 28), np.uint8), "is not a readable .npy file"),  # cut after 100 bytes
}


@pytest.mark.slow
def test_the_export_report_shows_a_hostile_run_name_literally(exported_hostile):
    _assert_shown_literally(exported_hostile / "export_report.md", HOSTILE_NAME)
    done = subprocess.run([sys.executable, str(exported_hostile / "predict_onnx.py"),
                           str(exported_hostile / "example_input.npy")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "(probability " in done.stdout, done.stderr  # good pixels are still classified


@pytest.mark.slow
@pytest.mark.parametrize("name", HOSTILE_PIXELS)
def test_predict_onnx_refuses_hostile_pixels_in_one_line(exported_hostile, tmp_path, name):
    """The script written beside the ONNX model: a NaN pixel, a complex, object or bool array, a wrong shape
    is one line and exit 2, never a 'probability nan' or a silently dropped imaginary part."""
    import numpy as np

    make, message = HOSTILE_PIXELS[name]
    path = tmp_path / f"{name}.npy"
    np.save(path, make(np), allow_pickle=name == "object")
    if name == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    done = subprocess.run([sys.executable, str(exported_hostile / "predict_onnx.py"), str(path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


# ---------------------------------------------------------------- issue 27: an analysis folder is written as a whole

ANALYSIS_FOLDERS = {"analyze_inference.py": "inference", "analyze_complexity.py": "complexity",
                    "explain.py gradcam": "gradcam", "explain.py saliency": "saliency",
                    "explain.py uncertainty": "uncertainty", "explain.py robustness": "robustness",
                    "explain.py calibrate": "calibration", "quantize.py": "export"}

# A real process of the command that stops itself at a chosen moment of its write phase: "write" and "kill" send
# SIGTERM or SIGKILL as the second file of the new folder is about to be written, "swap" sends SIGTERM while the
# new folder is swapped in and recorded. (Every file is written through medscope.atomic.atomic_path.)
INTERRUPTING_DRIVER = """
import importlib, os, signal, sys
from pathlib import Path
from medscope.app import cli
from medscope import atomic, runs

label, folder, moment, *argv = sys.argv[1:]
if moment == "swap":
    record = runs.Run.record_folder

    def record_folder(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return record(self, *args, **kwargs)

    runs.Run.record_folder = record_folder
else:
    write, staged = atomic.atomic_path, []

    def atomic_path(path):
        if any(part.startswith(f".{folder}.{os.getpid()}.") for part in Path(path).parts):
            staged.append(path)
            if len(staged) == 2:
                os.kill(os.getpid(), signal.SIGKILL if moment == "kill" else signal.SIGTERM)
        return write(path)

    atomic.atomic_path = atomic_path
main = importlib.import_module(label.split()[0].removesuffix(".py")).main
sys.exit(cli.run(main, argv))
"""


def _analysis_main(label: str):
    import importlib

    return importlib.import_module(label.split()[0].removesuffix(".py")).main


def _analysed_copy(small_run, tmp_path, medmnist_dir, label: str) -> tuple:
    """A private copy of small_run after one complete call of ``label``: (run folder, the call's argv)."""
    import shutil

    run = tmp_path / "results" / small_run.name
    shutil.copytree(small_run, run)
    argv = [*_script_cases(small_run.name)[label], "--results-dir", str(run.parent), "--runs-dir",
            str(tmp_path / "runs"), "--data-dir", str(medmnist_dir), "--device", "cpu"]
    assert cli.run(_analysis_main(label), argv) == 0
    return run, argv


def _analysis_state(run, folder: str) -> tuple[dict, list]:
    """Every file of the analysis folder (bytes) and run.json's records of it."""
    files = {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / folder).rglob("*")) if p.is_file()}
    records = sorted((a["path"], a["created_by"], a["created"]) for a in runs.Run(run).info()["artifacts"]
                     if a["path"].startswith(f"{folder}/"))
    return files, records


def _assert_whole(run, folder: str) -> None:
    """No staging or set-aside folder is left, run.json records exactly the folder's files, and the report
    shows no analysis file that run.json does not record."""
    from medscope.report.build import build_run_report

    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    files, records = _analysis_state(run, folder)
    assert sorted(files) == [path for path, _, _ in records]
    recorded = {a["path"] for a in runs.Run(run).info()["artifacts"]}
    shown = {f.path.relative_to(run).as_posix() for f in build_run_report(run).figures}
    assert {path for path in shown if "/" in path} <= recorded


def _interrupt(label: str, argv: list, moment: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", INTERRUPTING_DRIVER, label, ANALYSIS_FOLDERS[label], moment, *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(ANALYSIS_FOLDERS))
def test_sigterm_while_an_analysis_writes_its_folder_leaves_the_previous_folder_whole(label, small_run, tmp_path,
                                                                                      medmnist_dir):
    """Run once to completion, then again, stopped by SIGTERM in the middle of writing: the folder is the first
    call's, byte for byte, with the first call's records (never new tables beside old figures, or a new FP32
    ONNX beside old INT8 models)."""
    run, argv = _analysed_copy(small_run, tmp_path, medmnist_dir, label)
    folder = ANALYSIS_FOLDERS[label]
    before = _analysis_state(run, folder)
    done = _interrupt(label, argv, "write", tmp_path)
    assert done.returncode == cli.EXIT_TERMINATED and done.stderr.strip().endswith("terminated"), done.stderr[-2000:]
    assert _analysis_state(run, folder) == before
    _assert_whole(run, folder)


@pytest.mark.slow
def test_sigterm_while_the_new_folder_is_swapped_in_lands_after_it(small_run, tmp_path, medmnist_dir):
    """The swap and its record are held together: a SIGTERM arriving then ends the process once the new folder
    is in place and recorded."""
    label = "explain.py robustness"
    run, argv = _analysed_copy(small_run, tmp_path, medmnist_dir, label)
    before_files, before_records = _analysis_state(run, "robustness")
    done = _interrupt(label, argv, "swap", tmp_path)
    assert done.returncode == cli.EXIT_TERMINATED, done.stderr[-2000:]
    files, records = _analysis_state(run, "robustness")
    assert sorted(files) == sorted(before_files) and records != before_records  # the new call's, whole
    _assert_whole(run, "robustness")


@pytest.mark.slow
def test_a_staging_folder_of_a_killed_analysis_is_removed_by_the_next_command(small_run, tmp_path, medmnist_dir,
                                                                              capsys):
    label = "explain.py robustness"
    run, argv = _analysed_copy(small_run, tmp_path, medmnist_dir, label)
    before = _analysis_state(run, "robustness")
    done = _interrupt(label, argv, "kill", tmp_path)
    assert done.returncode == -signal.SIGKILL
    (staging,) = [p for p in run.iterdir() if p.name.endswith(".tmp")]  # SIGKILL: nothing could remove it
    assert staging.name.startswith(".robustness.") and _analysis_state(run, "robustness") == before
    import report

    assert cli.run(report.main, ["--run", run.name, "--results-dir", str(run.parent)]) == 0
    assert not staging.exists() and _analysis_state(run, "robustness") == before
    _assert_whole(run, "robustness")


@pytest.mark.slow
@pytest.mark.parametrize("label", ["explain.py robustness", "explain.py calibrate", "quantize.py"])
def test_a_disk_that_fills_while_an_analysis_writes_leaves_the_previous_folder_whole(label, small_run, tmp_path,
                                                                                     medmnist_dir, monkeypatch,
                                                                                     capsys):
    """A real small file system that fills up (to the last byte) as the second file of the new folder is
    written: one line, exit 2, and the first call's folder and records as they were."""
    import shutil
    from pathlib import Path

    from medscope import atomic

    first, argv = _analysed_copy(small_run, tmp_path / "first", medmnist_dir, label)
    mount = tmp_path / "disk"
    _mount_small_filesystem(mount, 2 * _folder_size_kb(first) + 4096)
    try:
        run = mount / "results" / first.name
        shutil.copytree(first, run)
        folder = ANALYSIS_FOLDERS[label]
        before = _analysis_state(run, folder)
        write, staged = atomic.atomic_path, []

        def fill_the_disk_then_write(path):
            if any(part.startswith(f".{folder}.{os.getpid()}.") for part in Path(path).parts):
                staged.append(path)
                if len(staged) == 2:
                    _fill(mount / "filler")
            return write(path)

        monkeypatch.setattr(atomic, "atomic_path", fill_the_disk_then_write)
        argv = [*argv[:argv.index("--results-dir")], "--results-dir", str(run.parent), "--runs-dir",
                str(mount / "runs"), "--data-dir", str(medmnist_dir), "--device", "cpu"]
        code = cli.run(_analysis_main(label), argv)
        err = capsys.readouterr().err
        assert code == cli.EXIT_BAD_INPUT and "No space left on device" in err and "Traceback" not in err, err
        assert len(staged) >= 2 and _analysis_state(run, folder) == before
        _assert_whole(run, folder)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path) -> None:
    """Take every byte left on the file system of ``path``."""
    with open(path, "ab") as fh:
        for block in (65536, 1):
            try:
                while True:
                    fh.write(b"\0" * block)
                    fh.flush()
            except OSError:
                pass


def test_the_report_shows_no_analysis_file_that_run_json_does_not_record(small_run, tmp_path, medmnist_dir):
    """A figure in an analysis folder that no call recorded (one an interrupted older version left, a copy
    by hand) is not this run's result: the report leaves it out."""
    import shutil

    from medscope.report.build import build_run_report

    run, _ = _analysed_copy(small_run, tmp_path, medmnist_dir, "explain.py robustness")
    (recorded,) = [f.path for f in build_run_report(run).figures if f.path.name.startswith("robustness_measures")]
    shutil.copyfile(recorded, run / "robustness" / "robustness_examples_00099.png")
    shutil.copyfile(recorded, run / "robustness" / "stray_figure.png")
    shown = [f.path.name for f in build_run_report(run).figures]
    assert recorded.name in shown and "robustness_examples_00099.png" not in shown and "stray_figure.png" not in shown


# ---------------------------------------------------------------- issue 27: the run lifecycle, resume and damaged files

FOLDER_FLAGS = ("--results-dir", "--runs-dir", "--data-dir")


def _folders(tmp_path, medmnist_dir, runs_dir=None) -> list[str]:
    return ["--results-dir", str(tmp_path / "results"), "--runs-dir", str(runs_dir or tmp_path / "runs"),
            "--data-dir", str(medmnist_dir), "--device", "cpu"]


def _stopped_run(tmp_path, medmnist_dir, monkeypatch, *, epochs: int, stop_in: int):
    """A cnn run stopped by Ctrl-C in epoch ``stop_in`` of ``epochs`` (``stop_in - 1`` epochs saved): its Run."""
    from tests.conftest import interrupted_run

    folder, _ = interrupted_run(tmp_path, medmnist_dir, monkeypatch, stop_in, *TRAIN[:6], "--epochs", str(epochs),
                                "--bootstrap", "0", "--device", "cpu")
    return runs.Run(folder)


def _train_process(*args) -> list[str]:
    return [sys.executable, "-u", str(ROOT / "train.py"), *args]


def _event_files(folder) -> dict:
    return {p.name: p.stat().st_size for p in folder.iterdir()} if folder.is_dir() else {}


def test_resume_writes_its_events_under_the_runs_dir_it_is_given(tmp_path, medmnist_dir, monkeypatch):
    import train
    from medscope.analysis.scalars import read_run

    run = _stopped_run(tmp_path, medmnist_dir, monkeypatch, epochs=2, stop_in=2)
    first = run.layout.tensorboard_dir(tmp_path / "runs")
    before = _event_files(first)
    other = tmp_path / "other-runs"
    assert cli.run(train.main, ["--resume", run.name, *_folders(tmp_path, medmnist_dir, other)]) == 0
    assert _event_files(first) == before  # the first folder is not written to any more
    info = run.info()
    moved = run.layout.tensorboard_dir(other)
    assert info["tensorboard_dir"] == str(moved) and info["config"]["runs_dir"] == str(other)
    steps = sorted(p.step for p in read_run(run, other) if p.tag == "loss/train")
    assert steps == [1, 2]  # the epoch before the interruption was carried over, the resumed one written there


@pytest.mark.slow
def test_two_trainers_of_one_run_the_second_is_refused_while_the_first_holds_it(tmp_path, medmnist_dir, monkeypatch):
    run = _stopped_run(tmp_path, medmnist_dir, monkeypatch, epochs=30, stop_in=2)
    resume = _train_process("--resume", run.name, *_folders(tmp_path, medmnist_dir))
    first = subprocess.Popen(resume, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not (line := first.stdout.readline()).startswith("resuming"):
            assert line, f"the first resume ended early: {first.stderr.read()}"
        second = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert second.returncode == cli.EXIT_BAD_INPUT and second.stdout == ""
        assert second.stderr == (f"error: {run.name} is being trained by pid {first.pid}; "
                                 "wait for it to end, or stop it first\n")
        assert run.status() == "running"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == cli.EXIT_TERMINATED and run.status() == "interrupted"
    assert not (run.path / runs.TRAINING_LOCK).exists()  # the lock goes with its trainer


def test_resume_takes_epochs_as_the_new_total_and_refuses_every_other_training_flag(tmp_path, medmnist_dir,
                                                                                    monkeypatch, capsys):
    import train
    from tests.conftest import history, one_line_error

    run = _stopped_run(tmp_path, medmnist_dir, monkeypatch, epochs=3, stop_in=3)  # 2 epochs saved
    folders = _folders(tmp_path, medmnist_dir)
    capsys.readouterr()
    for flag, value in (("--lr", "0.1"), ("--seed", "3"), ("--subset", "10"), ("--no-amp", None)):
        argv = ["--resume", run.name, flag, *([value] if value else []), *folders]
        assert cli.run(train.main, argv) == cli.EXIT_BAD_INPUT
        one_line_error(capsys, f"does not take {flag}; it accepts --epochs, --data-dir, --results-dir, --runs-dir")
    assert cli.run(train.main, ["--resume", run.name, "--epochs", "1", *folders]) == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "--epochs 1: the run has already trained 2 epochs")
    assert run.info()["status"] == "interrupted"  # refused before anything was written

    assert cli.run(train.main, ["--resume", run.name, "--epochs", "4", *folders]) == 0
    assert "now trains to 4 epochs instead of 3" in capsys.readouterr().out
    info = run.info()
    assert (info["status"], info["epochs_completed"], info["config"]["epochs"]) == ("completed", 4, 4)
    assert [{k: v for k, v in change.items() if k != "at"} for change in info["epochs_changed"]] == \
        [{"from": 3, "to": 4, "after_epoch": 2}]
    assert [row["epoch"] for row in history(run.path)] == ["1", "2", "3", "4"]
    assert json.loads(run.layout.metrics_json.read_text())["epochs_run"] == 4

    assert cli.run(train.main, ["--resume", run.name, "--epochs", "6", *folders]) == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "completed 4 epochs and its results are final; train a new run with --epochs 6")
    assert "--epochs N trains on to N epochs" in " ".join(train.get_args_parser().format_help().split())


def _fill_to_the_last_byte(path) -> None:
    with open(path, "ab", buffering=0) as fh:  # unbuffered: nothing left over to fail at close
        for block in (1 << 16, 1):
            try:
                while True:
                    fh.write(b"\0" * block)
            except OSError:
                pass


@pytest.mark.slow
def test_a_disk_that_fills_during_training_leaves_the_status_failed(tmp_path, medmnist_dir, capsys):
    disk = tmp_path / "disk"
    _mount_small_filesystem(disk, 64 * 1024)
    try:
        proc = subprocess.Popen(_train_process(*TRAIN, "--data-dir", str(medmnist_dir), "--results-dir",
                                               str(disk / "results"), "--runs-dir", str(disk / "runs")),
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _after_first_epoch(proc)
        _fill_to_the_last_byte(disk / "filler")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == cli.EXIT_BAD_INPUT and "Traceback" not in err, err
        (error,) = [line for line in err.splitlines() if line.startswith("error: ")]
        assert "No space left on device" in error
        (run,) = runs.list_runs(disk / "results")
        info = run.info()
        assert "\n" not in run.layout.run_json.read_text().strip()  # compact: rewritten in its own blocks
        assert info["status"] == "failed" and run.status() == "failed" and "No space left" in info["failure"]
        assert info["epochs_completed"] >= 1 and run.layout.last_pt.is_file()
        cli.resolve_run(disk / "results", run.name)
        assert "stopped: failed" in capsys.readouterr().err  # not "killed"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_an_unexpected_error_before_the_first_epoch_leaves_no_run_folder(tmp_path, medmnist_dir, monkeypatch, capsys):
    import train

    def broken(*args, **kwargs):
        raise RuntimeError("a bug while building the model")

    monkeypatch.setattr("medscope.train.experiment.build_model", broken)
    assert cli.run(train.main, [*TRAIN[:6], "--epochs", "1", *_folders(tmp_path, medmnist_dir)]) == cli.EXIT_FAILURE
    assert "a bug while building the model" in capsys.readouterr().err
    assert list((tmp_path / "results").iterdir()) == [] and list((tmp_path / "runs").iterdir()) == []


def test_a_read_only_runs_dir_is_one_line_and_leaves_no_results_folder(tmp_path, medmnist_dir, capsys):
    import train
    from tests.conftest import one_line_error

    disk = tmp_path / "disk"
    _mount_small_filesystem(disk, 1024)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        argv = [*TRAIN[:6], "--epochs", "1", *_folders(tmp_path, medmnist_dir, disk / "runs")]
        assert cli.run(train.main, argv) == cli.EXIT_BAD_INPUT
        one_line_error(capsys, f"--runs-dir {disk / 'runs'}: Read-only file system")
        assert not (tmp_path / "results").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_reused_process_id_does_not_keep_a_dead_run_training(tmp_path, medmnist_dir, monkeypatch, capsys):
    import train
    from medscope.app.menu import run_state

    run = _stopped_run(tmp_path, medmnist_dir, monkeypatch, epochs=2, stop_in=2)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # killed, and its process id given to a newer process: alive, but started at another time
        run.update(status="running", pid=stranger.pid, pid_start=runs.process_start(os.getpid()))
        assert runs.process_start(stranger.pid) != runs.process_start(os.getpid())
        assert run.status() == "killed" and run_state(run, run.info()) == "killed"
        run.update(pid_start=runs.process_start(stranger.pid))  # that very process, which holds no training lock
        (run.path / runs.TRAINING_LOCK).touch()  # ... though trainers hold it: its trainer was killed
        assert run.status() == "killed"
        assert cli.run(train.main, ["--resume", run.name, *_folders(tmp_path, medmnist_dir)]) == 0
    finally:
        stranger.kill()
        stranger.wait()
    assert run.info()["status"] == "completed" and "pid_start" not in run.info()


@pytest.mark.slow
def test_sigterm_while_train_py_imports_is_one_line_and_143(tmp_path):
    for delay in (0.4, 1.2):
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *SCRIPT_ARGS["train.py"],
                                 "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == cli.EXIT_TERMINATED, (delay, proc.returncode, err)
        assert "Traceback" not in err and err.strip().splitlines()[-1] == "terminated", (delay, err)


@pytest.mark.slow
def test_a_reader_that_goes_away_does_not_fail_the_training(tmp_path, medmnist_dir):
    """``train.py ... | head -2``: the pipe closes after two lines; training goes on to the end."""
    command = " ".join([*_train_process(*TRAIN[:6], "--epochs", "3", "--bootstrap", "0",
                                        *_folders(tmp_path, medmnist_dir))])
    done = subprocess.run(["bash", "-c", f"{command} | head -2; exit ${{PIPESTATUS[0]}}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stderr.count("Traceback") == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    (run,) = runs.list_runs(tmp_path / "results")
    assert run.info()["status"] == "completed" and run.info()["epochs_completed"] == 3


def _damaged(small_run, tmp_path, damage: str):
    import shutil

    run = runs.Run(tmp_path / "results" / small_run.name)
    shutil.copytree(small_run, run.path)
    layout = run.layout
    if damage in ("empty best.pt", "empty last.pt"):
        layout.checkpoint(damage.split()[1].removesuffix(".pt")).write_bytes(b"")
    elif damage == "class_names 5":
        info = json.loads(layout.run_json.read_text())
        info["dataset"]["class_names"] = 5
        layout.run_json.write_text(json.dumps(info))
    elif damage.startswith("nested"):
        (layout.run_json if "run.json" in damage else layout.metrics_json).write_text("[" * 100_000)
    elif damage == "metrics as texts":
        def texts(value):
            if isinstance(value, dict):
                return {k: texts(v) for k, v in value.items()}
            if isinstance(value, list):
                return [texts(v) for v in value]
            return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

        layout.metrics_json.write_text(json.dumps(texts(json.loads(layout.metrics_json.read_text()))))
    return run


# damage -> {command: the one line it ends in (exit 2), or None: it completes (exit 0), saying what it passed over}
DAMAGED_FILES = {
    "empty best.pt": {"analyze_inference.py": None, "explain.py gradcam": "best.pt is empty (0 bytes)",
                      "quantize.py": "best.pt is empty (0 bytes)"},
    "empty last.pt": {"train.py --resume": "last.pt is empty (0 bytes)"},
    "class_names 5": {"report.py": "'dataset.class_names' should be a JSON list, found int",
                      "analyze_inference.py": "'dataset.class_names' should be a JSON list, found int"},
    "nested run.json": {command: "run.json is not a medscope run record: its JSON is nested too deeply"
                        for command in ("analyze_inference.py", "explain.py gradcam", "quantize.py", "report.py",
                                        "compare.py", "train.py --resume")},
    "nested metrics.json": {"report.py": None, "compare.py": None, "explain.py robustness": None},
    "metrics as texts": {"report.py": None, "explain.py robustness": None},
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGED_FILES))
def test_a_damaged_run_file_is_one_line_for_every_reader(damage, small_run, tmp_path, medmnist_dir, capsys):
    run = _damaged(small_run, tmp_path, damage)
    for label, message in DAMAGED_FILES[damage].items():
        argv = (["--resume", run.name] if label == "train.py --resume" else _script_cases(run.name)[label])
        main = __import__(label.split()[0].removesuffix(".py")).main
        code = cli.run(main, [*argv, *_folders(tmp_path, medmnist_dir)])
        err = capsys.readouterr().err
        assert "Traceback" not in err, (label, err)
        if message is None:
            assert code == 0, (label, err)
        else:
            (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
            assert code == cli.EXIT_BAD_INPUT and message in line, (label, err)
    if "metrics" in damage:  # the report was written, and says which file it passed over
        assert "could not read metrics.json" in run.layout.report_html.read_text(encoding="utf-8")


def test_a_truncated_memory_map_cache_is_extracted_again(tmp_path, medmnist_dir, monkeypatch):
    import numpy as np

    from medscope import data

    monkeypatch.setenv("MEDSCOPE_CACHE", str(tmp_path / "cache"))
    info = data.dataset_info("breastmnist")
    expected = data.load_split(info, medmnist_dir, "train", mmap=False).images.numpy()
    data.load_split(info, medmnist_dir, "train", mmap=True)
    (cached,) = (tmp_path / "cache").rglob("train_images.npy")
    whole = cached.stat().st_size
    with open(cached, "r+b") as fh:  # cut off, as a full disk or a killed copy leaves it
        fh.truncate(whole // 3)
    again = data.load_split(info, medmnist_dir, "train", mmap=True)
    assert cached.stat().st_size == whole and np.array_equal(again.images.numpy(), expected)
    # and end to end: train.py --memmap always on the damaged cache trains
    with open(cached, "r+b") as fh:
        fh.truncate(100)
    import train

    assert cli.run(train.main, [*TRAIN[:6], "--epochs", "1", "--bootstrap", "0", "--memmap", "always",
                                *_folders(tmp_path, medmnist_dir)]) == 0


# ---------------------------------------------------------------- issue 27: the suite keeps out of the user's folders

def test_a_script_left_to_its_default_folders_writes_into_the_tests_own_working_folder(away_from_the_users_folders,
                                                                                       medmnist_dir):
    """Without --results-dir and --runs-dir a script writes into results/ and runs/ of the working folder: in a
    test, the empty folder conftest gives each test process, never the one pytest was started from; and an
    analysis adds its TensorBoard figures to the folder the run's training wrote."""
    from pathlib import Path

    import analyze_inference
    import train

    here = away_from_the_users_folders
    assert Path.cwd() == here
    assert cli.run(train.main, ["--dataset", "breastmnist", "--model", "cnn", "--epochs", "1", "--subset", "32",
                                "--bootstrap", "50", "--device", "cpu", "--data-dir", str(medmnist_dir)]) == 0
    run = runs.list_runs("results")[0]
    assert cli.run(analyze_inference.main, ["--run", run.name, "--tsne-points", "5", "--device", "cpu"]) == 0
    assert run.path.resolve().parent == here / "results"
    assert list((here / "runs" / run.name).glob("*.medscope-analyze_inference"))


def _snapshot(folder) -> dict:
    """Every entry under ``folder``: kind, modification time and bytes."""
    return {p.relative_to(folder).as_posix(): (p.is_dir(), p.stat().st_mtime_ns, None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_the_suite_leaves_the_results_and_runs_of_the_folder_it_starts_in_alone(small_run, tmp_path):
    """A user runs ``python -m pytest`` in the folder that holds their results/ and runs/ (here a run named as
    the tests name theirs): a part of the suite that trains and analyses with the default folders changes
    nothing there."""
    import shutil

    user = tmp_path / "user"
    shutil.copytree(small_run, user / "results" / small_run.name)
    shutil.copytree(small_run.parent.parent / "runs" / small_run.name, user / "runs" / small_run.name)
    before = _snapshot(user)
    tests = [f"{ROOT}/tests/test_hostile.py::test_a_script_left_to_its_default_folders_writes_into_the_tests_own_"
             "working_folder", f"{ROOT}/tests/test_board.py", f"{ROOT}/tests/test_runs.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "basetemp"), *tests],
                          cwd=user, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _snapshot(user) == before
