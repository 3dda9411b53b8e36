"""Regenerate the README's figures from a real default run.

    MEDMNIST_DIR=../shared/medmnist python docs/make_readme_figures.py

Trains ``python train.py --dataset breastmnist`` with nothing else given (the
defaults a user gets) into a temporary folder and copies the figures the
README shows into ``docs/img/``, so the README never shows a run its defaults
would not make. About a minute and a half on a 2-core CPU.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIGURES = ("training_curves.png",)  # the run-folder files the README shows, by name


def main() -> int:
    import train
    from medscope.runs import RunLayout, list_runs

    with tempfile.TemporaryDirectory(prefix="medscope-readme-") as work:
        results, runs = Path(work) / "results", Path(work) / "runs"
        code = train.main(["--dataset", "breastmnist", "--results-dir", str(results), "--runs-dir", str(runs)])
        if code:
            return code
        (run,) = list_runs(results)
        layout = RunLayout(run.path)
        target = ROOT / "docs" / "img"
        target.mkdir(parents=True, exist_ok=True)
        for name in FIGURES:
            shutil.copyfile(layout.root / name, target / name)
            print(f"docs/img/{name} <- {run.name}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
