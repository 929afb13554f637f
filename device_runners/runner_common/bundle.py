"""Reading a bundle on the device: the manifest, bomb limits, sha256 checks, safe extraction, golden/eval data.

edgepack's ``verify``, ``inspect``, ``deploy`` and ``bench`` run these same checks on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from typing import IO, TYPE_CHECKING, Any, Optional

from .errors import EXIT_BUNDLE_INVALID, EXIT_USAGE, RunnerError
from .system import pid_alive

if TYPE_CHECKING:
    from numpy.typing import NDArray

MANIFEST_SCHEMA_PREFIX = "edgepack.manifest/"
MANIFEST_MAJOR = "1"  # manifests "edgepack.manifest/1" and "edgepack.manifest/1.x" are read; other majors refused
MANIFEST_MEMBER = "manifest.json"

# golden.npz / eval.npz layout: "input/<name>", "output/<name>", "labels"
INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
LABELS_KEY = "labels"


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


# Limits on what a bundle may unpack to. They are checked from the zip headers before any member is read
# (a header's size also bounds what zipfile will inflate), again inside golden.npz/eval.npz, and a manifest's
# declared sizes ("sizes") must equal the headers'. The runner's --max-unpacked-bytes/--max-ratio replace the
# defaults through set_limits().
MAX_MANIFEST_BYTES = 16 << 20  # manifest.json
MAX_UNPACKED_BYTES = _env_int("EDGEPACK_MAX_UNPACKED_BYTES", 4 << 30)  # all members together
MAX_RATIO = _env_int("EDGEPACK_MAX_RATIO", 100)  # unpacked / packed bytes of one member ...
RATIO_MIN_BYTES = 1 << 20  # ... for members that unpack to at least this much


def set_limits(max_unpacked: Optional[int] = None, max_ratio: Optional[int] = None) -> None:
    """Replace the default limits for the rest of this process (the runner's command-line limits)."""
    global MAX_RATIO, MAX_UNPACKED_BYTES
    if max_ratio:
        MAX_RATIO = max_ratio
    if max_unpacked:
        MAX_UNPACKED_BYTES = max_unpacked


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _check_member_name(name: str) -> None:
    """Reject names that could escape the extraction directory."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name.split("/")[0]:
        raise RunnerError(
            "unsafe member name in bundle: %r" % name, "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID
        )
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise RunnerError(
            "unsafe member name in bundle: %r" % name, "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID
        )


def _is_link(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0xFFFF
    return stat.S_ISLNK(mode)


def _mib(n: int) -> str:
    return "%.1f MiB" % (n / 1048576.0)


def check_zip_headers(
    zf: zipfile.ZipFile, max_unpacked: Optional[int] = None, max_ratio: Optional[int] = None, what: str = "bundle"
) -> int:
    """Refuse a decompression bomb from the zip headers alone, before any member is read: the total
    unpacked size, each large member's compression ratio, and the size of manifest.json."""
    max_unpacked = max_unpacked or MAX_UNPACKED_BYTES
    max_ratio = max_ratio or MAX_RATIO
    total = 0
    for info in zf.infolist():
        size = info.file_size
        total += size
        if info.filename == MANIFEST_MEMBER and size > MAX_MANIFEST_BYTES:
            raise RunnerError(
                "%s: manifest.json unpacks to %s (limit %s)" % (what, _mib(size), _mib(MAX_MANIFEST_BYTES)),
                "this is not a bundle edgepack wrote; rebuild it",
                EXIT_BUNDLE_INVALID,
            )
        if size >= RATIO_MIN_BYTES and size > max_ratio * max(1, info.compress_size):
            raise RunnerError(
                "%s: member %s inflates %d:1 (%s from %d bytes; limit %d:1)"
                % (what, info.filename, size // max(1, info.compress_size), _mib(size), info.compress_size, max_ratio),
                "a decompression bomb, or a bundle edgepack did not write; rebuild it (or raise EDGEPACK_MAX_RATIO)",
                EXIT_BUNDLE_INVALID,
            )
    if total > max_unpacked:
        raise RunnerError(
            "%s unpacks to %s (limit %s)" % (what, _mib(total), _mib(max_unpacked)),
            "for a bigger model set EDGEPACK_MAX_UNPACKED_BYTES (bytes) where edgepack runs",
            EXIT_BUNDLE_INVALID,
        )
    return total


def read_manifest(zf: zipfile.ZipFile, max_unpacked: Optional[int] = None) -> dict[str, Any]:
    check_zip_headers(zf, max_unpacked)
    try:
        raw = zf.read(MANIFEST_MEMBER)
    except KeyError:
        raise RunnerError(
            "not an edgepack bundle: no manifest.json inside",
            "pass a .edgepack file written by edgepack build",
            EXIT_BUNDLE_INVALID,
        )
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        raise RunnerError(
            "manifest.json cannot be read (%s)" % e, "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID
        )
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise RunnerError(
            "manifest.json is not valid JSON (%s)" % e, "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID
        )
    if not isinstance(manifest, dict):
        raise RunnerError(
            "manifest.json is a JSON %s, not an object" % type(manifest).__name__,
            "rebuild the bundle with edgepack build",
            EXIT_BUNDLE_INVALID,
        )
    schema = manifest.get("schema")
    schema = schema if isinstance(schema, str) else repr(schema)
    if not schema.startswith(MANIFEST_SCHEMA_PREFIX):
        raise RunnerError(
            "unknown manifest schema %r" % schema, "rebuild the bundle with this edgepack version", EXIT_BUNDLE_INVALID
        )
    if schema[len(MANIFEST_SCHEMA_PREFIX) :].split(".")[0] != MANIFEST_MAJOR:
        raise RunnerError(
            "manifest schema %r is not supported (this edgepack reads %s%s)"
            % (schema, MANIFEST_SCHEMA_PREFIX, MANIFEST_MAJOR),
            "use the edgepack version that wrote the bundle, or rebuild it",
            EXIT_BUNDLE_INVALID,
        )
    return manifest


def declared_sizes(manifest: dict[str, Any]) -> Optional[dict[str, int]]:
    """{member: bytes} the manifest declares: its "sizes" (new bundles), else the model's "bytes"."""
    sizes = manifest.get("sizes")
    if sizes is not None:
        if not isinstance(sizes, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes.values()
        ):
            return None
        return dict(sizes)
    raw_model = manifest.get("model")
    model: dict[str, Any] = raw_model if isinstance(raw_model, dict) else {}
    if isinstance(model.get("member"), str) and isinstance(model.get("bytes"), int):
        return {model["member"]: model["bytes"]}  # a directory model (.mlpackage) matches no file: unchecked
    return {}


def verify_zip(zf: zipfile.ZipFile, manifest: dict[str, Any]) -> list[str]:
    """Check every member against the manifest's sha256 list. Returns a list of problems."""
    problems: list[str] = []
    listed = manifest.get("members") or {}
    if not isinstance(listed, dict):
        return ["manifest members is not an object"]
    sizes = declared_sizes(manifest)
    if sizes is None:
        return ["manifest sizes is not an object of member byte counts"]
    strict_sizes = "sizes" in manifest
    seen: set[str] = set()
    bad_size: set[str] = set()
    for info in zf.infolist():
        name = info.filename
        if name == MANIFEST_MEMBER:
            continue
        try:
            _check_member_name(name)
        except RunnerError as e:
            problems.append(e.message)
            continue
        if _is_link(info):
            problems.append("member %s is a symbolic link" % name)
            continue
        if name.endswith("/"):
            continue
        seen.add(name)
        want = listed.get(name)
        if want is None:
            problems.append("member %s is not listed in the manifest" % name)
            continue
        size = sizes.get(name)
        if size is None and strict_sizes:
            problems.append("member %s has no declared size in the manifest" % name)
            bad_size.add(name)
            continue
        if size is not None and size != info.file_size:
            problems.append("member %s unpacks to %d bytes, the manifest declares %d" % (name, info.file_size, size))
            bad_size.add(name)
            continue
        h = hashlib.sha256()
        try:
            with zf.open(info) as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except (zipfile.BadZipFile, zlib.error, OSError) as e:
            problems.append("member %s cannot be read (%s)" % (name, e))
            continue
        if h.hexdigest() != want:
            problems.append(
                "member %s: sha256 mismatch (manifest %s..., file %s...)" % (name, str(want)[:12], h.hexdigest()[:12])
            )
            bad_size.add(name)
    for name in sorted(set(listed) - seen):
        problems.append("member %s is listed in the manifest but missing" % name)
    if strict_sizes:
        for name in sorted(set(sizes) - set(listed)):
            problems.append("the manifest declares a size for %s, which it does not list" % name)
    if not problems:
        for key in ("golden", "eval"):
            ref = manifest.get(key)
            if isinstance(ref, dict) and ref.get("member") in seen:
                problems.extend(npz_problems(zf, ref["member"], ref.get("samples"), manifest))
    return problems


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, Any]:
    import numpy as np

    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)
    if version == (2, 0):
        return fmt.read_array_header_2_0(f)
    raise ValueError("unsupported .npy version %s" % (version,))


