"""Progress for long steps, on stderr so stdout stays clean for --json consumers."""

from __future__ import annotations

import contextlib
import time

from rich.console import Console

console = Console(stderr=True, highlight=False)
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
