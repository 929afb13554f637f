"""A cache of built bundles, so identical inputs are not rebuilt (``edgepack tune``).

The key is a sha256 over everything a build reads:

- the source: its file (a SavedModel: every file under it; ``file.py:callable``: the ``.py`` file, the callable's
  name and every regular file beside it, e.g. its ``weights.npz``: the loader cannot tell what the code reads);
- the build options (``BuildOptions.recorded()``) with the calibration and eval data by their sha256;
- the tools: the installed version of every distribution a declared route imports (``Route.requires``, looked up
  without importing), numpy, onnx, onnxruntime, and edgepack's own version plus a digest of the code a build runs
  (``BUILD_MODULES`` and the converters), so a changed converter is a miss even at the same version number.

Entries are bundles (``<key>.edgepack``), written atomically by the builder itself (temp name + rename); a hit is
verified (schema + every member's sha256) before use and a corrupt entry is rebuilt. Failed builds are not
cached. Location: ``--cache-dir``, else ``$EDGEPACK_CACHE_DIR/builds``, else ``$XDG_CACHE_HOME/edgepack/builds``
(default ``~/.cache/edgepack/builds``); delete the folder to empty it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from edgepack import __version__, converters, registry  # type: ignore[attr-defined]  # converters/: package-dir
from edgepack.bundle import sha256_file, verify_bundle
from edgepack.errors import UsageError
from edgepack.types import BuildOptions

KEY_VERSION = 1  # bump when the key's recipe changes


def default_dir() -> Path:
    env = os.environ.get("EDGEPACK_CACHE_DIR")
    if env:
        return Path(env) / "builds"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgepack" / "builds"


def _hash_files(h: Any, root: Path, files: list[Path]) -> None:
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + sha256_file(f).encode() + b"\0")


def source_digest(source: str) -> str:
    """sha256 of what the source loader reads (see the module doc)."""
    split = converters.split_callable(source)
    h = hashlib.sha256()
    if split:
        path, name = split
        if not path.is_file():
            raise UsageError(f"source {path} does not exist", "pass an existing file.py:callable")
        h.update(f"callable:{name}\0".encode())
        siblings = sorted(p for p in path.parent.iterdir() if p.is_file() and not p.name.startswith("."))
        _hash_files(h, path.parent, siblings)
        return h.hexdigest()
    path = Path(source)
    if path.is_dir():
        _hash_files(h, path, sorted(p for p in path.rglob("*") if p.is_file()))
        return h.hexdigest()
    if not path.is_file():
        raise UsageError(f"source {path} does not exist", "pass an existing model file")
    h.update(sha256_file(path).encode())
    return h.hexdigest()


@lru_cache(maxsize=None)
def tool_versions() -> dict[str, str]:
    """Installed versions of the distributions the routes import (found without importing them)."""
    from importlib import metadata

    modules = {m for r in registry.routes() for m in r.requires} | {"numpy", "onnx", "onnxruntime"}
    dists = metadata.packages_distributions()
    out: dict[str, str] = {}
    for m in sorted(modules):
        names = dists.get(m) or []
        if not names:
            out[f"module:{m}"] = "missing"
        for d in names:
            try:
                out[d.lower()] = metadata.version(d)
            except metadata.PackageNotFoundError:  # pragma: no cover - a module without its metadata
                out[d.lower()] = "unknown"
    out["edgepack"] = f"{__version__}+{_code_digest()[:16]}"
    return out


# edgepack's modules a build runs (load -> convert -> validate -> bundle); with every converters/ module they make
# the code digest, so a changed route or builder is a cache miss, while a change to reports or bench is not.
BUILD_MODULES = ("builder", "bundle", "capture", "data", "errors", "outputs", "registry", "types", "validate")


def _code_digest() -> str:
    """sha256 of the builder's and the converters' Python files."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    _hash_files(h, here.parent, [here / f"{m}.py" for m in BUILD_MODULES])
    conv = Path(converters.__file__).parent
    _hash_files(h, conv.parent, sorted(conv.glob("*.py")))
    return h.hexdigest()


def key(source_sha: str, options: BuildOptions) -> str:
    recipe = {
        "v": KEY_VERSION,
        "source": source_sha,
        "options": options.recorded(),
        "calibration": sha256_file(options.data.calibration) if options.data.calibration else None,
        "eval": sha256_file(options.data.eval) if options.data.eval else None,
        "tools": tool_versions(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


class BuildCache:
    """Bundles by key in one folder; ``root=None`` = no cache (entries go to a temp folder of the caller's)."""

    def __init__(self, root: Optional[Path]):
        self.root = Path(root) if root is not None else None

    def path(self, k: str) -> Optional[Path]:
        return self.root / f"{k}.edgepack" if self.root is not None else None

    def get(self, k: str) -> Optional[Path]:
        """The cached bundle for ``k`` if present and intact (a corrupt one is removed)."""
        p = self.path(k)
        if p is None or not p.is_file():
            return None
        try:
            _, problems = verify_bundle(p)
        except Exception:  # unreadable as a bundle at all
            problems = ["unreadable"]
        if problems:
            p.unlink(missing_ok=True)
            return None
        return p

    def get_json(self, k: str, kind: str) -> Optional[dict[str, Any]]:
        if self.root is None:
            return None
        p = self.root / f"{k}.{kind}.json"
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put_json(self, k: str, kind: str, data: dict[str, Any]) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{k}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, sort_keys=True)
            os.replace(tmp, self.root / f"{k}.{kind}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
