"""Output files checked before the work that fills them: never one of the inputs, and writable.

``bench --json X`` after a ten-minute bench, or ``build -o`` after a long conversion, must not end in a
traceback (results lost) nor replace an input. Both checks run first and raise a one-line UsageError.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Union

from edgepack.errors import UsageError

PathLike = Union[str, Path]


def _is_stdout(path: Optional[PathLike]) -> bool:
    return path is None or str(path) == "-"


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwrite(output: Optional[PathLike], inputs: Iterable[Optional[PathLike]], flag: str) -> None:
    """UsageError when ``output`` is (the same file as) one of ``inputs``."""
    if _is_stdout(output):
        return
    assert output is not None  # _is_stdout
    out = Path(output)
    for i in inputs:
        if i is None or str(i) == "-":
            continue
        if _same(out, Path(i)):
            raise UsageError(
                f"{flag} {out} is also an input of this command; writing it would replace that input",
                f"pass another file to {flag}",
            )


def check_writable(path: Optional[PathLike], flag: str) -> None:
    """UsageError unless ``path`` can be written (atomically: a temp file in its folder, then a rename).

    Tried for real (a temp file is created and removed), so read-only mounts count even for root."""
    if _is_stdout(path):
        return
    assert path is not None  # _is_stdout
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {p} is a directory", f"pass a file name to {flag}")
    if p.exists() and not p.is_file():
        raise UsageError(f"{flag} {p} is not a regular file", f"pass a file name to {flag}")
    folder = p.parent
    while not folder.exists():  # written later with mkdir -p: the nearest existing folder decides
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {p}: {folder} is not a folder", f"pass a path in a writable folder to {flag}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".edgepack-write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UsageError(
            f"{flag} {p} cannot be written ({e.strerror or e} in {folder})",
            f"pass a path in a writable folder to {flag}",
        )


def check_outputs(outputs: dict[str, Optional[PathLike]], inputs: Iterable[Optional[PathLike]]) -> None:
    """Both checks for every ``{flag: path}`` of one command, and no two outputs the same file."""
    inputs = list(inputs)
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if _is_stdout(path):
            continue
        refuse_overwrite(path, inputs, flag)
        check_writable(path, flag)
        assert path is not None  # _is_stdout
        key = os.path.realpath(path)
        if key in seen:
            raise UsageError(f"{seen[key]} and {flag} name the same file {path}", "pass different files")
        seen[key] = flag


def check_build_output(output: PathLike, source: PathLike, *inputs: Optional[PathLike]) -> None:
    """``build``'s ``-o``: not the source model (``model.onnx`` or the ``file.py`` of ``file.py:callable``),
    not a data set, and writable -- checked before loading and converting."""
    src = str(source)
    sources = [Path(src)] + ([Path(src.rsplit(":", 1)[0])] if ":" in src else [])
    check_outputs({"-o": output}, [*sources, *inputs])
