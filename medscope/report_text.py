"""Numbers, labels and names as text, the same way in every CSV and Markdown report.

Every value a Markdown report interpolates (a run or class name, a path, a
config string, a command) goes through :func:`markdown_text`, or
:func:`markdown_code` / :func:`markdown_code_block` for code: a run folder may
come from someone else, and its names must show literally in a Markdown viewer,
never as live HTML or as Markdown that breaks the page's tables.
"""
from __future__ import annotations

import re

import numpy as np


def label_text(label) -> str:
    """A label row as text: the class index, or the multi-label 0/1 vector joined by ';'.

    >>> label_text(np.array([2])), label_text(np.array([0, 1, 1]))
    ('2', '0;1;1')
    """
    label = np.asarray(label).reshape(-1)
    return str(int(label[0])) if label.size == 1 else ";".join(str(int(v)) for v in label)


def number_text(value, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or 'n/a' for None and NaN.

    >>> number_text(0.12345), number_text(float("nan"))
    ('0.123', 'n/a')
    """
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def percent_text(value) -> str:
    """A fraction as a whole percentage, or 'n/a' for None and NaN.

    >>> percent_text(0.256), percent_text(None)
    ('26%', 'n/a')
    """
    return "n/a" if value is None or value != value else f"{100 * value:.0f}%"


# HTML-special characters as entities (a backslash does not stop HTML in every Markdown dialect), and
# the pipe and tilde too: a table cell ends at "|" even after a backslash in some dialects, and
# Python-Markdown knows no "\~"
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "~": "&#126;"}
# Markdown punctuation that every dialect (CommonMark, GitHub, Python-Markdown) un-escapes after a backslash
_BACKSLASHED = frozenset("\\`*_[]{}#")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HTML_SPECIAL = re.compile(r"[<>&]")


def _one_line(text: str) -> str:
    """Control characters (newline, tab, carriage return, ...) as their visible Unicode pictures (U+2400...):
    a value stays on its line, where it cannot start a heading, a list or a new table row."""
    return _CONTROL.sub(lambda m: chr(0x2421) if m.group() == "\x7f" else chr(0x2400 + ord(m.group())), text)


def markdown_text(value) -> str:
    r"""``value`` as Markdown that renders as exactly its characters: no HTML, no emphasis, link or table cell
    boundary, on one line (control characters shown as symbols, e.g. a newline as ␊).

    ``& < > | ~`` become entities; ``\ ` * _ [ ] { } #`` get a backslash (an underscore inside a word, which
    no dialect reads as emphasis, stays as it is, so run names stay readable).

    >>> markdown_text("<img src=x onerror=alert(1)>")
    '&lt;img src=x onerror=alert(1)&gt;'
    >>> markdown_text("a|b `c` *d* 0007_breastmnist28 _e_")
    'a&#124;b \\`c\\` \\*d\\* 0007_breastmnist28 \\_e\\_'
    >>> markdown_text("two\nlines")
    'two␊lines'
    """
    text = _one_line("n/a" if value is None else str(value))
    out = []
    for i, char in enumerate(text):
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char == "_" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            out.append(char)
        elif char in _BACKSLASHED:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _fence(text: str, shortest: int) -> str:
    """A run of backticks longer than any in ``text`` (and at least ``shortest``): it cannot end early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(shortest, longest + 1)


def markdown_code(value) -> str:
    """``value`` as an inline code span, whatever backticks it holds; on one line (see :func:`markdown_text`).

    A value holding ``<``, ``>`` or ``&`` is written as :func:`markdown_text` instead: inside code they
    could not be escaped, and the file is to hold no raw markup from a run folder at all. Not for table
    cells: some dialects split a cell at a ``|`` even inside code (use :func:`markdown_text` there).

    >>> markdown_code("python train.py"), markdown_code("a`b"), markdown_code("--run '<b>'")
    ('`python train.py`', '``a`b``', "--run '&lt;b&gt;'")
    """
    text = _one_line(str(value))
    if _HTML_SPECIAL.search(text):
        return markdown_text(text)
    fence = _fence(text, 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_code_block(value, language: str = "") -> list[str]:
    """``value`` as the lines of a fenced code block, whatever backticks it holds, on one line (a blank line
    inside would end the block where a viewer does not know fences, and free what follows as Markdown);
    a value holding ``<``, ``>`` or ``&`` as one line of :func:`markdown_text` (see :func:`markdown_code`).

    >>> markdown_code_block("python train.py --seed 1", "bash")
    ['```bash', 'python train.py --seed 1', '```']
    """
    text = _one_line(str(value))
    if _HTML_SPECIAL.search(text):
        return [markdown_text(text)]
    fence = _fence(text, 3)
    return [f"{fence}{language}", text, fence]
