"""Progress for long steps, on stderr so stdout stays clean for --json consumers."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time

from rich.console import Console


def _terminal():
    """A duplicate of stderr taken at import, so progress still reaches the terminal while a build stage points
    fd 2 at a converter log (edgepack.capture)."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    except (AttributeError, OSError, ValueError):  # no descriptor (an in-process test harness): plain stderr
        return None


_tty = _terminal()
if _tty is not None:
    atexit.register(_tty.close)
console = Console(file=_tty, highlight=False) if _tty is not None else Console(stderr=True, highlight=False)
_quiet = False


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = value


@contextlib.contextmanager
def step(description: str):
    """Show a spinner while the step runs and a ✓ line with its duration after."""
    if _quiet:
        yield
        return
    t0 = time.perf_counter()
    with console.status(description, spinner="dots"):
        yield
    console.print(f"[green]✓[/green] {description} [dim]({time.perf_counter() - t0:.1f}s)[/dim]")


def note(text: str) -> None:
    if not _quiet:
        console.print(text)
