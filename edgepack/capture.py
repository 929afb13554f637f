"""Frameworks' own output during a build, kept out of the user's terminal.

TensorFlow/absl (C++), XLA, torchao and coremltools write log lines and warnings straight to file descriptors 1
and 2, below Python. ``framework_output(log)`` points both descriptors at a log file while a stage runs;
edgepack's own progress goes to the terminal through ``ui``, which writes to a duplicate of the original stderr
taken before any capture. With ``--verbose`` the build keeps the log and names
it in errors.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Iterator

# Environment the frameworks read at import: set before any route imports them.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
    "ABSL_MIN_LOG_LEVEL": "3",
}


def quiet_environment() -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)


@contextlib.contextmanager
def framework_output(log: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 to ``log`` while the block runs: C++ logs and Python's ``sys.stdout``/
    ``sys.stderr`` writes (print, warnings, logging's handlers) alike. Python's stream objects stay the same, so
    a handler a framework makes meanwhile keeps working afterwards (it then writes to the terminal again)."""
    quiet_environment()
    _flush()
    try:
        fds = (sys.stdout.fileno(), sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # streams without descriptors (a test harness): Python only
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                yield
        finally:
            with open(log, "a", encoding="utf-8") as f:
                f.write(buffer.getvalue())
        return
    saved = [os.dup(fd) for fd in fds]
    try:
        with open(log, "ab") as f:
            for fd in fds:
                os.dup2(f.fileno(), fd)
        yield
    finally:
        _flush()
        for fd, old in zip(fds, saved):
            os.dup2(old, fd)
            os.close(old)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
