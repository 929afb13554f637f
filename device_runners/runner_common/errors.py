"""Exit codes and the one error type of the device runner."""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_RUNTIME_MISSING = 3
EXIT_BUNDLE_INVALID = 4
EXIT_TIMEOUT = 124
# Exit codes are shared with edgepack (edgepack/bencher.py maps them to messages).


class RunnerError(Exception):
    """A failure with a one-line message and a hint; ``code`` is the exit code."""

    def __init__(self, message: str, hint: str = "", code: int = EXIT_ERROR) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.hint = hint
        self.code = code