def npz_problems(zf: zipfile.ZipFile, member: str, samples: Any, manifest: dict[str, Any]) -> list[str]:
    """golden.npz / eval.npz checked before numpy loads it: its own zip headers (bomb limits), every array's
    header (no pickled object arrays; ``samples`` rows, as the manifest says; the inputs' static dims)."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        return ["%s: the manifest's sample count %r is not a count" % (member, samples)]
    specs: dict[str, dict[str, Any]] = {}
    for prefix, key in ((INPUT_PREFIX, "inputs"), (OUTPUT_PREFIX, "outputs")):
        for s in manifest.get(key) or []:
            if isinstance(s, dict) and isinstance(s.get("name"), str):
                specs[prefix + s["name"]] = s
    problems: list[str] = []
    try:
        # a seekable copy (in memory up to 16 MiB, else a temp file; bounded by the checked member size): a
        # ZipFile over the member's stream would inflate it again for every backward seek
        with zf.open(member) as raw, tempfile.SpooledTemporaryFile(16 << 20) as copy:
            shutil.copyfileobj(raw, copy, 1 << 20)
            copy.seek(0)
            problems.extend(_npz_header_problems(copy, member, samples, specs))
    except RunnerError as e:
        problems.append(e.message)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:
        problems.append("%s is not a readable .npz (%s)" % (member, e))
    return problems


def _npz_header_problems(fileobj: IO[bytes], member: str, samples: int, specs: dict[str, dict[str, Any]]) -> list[str]:
    """The checks of :func:`npz_problems` on a seekable .npz file object."""
    problems: list[str] = []
    with zipfile.ZipFile(fileobj) as inner:
        check_zip_headers(inner, what=member)
        for info in inner.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            try:
                with inner.open(info) as f:
                    shape, _, dtype = _npy_header(f)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
                problems.append("%s: array %s has no valid .npy header (%s)" % (member, key, e))
                continue
            if dtype.hasobject:
                problems.append("%s: array %s is a pickled object array (never loaded)" % (member, key))
                continue
            count = 1
            for d in shape:
                count *= d
            if count * dtype.itemsize > info.file_size:
                problems.append(
                    "%s: array %s declares %s of data but holds %d bytes"
                    % (member, key, _mib(count * dtype.itemsize), info.file_size)
                )
                continue
            if key.startswith(OUTPUT_PREFIX):
                continue  # an output's leading axis need not be the batch
            if not shape or shape[0] != samples:
                problems.append(
                    "%s: array %s holds %s samples, the manifest says %d"
                    % (member, key, shape[0] if shape else "no", samples)
                )
                continue
            spec = specs.get(key)
            if spec is not None:
                want = list(spec.get("shape") or [])[1:]
                got = list(shape[1:])
                if len(want) != len(got) or any(isinstance(w, int) and w > 0 and w != g for w, g in zip(want, got)):
                    problems.append("%s: array %s has per-sample shape %s, the input is %s" % (member, key, got, want))
    return problems


def remove_stale_workdirs(workdir: str) -> None:
    """Remove extraction dirs left by runners that were killed (SIGKILL, power loss) before cleaning up."""
    try:
        names = os.listdir(workdir)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if name.startswith("edgepack-run-") and len(parts) >= 4 and parts[2].isdigit():
            if not pid_alive(int(parts[2])):
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)


class Bundle(object):
    """An opened, verified bundle extracted into a private temporary directory."""

    def __init__(self, path: str, workdir: Optional[str] = None, max_unpacked: Optional[int] = None) -> None:
        self.path = path
        if not os.path.isfile(path):
            raise RunnerError("bundle %s does not exist" % path, "check the path", EXIT_USAGE)
        self.sha256 = sha256_file(path)
        self.dir: Optional[str] = None
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise RunnerError(
                "cannot open bundle %s: %s" % (path, e),
                "pass a .edgepack file written by edgepack build",
                EXIT_BUNDLE_INVALID,
            )
        with zf:
            self.manifest = read_manifest(zf, max_unpacked)
            problems = verify_zip(zf, self.manifest)
            if problems:
                raise RunnerError(
                    "bundle failed verification: " + "; ".join(problems),
                    "the file is corrupt or was modified; rebuild or re-upload it",
                    EXIT_BUNDLE_INVALID,
                )
            if workdir:
                remove_stale_workdirs(workdir)
            self.dir = tempfile.mkdtemp(prefix="edgepack-run-%d-" % os.getpid(), dir=workdir)
            try:
                for info in zf.infolist():
                    if info.filename.endswith("/") or info.filename == MANIFEST_MEMBER:
                        continue
                    target = os.path.join(self.dir, *info.filename.split("/"))
                    real_root = os.path.realpath(self.dir)
                    if not os.path.realpath(target).startswith(real_root + os.sep):
                        raise RunnerError(
                            "unsafe member name in bundle: %r" % info.filename,
                            "rebuild the bundle",
                            EXIT_BUNDLE_INVALID,
                        )
                    parent = os.path.dirname(target)
                    if not os.path.isdir(parent):
                        os.makedirs(parent)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            except BaseException:
                self.close()
                raise

    def member(self, name: str) -> str:
        """The extracted path of a member (``name`` as the manifest spells it)."""
        if self.dir is None:
            raise RunnerError("bundle %s is closed" % self.path)
        return os.path.join(self.dir, *name.split("/"))

    def close(self) -> None:
        if self.dir and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_npz(path: str) -> dict[str, NDArray[Any]]:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def split_npz(
    data: dict[str, NDArray[Any]],
) -> tuple[dict[str, NDArray[Any]], dict[str, NDArray[Any]], Optional[NDArray[Any]]]:
    """golden/eval layout: ``input/<name>``, ``output/<name>``, ``labels``."""
    inputs = {k[len(INPUT_PREFIX) :]: v for k, v in data.items() if k.startswith(INPUT_PREFIX)}
    outputs = {k[len(OUTPUT_PREFIX) :]: v for k, v in data.items() if k.startswith(OUTPUT_PREFIX)}
    return inputs, outputs, data.get(LABELS_KEY)
