"""Command-line plumbing shared by every script: errors, exit codes, common flags.

Every script exposes ``main(argv) -> int`` that raises :class:`UsageError` for
bad input. :func:`run` turns that into the contract of DESIGN.md: one clear
line on stderr and exit code 2 for bad input, 130 for Ctrl-C, 1 (with a
traceback) for an unexpected failure.
"""
from __future__ import annotations

import os
import sys


def _interrupted_while_starting(previous):
    """``sys.excepthook`` for a Ctrl-C that reaches the top level: one line and 130, no traceback.

    :func:`run` catches Ctrl-C inside ``main``; before it, a script spends
    seconds importing torch and the analysis modules, and a KeyboardInterrupt
    there would end in a traceback. Nothing has been written yet, so there is
    nothing to clean up. Other exceptions go to the previous hook.
    """

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            atomic = sys.modules.get("medscope.atomic")
            if atomic is not None:  # a second Ctrl-C that escaped run(): its half-written files go too
                atomic.remove_own_temporaries()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            from medscope.errors import Terminated

            terminated = issubclass(kind, Terminated)  # SIGTERM while starting: as after start-up
            print("terminated" if terminated else "interrupted", file=sys.stderr, flush=True)
            os._exit(143 if terminated else 130)
        previous(kind, value, tb)

    hook.quiet_interrupt = True
    return hook


