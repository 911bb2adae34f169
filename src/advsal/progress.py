"""Progress bars for long loops (rich), silenced globally with ``set_quiet(True)`` or ``--quiet``.

On a terminal each loop shows a live bar. When stdout is not a terminal (a log file, a pipe, CI) nothing is
printed per step: a loop that ran at least ``LOG_MIN_SECONDS`` ends with one plain line
``description: done/total in 12.3s (info)``, so a log holds one line per event and no blank lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")
_QUIET = False
#: Loops shorter than this print nothing when stdout is not a terminal.
LOG_MIN_SECONDS = 2.0


def set_quiet(quiet: bool) -> None:
    """Turn every advsal progress bar off (True) or on (False)."""
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def interactive() -> bool:
    """Whether stdout is a terminal (rich's view, so ``FORCE_COLOR``/``TTY_INTERACTIVE`` are honoured)."""
    return get_console().is_terminal


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` showing a progress bar unless quiet."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Bar(description, total) as bar:
        for item in items:
            yield item
            bar.update()


class Bar:
    """A manually advanced progress bar with a free-text info field; a no-op when quiet, one summary line at
    the end (for loops of at least ``LOG_MIN_SECONDS``) when stdout is not a terminal."""

    def __init__(self, description: str, total: int | None):
        self._progress = None
        self._log = False
        self._description, self._total, self._done, self._info = description, total, 0, ""
        self._start = time.perf_counter()
        if _QUIET:
            return
        if interactive():
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self._progress = Progress(*columns, transient=True)
            self._task = self._progress.add_task(description, total=total, info="")
        else:
            self._log = True

    def __enter__(self) -> Bar:
        self._start = time.perf_counter()
        if self._progress is not None:
            self._progress.start()
        return self

    def update(self, advance: int = 1, info: str | None = None) -> None:
        self._done += advance
        if info is not None:
            self._info = info
        if self._progress is not None:
            kw = {"info": info} if info is not None else {}
            self._progress.update(self._task, advance=advance, **kw)

    def log_line(self) -> str:
        """The one line a finished loop prints when stdout is not a terminal (no newlines inside)."""
        total = "" if self._total is None else f"/{self._total}"
        info = f" ({self._info})" if self._info else ""
        line = f"{self._description}: {self._done}{total} in {time.perf_counter() - self._start:.1f}s{info}"
        return " ".join(line.split())

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self._log and time.perf_counter() - self._start >= LOG_MIN_SECONDS:
            sys.stdout.write(self.log_line() + "\n")
            sys.stdout.flush()
