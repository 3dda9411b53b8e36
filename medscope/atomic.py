"""Atomic file writes: write to a temporary file beside the target, then rename.

An interrupted step therefore leaves either the old file or the new one, never
half of one (os.replace is atomic on POSIX and Windows within one folder).

Temporary names carry the writer's process id (``.<name>.<pid>.<random>.tmp``):
a process killed outright (SIGKILL, power loss) cannot remove its own, so
:func:`remove_stale_temporaries` lets the next writer of a folder remove those
whose process is gone, and never one that is still being written. A process
that is interrupted (Ctrl-C, SIGTERM) removes its own at its error boundary
(:func:`remove_own_temporaries`): each temporary is recorded *before* it is
created, so a signal landing between creating it and guarding it cannot leak it.

A folder is written as a whole the same way (:func:`staged_folder`): every
file goes into a hidden staging folder beside it, which is renamed into place
when complete, so an analysis folder always holds one call's output.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterable, Mapping, Sequence


TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")  # .<name>.<pid>.<random>.tmp, and temporary folders alike


_own: set[Path] = set()  # temporaries this process made and has not yet renamed or removed


def _new_temporary_name(parent: Path, stem: str) -> Path:
    """``parent/.<stem>.<pid>.<random>.tmp``, recorded in :data:`_own` before anything is created."""
    while True:
        path = parent / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        if not os.path.lexists(path):
            _own.add(path)
            return path


def temporary_dir(parent: str | os.PathLike, prefix: str, mode: int = 0o700) -> Path:
    """A new hidden folder in ``parent`` named like the temporary files (removable when stale).

    ``mode`` (less the umask): private by default; 0o777 for a folder that becomes a result.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = _new_temporary_name(parent, prefix)
    os.mkdir(path, mode)
    return path


def remove_own_temporaries() -> list[Path]:
    """Remove every temporary file and folder this process made and did not finish.

    The error boundary calls it when the work ends early (Ctrl-C, SIGTERM, an
    error): a signal can land between the moment a temporary is created and the
    ``try`` that would remove it. Returns what was removed.
    """
    removed = []
    for path in sorted(_own, key=lambda p: -len(p.parts)):  # files inside a staging folder first
        _own.discard(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path)
    return removed


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Remove temporary files and folders left in ``folder`` by processes that no longer exist.

    Returns what was removed. A temporary whose process is alive (on this machine) is kept.
    """
    from medscope.runs import process_alive

    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    candidates = folder.rglob(f"*{TMP_SUFFIX}") if recursive else folder.glob(f"*{TMP_SUFFIX}")
    for path in sorted(candidates, key=lambda p: len(p.parts)):
        match = _TMP_NAME.match(path.name)
        if not match or not path.exists() or process_alive(int(match.group(1))):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary_name(path.parent, path.name)
    try:
        # O_EXCL: never another's file; 0o666 less the umask, as open() would (results are meant to be shared)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        _own.discard(tmp)


@contextlib.contextmanager
def _signals_held():
    """Hold Ctrl-C and SIGTERM for the duration; one that arrived is delivered on exit.

    Python runs signal handlers in the main thread whichever thread the signal
    reached, so swapping the handlers (not the thread's signal mask) is what
    keeps a few renames together. Outside the main thread nothing is held.
    """
    import signal

    arrived: list[int] = []
    try:
        previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(arrived):
            signal.raise_signal(s)  # its own handler runs now (KeyboardInterrupt, Terminated)


class StagedFolder:
    """A folder being written as a whole: write into :attr:`path`; it replaces :attr:`final` when complete."""

    def __init__(self, final: Path, path: Path):
        self.final = final  # where the folder will be
        self.path = path  # the staging folder, a hidden sibling of ``final``
        self.files: list[Path] = []  # once in place: every file of the folder, at its final path
        self.written: list[Path] = []  # ... of which those this call wrote (the others were carried over)

    def final_path(self, staged) -> Path:
        """Where a file written into the staging folder will be once the folder is in place."""
        return self.final / Path(staged).relative_to(self.path)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _carry_over(old: Path, staging: Path, keep) -> list[Path]:
    """Hard-link the files of ``old`` that ``keep(relative path)`` names into ``staging`` (copy where links fail)."""
    kept = []
    for relative in _files_under(old):
        if any(part.startswith(".") for part in relative.parts) or not keep(relative):
            continue  # another writer's temporaries never travel
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(old / relative, target)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            shutil.copy2(old / relative, target)
        kept.append(relative)
    return kept


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike, *, keep=None, commit=None):
    """Write the folder ``final`` as a whole: the previous folder or the new one, never a mix of both.

    Yields a :class:`StagedFolder`; write every file into its ``path`` (a new
    hidden sibling ``.<name>.<pid>.<random>.tmp`` of ``final``). When the block
    ends normally the staging folder is renamed onto ``final`` (the previous
    folder is renamed aside first and removed after) and ``commit(written, kept)``
    is called with the files now in place (final paths): those written by the
    block, and those carried over. ``keep(relative path) -> bool`` names files
    of the previous folder to carry over (hard links; the previous folder stays
    intact until the swap), e.g. the other methods' results that share a folder.

    The swap and ``commit`` run with Ctrl-C and SIGTERM held; if ``commit``
    fails (a full disk while recording), the previous folder is put back. An
    error or a signal inside the block leaves the previous folder untouched and
    removes the staging folder; one of a killed process is removed by the next
    command on the run (:func:`remove_stale_temporaries`).
    """
    final = Path(final)
    staging = temporary_dir(final.parent, final.name, 0o777)  # as mkdir would make it: it becomes the result
    staged = StagedFolder(final, staging)
    try:
        kept = _carry_over(final, staging, keep) if keep is not None and final.is_dir() else []
        yield staged
        kept_set = set(kept)
        relative = _files_under(staging)
        written = [final / r for r in relative if r not in kept_set]
        with _signals_held():
            _swap_into_place(staging, final, commit, written, [final / r for r in kept])
        staged.files, staged.written = [final / r for r in relative], written
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        _own.discard(staging)


def _swap_into_place(staging: Path, final: Path, commit, written: list[Path], kept: list[Path]) -> None:
    """Rename ``staging`` onto ``final`` and ``commit``; on any failure the previous ``final`` is put back."""
    previous = None
    if os.path.lexists(final):
        previous = _new_temporary_name(final.parent, final.name)
        os.rename(final, previous)
    try:
        os.rename(staging, final)
        try:
            if commit is not None:
                commit(written, kept)
        except BaseException:
            os.rename(final, staging)  # removed by the caller's cleanup
            raise
    except BaseException:
        if previous is not None:
            os.rename(previous, final)
            _own.discard(previous)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
        _own.discard(previous)


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _json_safe(value):
    """NaN/inf are not JSON: write them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return _json_safe(value.item())
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def json_bytes(obj, *, compact: bool = False) -> bytes:
    """``obj`` as the JSON text medscope writes (NaN and inf as null); ``compact`` without indentation."""
    text = (json.dumps(_json_safe(obj), separators=(",", ":"), allow_nan=False) if compact
            else json.dumps(_json_safe(obj), indent=2, allow_nan=False))
    return (text + "\n").encode("utf-8")


def write_json(path, obj) -> Path:
    return write_bytes(path, json_bytes(obj))


def overwrite_in_place(path, data: bytes) -> Path:
    """Write ``data`` over the existing file ``path``, in the room it already takes on disk.

    The last resort where a temporary file cannot be made because the disk is
    full (run.json must still say that training failed): the bytes go into the
    file's own blocks, so no new block is needed, and the file is then cut to
    their length. Not atomic, unlike every other write here. Raises ENOSPC,
    leaving the file as it was, when ``data`` needs more room than the file has.
    """
    fd = os.open(path, os.O_WRONLY)
    try:
        stats = os.fstat(fd)
        room = max(stats.st_size, getattr(stats, "st_blocks", 0) * 512)
        if len(data) > room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], written)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    return Path(path)