def _in_import(frame) -> bool:
    """Whether ``frame`` runs inside a module import (importlib's frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_deferred = []  # (signal number, watcher thread) of a signal that arrived during an import, while it is pending


def _interrupt_outside_imports(signum, frame):
    """SIGINT and SIGTERM handler: KeyboardInterrupt (``Terminated`` for SIGTERM), never inside a module import.

    A KeyboardInterrupt raised while a native extension initialises (torch,
    ONNX and others call back into Python through pybind11 there) is turned into
    a C++ exception that aborts the whole process. During an import the
    signal is remembered, and a watcher raises it again in the main thread as
    soon as the import is over; :func:`run` reports one still pending when the
    work ends (see :func:`_take_deferred_interrupt`).
    """
    import signal

    if not _in_import(frame):
        _deferred.clear()
        if signum == signal.SIGTERM:
            from medscope.errors import Terminated

            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the cleanup finish
            raise Terminated()
        raise KeyboardInterrupt
    if _deferred:
        return
    import _thread
    import threading
    import time

    main = threading.main_thread().ident

    def wait_for_the_import():
        while _deferred and _in_import(sys._current_frames().get(main)):
            time.sleep(0.02)
        if _deferred:
            _deferred.clear()
            _thread.interrupt_main(signum)  # runs this handler again, outside the import

    _deferred.append((signum, threading.Thread(target=wait_for_the_import, daemon=True)))
    _deferred[0][1].start()


def _take_deferred_interrupt() -> int | None:
    """The signal (SIGINT, SIGTERM) still waiting for an import to end, if any; it is taken (the watcher
    stands down)."""
    if not _deferred:
        return None
    signum = _deferred[0][0]
    _deferred.clear()
    return signum


if not getattr(sys.excepthook, "quiet_interrupt", False):  # installed as early as the scripts can
    sys.excepthook = _interrupted_while_starting(sys.excepthook)
    import signal as _signal
    import threading as _threading

    if _threading.current_thread() is _threading.main_thread():
        if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
            _signal.signal(_signal.SIGINT, _interrupt_outside_imports)
        if _signal.getsignal(_signal.SIGTERM) == _signal.SIG_DFL:  # not where someone handles it (torchrun)
            _signal.signal(_signal.SIGTERM, _interrupt_outside_imports)

import argparse
import errno
import math
import signal
import threading
import traceback
from typing import Callable, Sequence

from medscope import atomic, limits
from medscope.devices import resolve_device
from medscope.errors import RunFailed, Terminated, UsageError
from medscope.progress import progress
from medscope.runs import DEFAULT_RUNS_DIR, default_data_dir

__all__ = ["ArgumentParser", "RunFailed", "UsageError", "add_common_args", "default_data_dir", "progress",
           "resolve_device", "resolve_run", "run"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process it killed


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a UsageError instead of exiting.

    Abbreviations are off: ``--epoch 2`` must not silently mean ``--epochs 2``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog}: {message} (see --help)")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        figure_format = getattr(parsed, "figure_format", None)
        if figure_format is not None:  # every figure this command saves; png alone unless asked
            atomic.also_save_figures_as(*(() if figure_format == "png" else (figure_format,)))
        return parsed


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and map its outcome to an exit code: the one error boundary of a script.

    Bad input (:class:`UsageError`), an operating-system fault (a read-only or full disk,
    a permission) and running out of memory are one line on stderr and exit code 2;
    a run that could not finish is one line and 1; Ctrl-C is 130 and SIGTERM 143, both
    after the work's own cleanup (``finally`` blocks, run.json's status) has run.
    """
    previous = _handle_sigterm()
    stdout = sys.stdout
    sys.stdout = _ReaderMayLeave(stdout)
    try:
        code = main(argv) or EXIT_OK
        pending = _take_deferred_interrupt()  # a signal came during an import and the work ended before it landed
        if pending:
            raise Terminated() if pending == signal.SIGTERM else KeyboardInterrupt
        return code
    except UsageError as exc:
        pending = _take_deferred_interrupt()
        if pending:
            print("terminated" if pending == signal.SIGTERM else "interrupted", file=sys.stderr)
            return EXIT_TERMINATED if pending == signal.SIGTERM else EXIT_INTERRUPTED
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help and friends
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except OSError as exc:
        print(f"error: {os_error_text(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError as exc:
        print(f"error: not enough memory ({exc or 'allocation failed'}); use a smaller --batch-size or "
              "--subset, or a machine with more memory", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 - last line of defence, keep the traceback
        traceback.print_exc()
        return EXIT_FAILURE
    finally:
        # a signal can land between creating a temporary and the ``try`` that removes it
        atomic.remove_own_temporaries()
        if isinstance(sys.stdout, _ReaderMayLeave):
            sys.stdout.flush()  # what is left for a reader that went away goes nowhere, not into an error at exit
            sys.stdout = stdout
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _ReaderMayLeave:
    """``sys.stdout`` while :func:`run` works: a reader that goes away ends the printing, not the work.

    ``train.py ... | head -2`` closes the pipe after two lines; the next print
    would raise BrokenPipeError in the middle of training. From then on stdout
    is the null device (also for Python's final flush at exit) and the work
    goes on; stderr still carries errors.
    """

    def __init__(self, stream):
        self._stream = stream
        self.reader_left = False

    def write(self, text):
        if not self.reader_left:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._to_null_device()
        return len(text)

    def flush(self):
        if not self.reader_left:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._to_null_device()

    def _to_null_device(self):
        self.reader_left = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
            self._stream.flush()  # the buffered rest goes there too
        except (OSError, ValueError, AttributeError):
            pass  # no file descriptor behind the stream: nothing to redirect

    def __getattr__(self, name):
        return getattr(self._stream, name)


def os_error_text(exc: OSError) -> str:
    """An OSError as one line: what failed, on which file, and what to do."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    hint = {errno.ENOSPC: "free some space or choose another --results-dir",
            errno.EDQUOT: "free some space or choose another --results-dir",
            errno.EACCES: "check the folder's permissions or choose another --results-dir",
            errno.EPERM: "check the folder's permissions or choose another --results-dir",
            errno.EROFS: "the file system is read-only; choose another --results-dir"}.get(exc.errno)
    return f"{what}{where}" + (f" ({hint})" if hint else "")


def _handle_sigterm():
    """SIGTERM ends the work like Ctrl-C (in the main thread; torchrun workers keep their own handler).

    The handler is the one this module installs when imported (a SIGTERM during an
    import waits for the import's end); the first SIGTERM ignores the ones after
    it while the cleanup runs, and the handler is given back when the call ends.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    current = signal.getsignal(signal.SIGTERM)
    if current not in (signal.SIG_DFL, None, _interrupt_outside_imports):
        return None  # someone (torchrun's worker setup, a test) handles it already
    signal.signal(signal.SIGTERM, _interrupt_outside_imports)
    return current


def resolve_run(results_dir, spec):
    """:func:`medscope.runs.resolve_run` for a command: it removes the temporaries that killed
    processes left in the run, and says on stderr when the run did not complete (a stopped,
    killed or still running run is analysed, but its results are not final)."""
    from medscope import runs

    run = runs.resolve_run(results_dir, spec)
    atomic.remove_stale_temporaries(run.path)  # what a killed process of an earlier step left behind
    note = run.unfinished_note()
    if note:
        print(note, file=sys.stderr)
    return run


def add_common_args(parser: argparse.ArgumentParser, *, run_arg: str | None = "one") -> None:
    """Flags every script shares (DESIGN.md, Conventions).

    ``run_arg``: ``"one"`` adds ``--run NAME`` (default: newest), ``"many"``
    adds ``--run NAME [NAME ...]``, ``None`` adds nothing.
    """
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="folder of MedMNIST .npz files (env MEDMNIST_DIR, default ~/.medmnist)")
    parser.add_argument("--results-dir", default="results", help="results folder (default: results)")
    parser.add_argument("--runs-dir", default=LeftOut(DEFAULT_RUNS_DIR),
                        help=f"TensorBoard folder (default: {DEFAULT_RUNS_DIR}; for an existing run, the one its "
                             "run.json records)")
    if run_arg == "one":
        parser.add_argument("--run", default=None, help="run name or path (default: the newest run)")
    elif run_arg == "many":
        parser.add_argument("--run", nargs="+", default=None,
                            help="run names or paths (default: the newest run)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--seed", type=int_in_range(0, limits.SEED_MAX), default=0,
                        help=f"random seed, 0 to {limits.SEED_MAX} (default: 0)")
    parser.add_argument("--figure-format", choices=("png", "pdf", "svg"), default="png",
                        help="png (default), or pdf / svg: every figure also as a vector file beside its PNG, "
                             "for a paper")


class LeftOut(str):
    """A flag's default that knows it was not given: it reads as the plain value everywhere, and
    :func:`given_runs_dir` can still tell ``--runs-dir runs`` from no ``--runs-dir`` at all."""


def given_runs_dir(args) -> str | None:
    """``--runs-dir`` when the user gave it; None when left out: "runs" for a new run, but an existing run's
    figures go to the TensorBoard folder its run.json records (:func:`medscope.board.run_tensorboard_dir`)."""
    return None if isinstance(args.runs_dir, LeftOut) else args.runs_dir


def _integer_at_least(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _integer_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _integer_at_least(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < math.inf:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``, both included (bounds: medscope/limits.py).

    A value outside is bad input before any work starts, so a typo such as ``--workers 1e11`` or
    ``--seed -1`` is one line, not a fork bomb or a traceback deep inside numpy.

    >>> int_in_range(1, 64)("8")
    8
    >>> int_in_range(1, 64)("1000")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a positive integer, at most 64, got 1000
    """
    expected = {0: "an integer >= 0", 1: "a positive integer"}.get(low, f"an integer >= {low}")
    expected += f", at most {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also a number of more than 4300 digits
            raise argparse.ArgumentTypeError(f"expected {expected}, got {_shown(text)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {_shown(str(value))}")
        return value

    parse.__name__ = expected  # what argparse calls the type in its own messages
    return parse


def float_in_range(low: float, high: float, *, include_low: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[low, high]`` (``(low, high]`` without ``include_low``).

    >>> float_in_range(0, 10, include_low=False)("0.5")
    0.5
    >>> float_in_range(0, 10, include_low=False)("1e300")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a number in (0, 10], got 1e300
    """
    expected = f"a number in {'[' if include_low else '('}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {_shown(text)}") from None
        if not ((low <= value if include_low else low < value) and value <= high):  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected {expected}, got {_shown(text)}")
        return value

    parse.__name__ = expected  # what argparse calls the type in its own messages
    return parse


def _shown(text: str, limit: int = 40) -> str:
    """A refused value as the message shows it: a huge one shortened, on one line."""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text)} characters)"


