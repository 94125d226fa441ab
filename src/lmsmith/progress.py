"""Progress bars and console output (rich), one place so every stage looks the same."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)  # progress and status go to stderr; results go to stdout
out = Console(soft_wrap=True, highlight=False)
if not out.is_terminal:  # a pipe or a CI log: rich would assume 80 columns and cut names short
    out = Console(soft_wrap=True, highlight=False, width=100_000)


def make_progress(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=transient,
    )


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """`with task("import", n) as bar: bar(1, info="file.x")`."""
    with make_progress() as p:
        tid = p.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "", completed: int | None = None, total: int | None = None) -> None:
            if total is not None:
                p.update(tid, total=total)
            if completed is not None:
                p.update(tid, completed=completed, info=info)
            else:
                p.update(tid, advance=n, info=info)

        yield advance



def table(*columns: str, **kwargs) -> Table:
    """A rich table whose cells wrap instead of ending in '…': names, refs and ids must stay whole."""
    t = Table(**kwargs)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t
def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (binary units, as `ls -h` and `du -h` print them)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
