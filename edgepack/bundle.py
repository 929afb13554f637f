"""The .edgepack file: a deterministic zip of manifest.json, the model, golden.npz and eval.npz.

Written atomically (temp file in the target directory, then rename) and
byte-identically for identical inputs. Reading and checksum verification reuse
the device runner's own code, so host and device agree on what "valid" means.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Union, cast

from pydantic import ValidationError

from edgepack.data import ZIP_EPOCH
from edgepack.device_runners import runner_common
from edgepack.errors import EdgepackError, UsageError
from edgepack.types import Manifest

MANIFEST_MEMBER = runner_common.MANIFEST_MEMBER
Content = Union[bytes, Path]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return cast(str, runner_common.sha256_file(str(path)))


def expand_members(members: dict[str, Content]) -> dict[str, Content]:
    """Directories (e.g. an .mlpackage) become one member per file, with posix paths."""
    out: dict[str, Content] = {}
    for name, content in members.items():
        if isinstance(content, Path) and content.is_dir():
            for p in sorted(content.rglob("*")):
                if p.is_symlink():
                    raise EdgepackError(f"{p} is a symbolic link; bundles hold regular files only")
                if p.is_file():
                    out[name + "/" + p.relative_to(content).as_posix()] = p
        else:
            out[name] = content
    return out


def member_digests(members: dict[str, Content]) -> dict[str, str]:
    return {name: (sha256_bytes(c) if isinstance(c, bytes) else sha256_file(c)) for name, c in sorted(members.items())}


def member_sizes(members: dict[str, Content]) -> dict[str, int]:
    return {name: (len(c) if isinstance(c, bytes) else c.stat().st_size) for name, c in sorted(members.items())}


def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    return info


def write_bundle(path: Path, manifest: Manifest, members: dict[str, Content]) -> int:
    """Write manifest + members to ``path`` atomically; return the file size.

    ``manifest.sizes`` is set here to the members' unpacked sizes (readers check them before inflating)."""
    path = Path(path)
    manifest.sizes = member_sizes(members)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_zipinfo(MANIFEST_MEMBER), manifest.to_json().encode("utf-8"))
            for name in sorted(members):
                content = members[name]
                if isinstance(content, Path):
                    with (
                        zf.open(_zipinfo(name), "w", force_zip64=content.stat().st_size > 2**31) as dst,
                        open(content, "rb") as src,
                    ):
                        while block := src.read(1 << 20):
                            dst.write(block)
                else:
                    zf.writestr(_zipinfo(name), content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _open_zip(path: Path) -> zipfile.ZipFile:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"bundle {path} does not exist", "pass the .edgepack file that edgepack build wrote")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise EdgepackError(
            f"{path.name} is not a valid bundle (not a zip file: {e})", "rebuild it with edgepack build"
        )


def _manifest(zf: zipfile.ZipFile, name: str) -> tuple[dict[str, Any], Manifest]:
    try:
        raw = runner_common.read_manifest(zf)
    except runner_common.RunnerError as e:
        raise EdgepackError(f"{name}: {e.message}", e.hint)
    try:
        return raw, Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise EdgepackError(
            f"{name}: manifest.json does not match the schema at {where}: {first['msg']}",
            "rebuild the bundle with this edgepack version",
        )


def read_manifest(path: Path) -> Manifest:
    """Read and schema-check the manifest (no checksum pass; see verify_bundle)."""
    with _open_zip(path) as zf:
        return _manifest(zf, Path(path).name)[1]


def verify_bundle(path: Path) -> tuple[Manifest, list[str]]:
    """Schema + every member's sha256. Returns the manifest and a list of problems (empty = valid)."""
    with _open_zip(path) as zf:
        raw, manifest = _manifest(zf, Path(path).name)
        problems = runner_common.verify_zip(zf, raw)
        model = manifest.model.member  # a file, or a directory prefix (model.mlpackage/...)
        if model not in manifest.members and not any(m.startswith(model + "/") for m in manifest.members):
            problems.append(f"model member {model} is not listed in members")
        for ref in (manifest.golden, manifest.eval):
            if ref is not None and ref.member not in manifest.members:
                problems.append(f"data member {ref.member} is not listed in members")
    return manifest, problems


def read_member(path: Path, member: str) -> bytes:
    with _open_zip(path) as zf:
        _manifest(zf, Path(path).name)  # the bomb limits, from the headers, before reading anything
        return zf.read(member)


def manifest_json_schema() -> str:
    schema = Manifest.model_json_schema(by_alias=True)
    schema["$id"] = "https://edgepack.dev/schemas/manifest-1.json"
    schema["title"] = "edgepack bundle manifest (edgepack.manifest/1)"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
