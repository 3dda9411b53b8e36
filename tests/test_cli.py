"""medscope.app.cli: the one error boundary of every script, and the shared flags."""
from __future__ import annotations

import errno
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from medscope.app import cli
from medscope.errors import RunFailed, UsageError
from tests.conftest import ROOT


def _raising(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc, code, line", [
    (UsageError("no run named 'x'"), cli.EXIT_BAD_INPUT, "error: no run named 'x'"),
    (RunFailed("loss is nan"), cli.EXIT_FAILURE, "failed: loss is nan"),
    (OSError(errno.ENOSPC, "No space left on device", "/r/metrics.json"), cli.EXIT_BAD_INPUT,
     "error: No space left on device: /r/metrics.json (free some space or choose another --results-dir)"),
    (PermissionError(errno.EACCES, "Permission denied", "/r"), cli.EXIT_BAD_INPUT,
     "error: Permission denied: /r (check the folder's permissions or choose another --results-dir)"),
    (MemoryError("Unable to allocate 73.0 GiB"), cli.EXIT_BAD_INPUT, "error: not enough memory (Unable to allocate"),
    (KeyboardInterrupt(), cli.EXIT_INTERRUPTED, "interrupted"),
])
def test_every_expected_failure_is_one_line_and_its_exit_code(capsys, exc, code, line):
    assert cli.run(_raising(exc), []) == code
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err


def test_an_unexpected_failure_keeps_its_traceback(capsys):
    assert cli.run(_raising(ZeroDivisionError("x")), []) == cli.EXIT_FAILURE
    assert "Traceback" in capsys.readouterr().err


def test_abbreviated_flags_are_refused():
    parser = cli.ArgumentParser(prog="t")
    parser.add_argument("--epochs", type=int)
    with pytest.raises(UsageError, match="unrecognized arguments: --epoch"):
        parser.parse_args(["--epoch", "2"])


@pytest.mark.parametrize("script", ["train", "export_scalars", "analyze_inference", "analyze_complexity", "explain",
                                    "quantize", "compare", "report", "run_tool"])
def test_no_script_takes_an_abbreviated_flag(script):
    import importlib

    parser = importlib.import_module(script).get_args_parser()
    before = ["gradcam"] if script == "explain" else []  # explain's flags belong to its subcommands
    with pytest.raises(UsageError, match="unrecognized arguments: --result "):
        parser.parse_args([*before, "--result", "x"])  # --results-dir one word short: argparse would take it


def test_every_argument_parser_in_the_project_refuses_abbreviations():
    """Shipped scripts (the ONNX predict template) and bench/ too: a typo never becomes another flag."""
    offenders = []
    for path in [*ROOT.glob("*.py"), *ROOT.glob("medscope/**/*.py"), *ROOT.glob("bench/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "argparse.ArgumentParser(" in line and "allow_abbrev=False" not in line \
                    and "add_help=False" not in line and "class ArgumentParser" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []


def test_sigterm_ends_the_work_like_ctrl_c_and_leaves_no_temporary(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from medscope import atomic
        from medscope.app import cli

        def main(argv):
            with atomic.atomic_path(Path({str(tmp_path)!r}) / "out.txt") as tmp:
                tmp.write_text("half")
                print("writing", flush=True)
                time.sleep(60)

        sys.exit(cli.run(main))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_TERMINATED and err.strip() == "terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.py"]  # no out.txt, no .out.txt.*.tmp


def test_the_handler_is_given_back_after_the_call():
    before = signal.getsignal(signal.SIGTERM)
    cli.run(lambda argv: 0, [])
    assert signal.getsignal(signal.SIGTERM) == before
    time.sleep(0)


@pytest.mark.parametrize("text", ["inf", "nan", "-1", "1e400", "x"])
def test_number_flags_must_be_finite(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli.non_negative_float(text)
    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive_float(text)


@pytest.mark.parametrize("text", ["-1", "1e23", "2.5", "x"])
def test_integer_flags_are_whole_and_in_range(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli.non_negative_int(text)
