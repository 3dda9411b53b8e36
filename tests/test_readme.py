"""The README's install and test commands work as written, on any machine (and CI runs exactly them)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REAL_FILES, ROOT


def _bash_block_after(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_install_then_the_readme_test_command():
    install, = _bash_block_after("## Install")
    test, = _bash_block_after("## Test")
    assert test == "python -m pytest"  # no variable a new user would not have
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci.index(install) < ci.index(test)


def _fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "medscope"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    return clone


def _user_env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MEDMNIST_DIR", "MEDSCOPE_CACHE")}
    return env | {"HOME": str(home)} | extra


@pytest.mark.slow
def test_the_test_command_finds_the_files_in_the_default_data_folder(tmp_path, medmnist_dir):
    clone = _fresh_clone(tmp_path)
    home = tmp_path / "home"
    (home / ".medmnist").mkdir(parents=True)
    for name in REAL_FILES:
        (home / ".medmnist" / f"{name}.npz").symlink_to(medmnist_dir / f"{name}.npz")
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_runs.py", "-q", "-p", "no:cacheprovider"],
                            cwd=clone, env=_user_env(home), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+ passed", result.stdout)


def test_offline_without_the_files_the_suite_says_in_one_line_what_to_do(tmp_path):
    clone = _fresh_clone(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    closed = "http://127.0.0.1:9"  # nothing listens there: every download fails at once, as offline
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_runs.py", "-q", "-p", "no:cacheprovider"],
                            cwd=clone, env=_user_env(home, https_proxy=closed, HTTPS_PROXY=closed),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "MEDMNIST_DIR" in line]
    assert len(lines) == 1 and "breastmnist.npz" in lines[0] and str(home / ".medmnist") in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (home / ".medmnist" / "breastmnist.npz").exists()
