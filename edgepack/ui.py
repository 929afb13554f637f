"""Progress for long steps, on stderr so stdout stays clean for --json consumers."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional, TextIO

from rich.console import Console
from rich.markup import escape

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _terminal() -> TextIO | None:
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


def printable(text: Any) -> str:
    """Text from a bundle, a result file, a device or the command line with its control characters (ANSI
    escapes, carriage returns, ...) shown as \\xNN instead of acting on the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def safe(text: Any) -> str:
    """:func:`printable` and with rich markup escaped: for any user- or bundle-supplied string that goes into
    a rich console or table (``[/x]`` would otherwise be markup, or crash rich)."""
    return escape(printable(text))


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = value


_local = threading.local()


@contextlib.contextmanager
def steps_to(sink: Optional[Callable[[str], None]]) -> Iterator[None]:
    """In this thread, hand each :func:`step`'s description to ``sink`` instead of showing a spinner (one
    device's worker in a fleet run: :mod:`edgepack.fleet` shows one live line per device)."""
    before = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = before


@contextlib.contextmanager
def step(description: str) -> Iterator[Callable[[str], None]]:
    """Show a spinner while the step runs and a ✓ line with its duration after. Yields ``update(text)``, which
    replaces the spinner's text (plain text, escaped here) while the step runs."""
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink(printable(description))
        yield lambda text: sink(printable(text))
        return
    if _quiet:
        yield lambda text: None
        return
    description = safe(description)  # descriptions hold file and device names, never markup
    t0 = time.perf_counter()
    with console.status(description, spinner="dots") as status:
        yield lambda text: status.update(safe(text))
    console.print(f"[green]✓[/green] {description} [dim]({time.perf_counter() - t0:.1f}s)[/dim]")


def note(text: str) -> None:
    if not _quiet:
        console.print(text)
