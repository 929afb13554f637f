"""Frameworks' own output during a build, kept out of the user's terminal.

TensorFlow/absl (C++), XLA, torchao and coremltools write log lines and warnings straight to file descriptors 1
and 2, below Python. ``framework_output(log)`` points both descriptors (and Python's warnings and logging) at a
log file while a stage runs; edgepack's own progress goes to the terminal through ``ui``, which writes to a
duplicate of the original stderr taken before any capture. With ``--verbose`` the build keeps the log and names
it in errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

# Environment the frameworks read at import: set before any route imports them.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "GRPC_VERBOSITY": "ERROR",
             "GLOG_minloglevel": "3", "ABSL_MIN_LOG_LEVEL": "3"}


def quiet_environment() -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)


@contextlib.contextmanager
def framework_output(log: Path):
    """Send fds 1/2, ``warnings`` and the root logger's output to ``log`` while the block runs."""
    quiet_environment()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        fds = (sys.stdout.fileno(), sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # streams without descriptors (a test harness): Python only
        fds = ()
    saved = [os.dup(fd) for fd in fds]
    with open(log, "ab") as f:
        for fd in fds:
            os.dup2(f.fileno(), fd)
        handler = logging.StreamHandler(open(log, "a", encoding="utf-8", errors="replace"))  # noqa: SIM115
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(handler.stream), \
                    contextlib.redirect_stderr(handler.stream):
                warnings.simplefilter("always")
                warnings.showwarning = _to(handler.stream)
                yield
        finally:
            root.removeHandler(handler)
            handler.stream.close()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)


def _to(stream):
    def show(message, category, filename, lineno, file=None, line=None):
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))

    return show
