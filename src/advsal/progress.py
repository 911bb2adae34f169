"""Progress bars for long loops (rich), silenced globally with ``set_quiet(True)`` or ``--quiet``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Turn every advsal progress bar off (True) or on (False)."""
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` showing a progress bar unless quiet."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Bar(description, total) as bar:
        for item in items:
            yield item
            bar.update()


class Bar:
    """A manually advanced progress bar with a free-text info field; a no-op when quiet."""

    def __init__(self, description: str, total: int | None):
        self._progress = None
        if not _QUIET:
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self._progress = Progress(*columns, transient=True)
            self._task = self._progress.add_task(description, total=total, info="")

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def update(self, advance: int = 1, info: str | None = None) -> None:
        if self._progress is not None:
            kw = {"info": info} if info is not None else {}
            self._progress.update(self._task, advance=advance, **kw)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
