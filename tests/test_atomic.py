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


# ---------------------------------------------------------------- a folder written as a whole

def _contents(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_old_folder(folder):
    atomic.write_text(folder / "summary.json", "old summary")
    atomic.write_text(folder / "examples_00007.png", "an image only the old call showed")
    return _contents(folder)


def test_a_staged_folder_replaces_the_whole_folder_and_commits_what_is_in_it(tmp_path):
    folder = tmp_path / "robustness"
    _write_old_folder(folder)
    committed = []
    with atomic.staged_folder(folder, commit=lambda written, kept: committed.append((written, kept))) as staged:
        assert staged.path.parent == tmp_path and staged.path.name.startswith(f".robustness.{os.getpid()}.")
        atomic.write_text(staged.path / "summary.json", "new summary")
        atomic.write_text(staged.path / "examples_00003.png", "an image of the new call")
        assert _contents(folder)["summary.json"] == b"old summary"  # nothing visible until the block ends
    assert _contents(folder) == {"examples_00003.png": b"an image of the new call", "summary.json": b"new summary"}
    assert committed == [([folder / "examples_00003.png", folder / "summary.json"], [])]
    assert staged.files == staged.written == [folder / "examples_00003.png", folder / "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["robustness"]  # no staging folder, no old folder


@pytest.mark.parametrize("failure", [RuntimeError("disk went away"), KeyboardInterrupt()])
def test_a_staged_folder_that_fails_midway_leaves_the_previous_folder_untouched(tmp_path, failure):
    folder = tmp_path / "export"
    before = _write_old_folder(folder)
    with pytest.raises(type(failure)):
        with atomic.staged_folder(folder, commit=lambda written, kept: pytest.fail("committed")) as staged:
            atomic.write_text(staged.path / "summary.json", "new, half of the folder")
            raise failure
    assert _contents(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_failed_commit_puts_the_previous_folder_back(tmp_path):
    """The folder and its record change together: a run.json that cannot be written (a full disk) undoes the swap."""
    import errno

    folder = tmp_path / "calibration"
    before = _write_old_folder(folder)

    def full_disk(written, kept):
        assert _contents(folder)["summary.json"] == b"new"  # called once the new folder is in place
        raise OSError(errno.ENOSPC, "No space left on device", "run.json")

    with pytest.raises(OSError):
        with atomic.staged_folder(folder, commit=full_disk) as staged:
            atomic.write_text(staged.path / "summary.json", "new")
    assert _contents(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["calibration"]


def test_kept_files_travel_into_the_new_folder_as_links_and_the_rest_go(tmp_path):
    folder = tmp_path / "gradcam"
    atomic.write_text(folder / "gradcam_summary.json", "Grad-CAM, old")
    atomic.write_text(folder / "gradcampp_summary.json", "Grad-CAM++, another method's call")
    atomic.write_text(folder / "val" / "table.csv", "a nested file")
    inode = (folder / "gradcampp_summary.json").stat().st_ino
    committed = []
    with atomic.staged_folder(folder, keep=lambda relative: not relative.name.startswith("gradcam_"),
                              commit=lambda written, kept: committed.append((written, kept))) as staged:
        atomic.write_text(staged.path / "gradcam_summary.json", "Grad-CAM, new")
    assert _contents(folder) == {"gradcam_summary.json": b"Grad-CAM, new",
                                 "gradcampp_summary.json": b"Grad-CAM++, another method's call",
                                 "val/table.csv": b"a nested file"}
    assert (folder / "gradcampp_summary.json").stat().st_ino == inode  # a link, not a copy
    assert committed == [([folder / "gradcam_summary.json"], [folder / "gradcampp_summary.json",
                                                              folder / "val" / "table.csv"])]
    assert staged.written == [folder / "gradcam_summary.json"]


def test_ctrl_c_during_the_swap_lands_after_it(tmp_path):
    """The renames and the record are held together: a signal arriving then is delivered once the folder is in place."""
    import signal

    folder = tmp_path / "uncertainty"
    _write_old_folder(folder)
    with pytest.raises(KeyboardInterrupt):
        with atomic.staged_folder(folder, commit=lambda written, kept: signal.raise_signal(signal.SIGINT)) as staged:
            atomic.write_text(staged.path / "summary.json", "new")
    assert _contents(folder) == {"summary.json": b"new"} and sorted(p.name for p in tmp_path.iterdir()) == [
        "uncertainty"]


def test_a_staged_folder_is_made_as_mkdir_would_make_it(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic.staged_folder(tmp_path / "complexity") as staged:
            atomic.write_text(staged.path / "a.csv", "a\n")
    finally:
        os.umask(mask)
    assert (tmp_path / "complexity").stat().st_mode & 0o777 == 0o755  # results are meant to be shared
