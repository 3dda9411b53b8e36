"""medscope.atomic: whole files or none, and no temporary outlives its writer."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medscope import atomic


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"auc": 0.9})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk went away")
    assert target.read_text().strip().startswith("{") and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_temporaries_name_their_process(tmp_path):
    with atomic.atomic_path(tmp_path / "a.csv") as tmp:
        assert tmp.name.startswith(f".a.csv.{os.getpid()}.") and tmp.name.endswith(".tmp")
    folder = atomic.temporary_dir(tmp_path, "export")
    assert folder.name.startswith(f".export.{os.getpid()}.") and folder.is_dir()


def test_a_written_file_has_the_permissions_open_would_give_it(tmp_path):
    mask = os.umask(0o022)
    try:
        written = atomic.write_text(tmp_path / "summary.csv", "a\n")
    finally:
        os.umask(mask)
    assert written.stat().st_mode & 0o777 == 0o644


def test_an_interrupt_between_creating_a_temporary_and_guarding_it_leaves_nothing(tmp_path):
    """A signal can land after a temporary exists and before the ``try`` that would remove it;
    every temporary is recorded before it is created, and the error boundary removes what is left."""
    from medscope.app import cli

    def main(argv):
        atomic.temporary_dir(tmp_path, "comparison")  # a staging folder, not yet guarded
        atomic.atomic_path(tmp_path / "metrics.json").__enter__()  # a temporary file whose guard never runs
        raise KeyboardInterrupt

    assert cli.run(main, []) == cli.EXIT_INTERRUPTED
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    (tmp_path / "gradcam").mkdir()
    stale_file = tmp_path / "gradcam" / f".page.png.{dead}.abc123.tmp"
    stale_file.write_bytes(b"half")
    stale_dir = tmp_path / f".export.{dead}.xyz.tmp"
    stale_dir.mkdir()
    (stale_dir / "model.onnx").write_bytes(b"x" * 100)
    live = tmp_path / f".report.html.{os.getpid()}.q.tmp"
    live.write_text("being written")
    ordinary = tmp_path / "notes.tmp"  # not ours: never touched
    ordinary.write_text("user file")
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert set(removed) == {stale_file, stale_dir}
    assert live.exists() and ordinary.exists() and not stale_file.exists() and not stale_dir.exists()


def test_a_figure_format_adds_a_vector_copy_beside_every_png_and_png_alone_is_the_default(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medscope.app import cli

    def draw(name):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        return atomic.save_figure(tmp_path / name, fig)

    parser = cli.ArgumentParser()
    cli.add_common_args(parser, run_arg=None)
    try:
        parser.parse_args(["--figure-format", "pdf"])
        draw("curves.png")
        assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
        parser.parse_args(["--figure-format", "svg"])
        draw("roc.png")
        assert b"<svg" in (tmp_path / "roc.svg").read_bytes() and not (tmp_path / "roc.pdf").exists()
        parser.parse_args([])
        draw("plain.png")
        assert sorted(p.name for p in tmp_path.glob("plain.*")) == ["plain.png"]
        assert not list(tmp_path.glob(".*.tmp"))
    finally:
        atomic.also_save_figures_as()
    with pytest.raises(cli.UsageError, match="figure-format"):
        parser.parse_args(["--figure-format", "eps"])
