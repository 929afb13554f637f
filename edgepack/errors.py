"""One error type for everything edgepack reports to a user.

Each error carries a one-line ``message`` (what is wrong) and a ``hint`` (how to
fix it); the CLI maps it to one line on stderr and the exit code, and shows the
traceback only when ``EDGEPACK_DEBUG=1``.
"""

from __future__ import annotations

from types import ModuleType


class EdgepackError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str = "", exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        """Message and hint on one line; control characters (from a bundle, a device's output, a file name)
        are shown as \\xNN so they cannot act on the terminal."""
        import re

        text = self.message.replace("\n", " ").strip()
        if self.hint:
            text += f" (fix: {self.hint.strip()})"
        return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", text)


class UsageError(EdgepackError):
    """Bad command-line input or API arguments."""

    exit_code = 2


class MissingExtraError(EdgepackError):
    """A framework needed by a conversion route is not installed."""

    exit_code = 3


class ValidationFailed(EdgepackError):
    """The converted model disagrees with the source beyond the tolerance."""

    exit_code = 4


class DeviceError(EdgepackError):
    """The device could not be reached, refused us, or the runner failed there."""

    exit_code = 5


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's text (frameworks raise multi-page messages). A first line that
    only announces what follows (TensorFlow's "Graph execution error:") gets the telling line after it: the last
    one that is not a traceback frame or a node reference ("Incompatible shapes: [1,2,4,96] vs [1,4,4,96]")."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        told = [
            ln
            for ln in lines[1:]
            if not ln.startswith(("File ", "[[", "Detected at node", "Traceback", "^")) and not ln.endswith(":")
        ]
        if told:
            return f"{lines[0]} {told[-1]}"
    return lines[0]


def require(module: str, extra: str) -> ModuleType:
    """Import a framework lazily; when missing, say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"this route needs {module.split('.')[0]}, which is not installed ({e})",
            f"pip install 'edgepack[{extra}]'",
        ) from e