def write_csv(path, rows: Iterable[Mapping], columns: Sequence[str]) -> Path:
    """Write dict rows with a fixed column order (missing keys are empty cells)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format_cell(row.get(k)) for k in columns})
    return write_text(path, buffer.getvalue())


def _format_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest repr that round-trips exactly
    return value


def save_torch(path, obj) -> Path:
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write as a RuntimeError ("iostream error");
            # where the disk is full, say so as the OSError it is (one line at the error boundary)
            if _free_bytes(Path(tmp).parent) < FULL_DISK_BYTES:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
            raise
    return Path(path)


FULL_DISK_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full


def _free_bytes(folder: Path) -> int:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


VECTOR_FORMATS = ("pdf", "svg")
_vector_copies: tuple[str, ...] = ()  # formats every PNG figure is also saved in (set by the --figure-format flag)


def also_save_figures_as(*formats: str) -> None:
    """Every later :func:`save_figure` of a PNG also writes a vector copy in each of ``formats`` beside it.

    ``also_save_figures_as("pdf")`` makes ``confusion_matrix.png`` come with
    ``confusion_matrix.pdf`` (fonts as text, lines as paths: for a paper);
    ``also_save_figures_as()`` goes back to PNG only. The PNG stays: the
    report page and TensorBoard show it.
    """
    global _vector_copies
    unknown = [f for f in formats if f not in VECTOR_FORMATS]
    if unknown:
        raise ValueError(f"figure formats {unknown}: expected any of {', '.join(VECTOR_FORMATS)}")
    _vector_copies = tuple(formats)


def save_figure(path, fig, dpi: int = 150, *, tight: bool = True) -> Path:
    """Save and close ``fig``; ``tight=False`` keeps the exact figsize x dpi pixel size.

    A PNG also gets the vector copies :func:`also_save_figures_as` asked for, each written atomically.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    kind = path.suffix.lstrip(".") or "png"
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None, format=kind)
        if kind == "png":
            for vector in _vector_copies:
                with atomic_path(path.with_suffix(f".{vector}")) as tmp:
                    fig.savefig(tmp, bbox_inches="tight" if tight else None, format=vector)
    finally:
        plt.close(fig)
    return path
