"""What every edgepack device runner needs, whatever the runtime.

This folder travels to the device whole. It imports only the standard library
and numpy (never edgepack, never a framework) and runs on Python 3.9+.

A runtime module (``onnx_runner.py``, ...) defines a small backend object and
calls :func:`main`; everything else -- bundle reading, sha256 checks, safe
extraction, the timing loop, statistics, golden/eval checks and the one JSON
document printed on stdout -- lives here, so every runtime reports the same keys.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import stat
import sys
import tempfile
import time
import zipfile
import zlib

RESULT_SCHEMA = "edgepack.result/1"
MANIFEST_SCHEMA_PREFIX = "edgepack.manifest/"
MANIFEST_MAJOR = "1"  # manifests "edgepack.manifest/1" and "edgepack.manifest/1.x" are read; other majors refused
MANIFEST_MEMBER = "manifest.json"


def _env_int(name, default):
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


# Limits on what a bundle may unpack to. They are checked from the zip headers before any member is read
# (a header's size also bounds what zipfile will inflate), again inside golden.npz/eval.npz, and a manifest's
# declared sizes ("sizes") must equal the headers'.
MAX_MANIFEST_BYTES = 16 << 20  # manifest.json
MAX_UNPACKED_BYTES = _env_int("EDGEPACK_MAX_UNPACKED_BYTES", 4 << 30)  # all members together
MAX_RATIO = _env_int("EDGEPACK_MAX_RATIO", 100)  # unpacked / packed bytes of one member ...
RATIO_MIN_BYTES = 1 << 20  # ... for members that unpack to at least this much

# Exit codes shared with edgepack (edgepack/transport.py maps them to messages).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_RUNTIME_MISSING = 3
EXIT_BUNDLE_INVALID = 4

INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
LABELS_KEY = "labels"


class RunnerError(Exception):
    """A failure with a one-line message and a hint; ``code`` is the exit code."""

    def __init__(self, message, hint="", code=EXIT_ERROR):
        Exception.__init__(self, message)
        self.message = message
        self.hint = hint
        self.code = code


# --------------------------------------------------------------------------- bundle


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _check_member_name(name):
    """Reject names that could escape the extraction directory."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name.split("/")[0]:
        raise RunnerError("unsafe member name in bundle: %r" % name,
                          "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID)
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise RunnerError("unsafe member name in bundle: %r" % name,
                          "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID)


def _is_link(info):
    mode = (info.external_attr >> 16) & 0xFFFF
    return stat.S_ISLNK(mode)


def _mib(n):
    return "%.1f MiB" % (n / 1048576.0)


def check_zip_headers(zf, max_unpacked=None, max_ratio=None, what="bundle"):
    """Refuse a decompression bomb from the zip headers alone, before any member is read: the total
    unpacked size, each large member's compression ratio, and the size of manifest.json."""
    max_unpacked = max_unpacked or MAX_UNPACKED_BYTES
    max_ratio = max_ratio or MAX_RATIO
    total = 0
    for info in zf.infolist():
        size = info.file_size
        total += size
        if info.filename == MANIFEST_MEMBER and size > MAX_MANIFEST_BYTES:
            raise RunnerError("%s: manifest.json unpacks to %s (limit %s)"
                              % (what, _mib(size), _mib(MAX_MANIFEST_BYTES)),
                              "this is not a bundle edgepack wrote; rebuild it", EXIT_BUNDLE_INVALID)
        if size >= RATIO_MIN_BYTES and size > max_ratio * max(1, info.compress_size):
            raise RunnerError("%s: member %s inflates %d:1 (%s from %d bytes; limit %d:1)"
                              % (what, info.filename, size // max(1, info.compress_size), _mib(size),
                                 info.compress_size, max_ratio),
                              "a decompression bomb, or a bundle edgepack did not write; rebuild it "
                              "(or raise EDGEPACK_MAX_RATIO)", EXIT_BUNDLE_INVALID)
    if total > max_unpacked:
        raise RunnerError("%s unpacks to %s (limit %s)" % (what, _mib(total), _mib(max_unpacked)),
                          "for a bigger model set EDGEPACK_MAX_UNPACKED_BYTES (bytes) where edgepack runs",
                          EXIT_BUNDLE_INVALID)
    return total


def read_manifest(zf, max_unpacked=None):
    check_zip_headers(zf, max_unpacked)
    try:
        raw = zf.read(MANIFEST_MEMBER)
    except KeyError:
        raise RunnerError("not an edgepack bundle: no manifest.json inside",
                          "pass a .edgepack file written by edgepack build", EXIT_BUNDLE_INVALID)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        raise RunnerError("manifest.json cannot be read (%s)" % e,
                          "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise RunnerError("manifest.json is not valid JSON (%s)" % e,
                          "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID)
    if not isinstance(manifest, dict):
        raise RunnerError("manifest.json is a JSON %s, not an object" % type(manifest).__name__,
                          "rebuild the bundle with edgepack build", EXIT_BUNDLE_INVALID)
    schema = manifest.get("schema")
    schema = schema if isinstance(schema, str) else repr(schema)
    if not schema.startswith(MANIFEST_SCHEMA_PREFIX):
        raise RunnerError("unknown manifest schema %r" % schema,
                          "rebuild the bundle with this edgepack version", EXIT_BUNDLE_INVALID)
    if schema[len(MANIFEST_SCHEMA_PREFIX):].split(".")[0] != MANIFEST_MAJOR:
        raise RunnerError("manifest schema %r is not supported (this edgepack reads %s%s)"
                          % (schema, MANIFEST_SCHEMA_PREFIX, MANIFEST_MAJOR),
                          "use the edgepack version that wrote the bundle, or rebuild it", EXIT_BUNDLE_INVALID)
    return manifest


def declared_sizes(manifest):
    """{member: bytes} the manifest declares: its "sizes" (new bundles), else the model's "bytes"."""
    sizes = manifest.get("sizes")
    if sizes is not None:
        if not isinstance(sizes, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                  for v in sizes.values()):
            return None
        return dict(sizes)
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    if isinstance(model.get("member"), str) and isinstance(model.get("bytes"), int):
        return {model["member"]: model["bytes"]}  # a directory model (.mlpackage) matches no file: unchecked
    return {}


def verify_zip(zf, manifest):
    """Check every member against the manifest's sha256 list. Returns a list of problems."""
    problems = []
    listed = manifest.get("members") or {}
    if not isinstance(listed, dict):
        return ["manifest members is not an object"]
    sizes = declared_sizes(manifest)
    if sizes is None:
        return ["manifest sizes is not an object of member byte counts"]
    strict_sizes = "sizes" in manifest
    seen = set()
    bad_size = set()
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
            problems.append("member %s: sha256 mismatch (manifest %s..., file %s...)"
                            % (name, str(want)[:12], h.hexdigest()[:12]))
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


def _npy_header(f):
    import numpy as np

    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)
    if version == (2, 0):
        return fmt.read_array_header_2_0(f)
    raise ValueError("unsupported .npy version %s" % (version,))


def npz_problems(zf, member, samples, manifest):
    """golden.npz / eval.npz checked before numpy loads it: its own zip headers (bomb limits), every array's
    header (no pickled object arrays; ``samples`` rows, as the manifest says; the inputs' static dims)."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        return ["%s: the manifest's sample count %r is not a count" % (member, samples)]
    specs = {}
    for prefix, key in ((INPUT_PREFIX, "inputs"), (OUTPUT_PREFIX, "outputs")):
        for s in manifest.get(key) or []:
            if isinstance(s, dict) and isinstance(s.get("name"), str):
                specs[prefix + s["name"]] = s
    problems = []
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


def _npz_header_problems(fileobj, member, samples, specs):
    """The checks of :func:`npz_problems` on a seekable .npz file object."""
    problems = []
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
                problems.append("%s: array %s declares %s of data but holds %d bytes"
                                % (member, key, _mib(count * dtype.itemsize), info.file_size))
                continue
            if key.startswith(OUTPUT_PREFIX):
                continue  # an output's leading axis need not be the batch
            if not shape or shape[0] != samples:
                problems.append("%s: array %s holds %s samples, the manifest says %d"
                                % (member, key, shape[0] if shape else "no", samples))
                continue
            spec = specs.get(key)
            if spec is not None:
                want = list(spec.get("shape") or [])[1:]
                got = list(shape[1:])
                if len(want) != len(got) or any(isinstance(w, int) and w > 0 and w != g
                                                for w, g in zip(want, got)):
                    problems.append("%s: array %s has per-sample shape %s, the input is %s"
                                    % (member, key, got, want))
    return problems


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat_text = _read("/proc/%d/stat" % pid)
    if stat_text and stat_text.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
        return False  # a zombie: killed, waiting to be reaped
    return True


def remove_stale_workdirs(workdir):
    """Remove extraction dirs left by runners that were killed (SIGKILL, power loss) before cleaning up."""
    try:
        names = os.listdir(workdir)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if name.startswith("edgepack-run-") and len(parts) >= 4 and parts[2].isdigit():
            if not _pid_alive(int(parts[2])):
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)


class Bundle(object):
    """An opened, verified bundle extracted into a private temporary directory."""

    def __init__(self, path, workdir=None, max_unpacked=None):
        self.path = path
        if not os.path.isfile(path):
            raise RunnerError("bundle %s does not exist" % path, "check the path", EXIT_USAGE)
        self.sha256 = sha256_file(path)
        self.dir = None
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise RunnerError("cannot open bundle %s: %s" % (path, e),
                              "pass a .edgepack file written by edgepack build", EXIT_BUNDLE_INVALID)
        with zf:
            self.manifest = read_manifest(zf, max_unpacked)
            problems = verify_zip(zf, self.manifest)
            if problems:
                raise RunnerError("bundle failed verification: " + "; ".join(problems),
                                  "the file is corrupt or was modified; rebuild or re-upload it",
                                  EXIT_BUNDLE_INVALID)
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
                        raise RunnerError("unsafe member name in bundle: %r" % info.filename,
                                          "rebuild the bundle", EXIT_BUNDLE_INVALID)
                    parent = os.path.dirname(target)
                    if not os.path.isdir(parent):
                        os.makedirs(parent)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            except BaseException:
                self.close()
                raise

    def member(self, name):
        return os.path.join(self.dir, *name.split("/"))

    def close(self):
        if self.dir and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_npz(path):
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def split_npz(data):
    """golden/eval layout: ``input/<name>``, ``output/<name>``, ``labels``."""
    inputs = {k[len(INPUT_PREFIX):]: v for k, v in data.items() if k.startswith(INPUT_PREFIX)}
    outputs = {k[len(OUTPUT_PREFIX):]: v for k, v in data.items() if k.startswith(OUTPUT_PREFIX)}
    return inputs, outputs, data.get(LABELS_KEY)


# --------------------------------------------------------------------------- tensors


def batch_size(spec):
    """The model's batch: a static first dimension, or 1 when it is dynamic."""
    shape = spec.get("shape") or []
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return shape[0]
    return 1


def iter_batches(arrays, specs):
    """Yield feed dicts of one model batch each from sample-major arrays."""
    if not specs:
        return
    b = batch_size(specs[0])
    n = len(arrays[specs[0]["name"]])
    for start in range(0, n - n % b if n >= b else 0, b):
        yield dict((s["name"], arrays[s["name"]][start:start + b]) for s in specs)


def quantize_input(x, spec):
    """Float sample -> the tensor's integer dtype when the model's input is quantized."""
    import numpy as np

    dtype = np.dtype(spec["dtype"])
    q = spec.get("quant")
    if q and dtype.kind in "iu" and np.asarray(x).dtype.kind == "f":
        info = np.iinfo(dtype)
        scaled = np.round(np.asarray(x, np.float64) / float(q["scale"][0]) + q["zero_point"][0])
        return np.clip(scaled, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def dequantize_output(y, spec):
    import numpy as np

    q = spec.get("quant")
    y = np.asarray(y)
    if q and y.dtype.kind in "iu":
        return (y.astype(np.float64) - q["zero_point"][0]) * float(q["scale"][0])
    return y


def random_inputs(specs, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in s["shape"]]
        dtype = np.dtype(s["dtype"])
        if dtype.kind == "f":
            feeds[s["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[s["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[s["name"]] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise RunnerError("cannot make a random input of dtype %s for %s" % (dtype, s["name"]))
    return feeds


# --------------------------------------------------------------------------- metrics


def compare(reference, candidate):
    """Agreement of one output: max/mean abs error, cosine, SQNR (dB), top-1 agreement.

    ``sqnr_db`` is None when the two are identical (no noise: infinite SQNR).
    ``top1_agreement`` is None unless the output is classifier-shaped ([N, C], C >= 2).
    """
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(candidate, dtype=np.float64)
    if ref.shape != out.shape:
        if ref.size == out.size:
            out = out.reshape(ref.shape)
        else:
            raise RunnerError("output shape %s does not match the reference %s"
                              % (list(out.shape), list(ref.shape)))
    diff = out - ref
    if not np.all(np.isfinite(out)):
        return {"max_abs_err": None, "mean_abs_err": None, "cosine": 0.0, "sqnr_db": -999.0,
                "top1_agreement": 0.0 if _classifier_shaped(ref) else None, "nonfinite": True}
    a, b = ref.ravel(), out.ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        cosine = 1.0
    elif na == 0.0 or nb == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.dot(a, b) / (na * nb))
    noise = float(np.sum(diff * diff))
    signal_power = float(np.sum(ref * ref))
    if noise == 0.0:
        sqnr = None
    elif signal_power == 0.0:
        sqnr = -999.0
    else:
        sqnr = 10.0 * math.log10(signal_power / noise)
    top1 = None
    if _classifier_shaped(ref):
        top1 = float(np.mean(np.argmax(ref, axis=-1) == np.argmax(out, axis=-1)))
    return {
        "max_abs_err": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "mean_abs_err": float(np.mean(np.abs(diff))) if diff.size else 0.0,
        "cosine": min(1.0, max(-1.0, cosine)),
        "sqnr_db": sqnr,
        "top1_agreement": top1,
    }


def _classifier_shaped(arr):
    return arr.ndim == 2 and arr.shape[-1] >= 2


# --------------------------------------------------------------------------- timing


def timing_loop(fn, warmup, runs, min_seconds, max_runs=10000):
    """Run ``fn`` ``warmup`` times, then time it until both ``runs`` and ``min_seconds`` are met.

    ``max_runs`` bounds the loop (and the size of the raw samples) for very fast models.
    """
    for _ in range(max(0, warmup)):
        fn()
    samples = []
    clock = time.perf_counter
    start = clock()
    while True:
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000.0)
        if len(samples) >= max(1, runs) and clock() - start >= min_seconds:
            break
        if len(samples) >= max_runs:
            break
    return samples, clock() - start


def percentile(sorted_values, q):
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = int(math.floor(k)), int(math.ceil(k))
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples, window_sizes=None):
    """Statistics of all timed samples; ``window_sizes`` (timing windows of ``--repeat``, in order) adds a
    per-window summary so a report can compare run-to-run spread, not only sample spread."""
    s = sorted(samples)
    n = len(s)
    mean = sum(s) / n
    var = sum((x - mean) ** 2 for x in s) / n
    out = {
        "samples": [round(x, 6) for x in samples],
        "min": s[0],
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "mean": mean,
        "std": math.sqrt(var),
    }
    if window_sizes:
        windows, start = [], 0
        for size in window_sizes:
            w = sorted(samples[start:start + size])
            start += size
            windows.append({"n": size, "p50": percentile(w, 50), "p90": percentile(w, 90),
                            "mean": sum(w) / size})
        out["windows"] = windows
    return out


def timing_windows(fn, warmup, runs, min_seconds, max_runs, repeat=1, cooldown=0.0, between=None):
    """``repeat`` independent timing windows (each warmed up, ``cooldown`` seconds of idle before each
    window after the first); returns (all samples, window sizes, timed seconds). ``between`` runs in the
    idle gap (e.g. to read a temperature)."""
    samples, sizes, elapsed = [], [], 0.0
    for i in range(max(1, repeat)):
        if i:
            if between:
                between()
            time.sleep(max(0.0, cooldown))
        got, seconds = timing_loop(fn, warmup, runs, min_seconds, max_runs)
        samples.extend(got)
        sizes.append(len(got))
        elapsed += seconds
    return samples, sizes, elapsed


def process_threads():
    """OS threads of this process (Linux), i.e. what the runtime really started."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return None


def peak_rss_mb():
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    if sys.platform == "darwin":
        return rss / (1024.0 * 1024.0)
    return rss / 1024.0


# --------------------------------------------------------------------------- device


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except (OSError, IOError):
        return ""


def cpu_fingerprint():
    """CPU model, emulation and frequency facts the device exposes (best effort)."""
    info = {"model": None, "emulated": False, "governor": None, "max_freq_mhz": None}
    text = _read("/proc/cpuinfo")
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if value and key not in fields:
            fields[key] = value
    # x86: "model name"; Raspberry Pi: "Model" (board) or "Hardware"; others: "cpu model".
    for key in ("model name", "model", "hardware", "cpu model", "processor"):
        value = fields.get(key, "")
        if value and not value.isdigit():
            info["model"] = value
            break
    if not info["model"]:
        info["model"] = platform.processor() or None
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip()
    info["governor"] = gov or None
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    if freq.isdigit():
        info["max_freq_mhz"] = int(freq) // 1000
    cur = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").strip()
    if cur.isdigit():
        info["cur_freq_mhz"] = int(cur) // 1000
    info["temperature_c"] = cpu_temperature()
    # qemu-user leaves its own binfmt interpreter in our maps; qemu-system names itself in cpuinfo.
    maps = _read("/proc/self/maps")
    if "qemu" in maps or "QEMU" in text or os.environ.get("QEMU_CPU") or os.environ.get("QEMU_LD_PREFIX"):
        info["emulated"] = True
    return info


def cpu_temperature(base="/sys/class/thermal"):
    """The hottest thermal zone in degrees C (Raspberry Pi: cpu-thermal), or None where none is exposed."""
    hottest = None
    try:
        zones = [z for z in os.listdir(base) if z.startswith("thermal_zone")]
    except OSError:
        return None
    for zone in zones:
        text = _read(os.path.join(base, zone, "temp")).strip()
        try:
            value = int(text) / 1000.0
        except ValueError:
            continue
        if -40.0 < value < 150.0 and (hottest is None or value > hottest):
            hottest = value
    return hottest


def device_info(runtime, runtime_version):
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "numpy": _numpy_version(),
        "runtime": runtime,
        "runtime_version": runtime_version,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_fingerprint(),
    }


def _numpy_version():
    try:
        import numpy

        return numpy.__version__
    except ImportError:
        return None


# --------------------------------------------------------------------------- main


def build_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("bundle", help="path to a .edgepack bundle")
    p.add_argument("--runs", type=int, default=50, help="minimum timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--min-seconds", type=float, default=1.0,
                   help="keep timing until at least this many seconds have passed (default 1)")
    p.add_argument("--max-runs", type=int, default=10000,
                   help="stop after this many timed runs even if --min-seconds is not reached (default 10000)")
    p.add_argument("--repeat", type=int, default=1,
                   help="independent timing windows, each meeting --runs/--min-seconds (default 1)")
    p.add_argument("--cooldown", type=float, default=1.0,
                   help="idle seconds before each timing window after the first (default 1)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = runtime default")
    p.add_argument("--workdir", default=None, help="where to extract the bundle (default: system temp)")
    p.add_argument("--no-golden", action="store_true", help="skip the golden agreement check")
    p.add_argument("--no-eval", action="store_true", help="skip the accuracy run")
    p.add_argument("--timeout", type=float, default=0,
                   help="stop (and clean up) when the run takes longer than this many seconds; 0 = no limit")
    p.add_argument("--watch-stdin", action="store_true",
                   help="stop (and clean up) when stdin closes: edgepack went away (Ctrl-C, lost connection)")
    p.add_argument("--max-unpacked-bytes", type=int, default=None,
                   help="limit on the bundle's unpacked size (default %d or EDGEPACK_MAX_UNPACKED_BYTES)"
                        % MAX_UNPACKED_BYTES)
    p.add_argument("--max-ratio", type=int, default=None,
                   help="limit on a large member's unpacked:packed ratio (default %d or EDGEPACK_MAX_RATIO)"
                        % MAX_RATIO)
    return p


EXIT_TIMEOUT = 124
KILL_GRACE_SECONDS = 5.0
_stop = {"reason": None, "timeout": 0}


class _Terminated(BaseException):
    pass


def _on_signal(signum, frame):
    raise _Terminated(signum)


def _stop_message():
    if _stop["reason"] == "timeout":
        return ("the run did not finish within %gs" % _stop["timeout"],
                "raise --timeout or lower --runs/--min-seconds/--repeat", EXIT_TIMEOUT)
    if _stop["reason"] == "stdin":
        return ("stopped: edgepack went away (interrupted or disconnected)", "", 128 + signal.SIGTERM)
    return None


def _stop_self(reason):
    """Called from a watchdog thread: SIGTERM ourselves (the main thread cleans up), then SIGKILL our process
    group if the main thread is stuck in native code."""
    if _stop["reason"] is not None:
        return
    _stop["reason"] = reason
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except OSError:
        pass
    time.sleep(KILL_GRACE_SECONDS)
    message, hint, _ = _stop_message()
    try:
        sys.stderr.write("edgepack-runner: error: %s%s\n" % (message, (" -- " + hint) if hint else ""))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def start_watchdogs(timeout, watch_stdin):
    """A deadline and/or stdin EOF (the controlling edgepack or its SSH channel went away) stop the run."""
    import threading

    if watch_stdin:
        try:
            os.setpgid(0, 0)  # our own process group, so the kill takes everything we started
        except (OSError, AttributeError):
            pass

        def reader():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            _stop_self("stdin")

        threading.Thread(target=reader, name="edgepack-stdin-watch", daemon=True).start()
    if timeout and timeout > 0:
        _stop["timeout"] = timeout

        def timer():
            time.sleep(timeout)
            _stop_self("timeout")

        threading.Thread(target=timer, name="edgepack-deadline", daemon=True).start()


def _run_all(session_predict, feeds_iter, output_specs):
    """Run every batch; return {output_name: concatenated array (dequantized)}."""
    import numpy as np

    collected = dict((s["name"], []) for s in output_specs)
    for feeds in feeds_iter:
        outs = session_predict(feeds)
        for s in output_specs:
            collected[s["name"]].append(dequantize_output(outs[s["name"]], s))
    return dict((k, np.concatenate(v, axis=0)) for k, v in collected.items() if v)


def run(backend, args):
    """The whole measurement. ``backend`` provides name/version/load/predict."""
    global MAX_RATIO, MAX_UNPACKED_BYTES
    if args.max_ratio:
        MAX_RATIO = args.max_ratio
    if args.max_unpacked_bytes:
        MAX_UNPACKED_BYTES = args.max_unpacked_bytes
    with Bundle(args.bundle, args.workdir, args.max_unpacked_bytes) as bundle:
        manifest = bundle.manifest
        if manifest.get("runtime") != backend.runtime:
            raise RunnerError("bundle is for runtime %r, this runner runs %r"
                              % (manifest.get("runtime"), backend.runtime),
                              "use the %s runner for this bundle" % manifest.get("runtime"), EXIT_USAGE)
        in_specs = manifest["inputs"]
        out_specs = manifest["outputs"]

        member = manifest["model"]["member"]
        if hasattr(backend, "model_member"):  # e.g. the NPU model of an Ethos-U bundle
            member = backend.model_member(manifest, args)
        model_path = bundle.member(member)
        t0 = time.perf_counter()
        session = backend.load(model_path, manifest, args)
        load_ms = (time.perf_counter() - t0) * 1000.0

        def predict(feeds):
            q = dict((s["name"], quantize_input(feeds[s["name"]], s)) for s in in_specs)
            return backend.predict(session, q)

        golden = None
        golden_member = (manifest.get("golden") or {}).get("member")
        if golden_member:
            golden = split_npz(load_npz(bundle.member(golden_member)))
        if golden and golden[0]:
            timing_feeds = next(iter_batches(golden[0], in_specs))
        else:
            timing_feeds = random_inputs(in_specs)

        t0 = time.perf_counter()
        predict(timing_feeds)
        first_ms = (time.perf_counter() - t0) * 1000.0

        device = device_info(backend.runtime, backend.version())
        temps = [device["cpu"]["temperature_c"]]
        samples, sizes, elapsed = timing_windows(
            lambda: predict(timing_feeds), args.warmup, args.runs, args.min_seconds, args.max_runs,
            args.repeat, args.cooldown, between=lambda: temps.append(cpu_temperature()))
        temps.append(cpu_temperature())
        device["cpu"]["temperature_end_c"] = temps[-1]
        known = [t for t in temps if t is not None]
        device["cpu"]["temperature_max_c"] = max(known) if known else None
        latency = summarize(samples, sizes if args.repeat > 1 else None)

        validation = None
        if golden and golden[0] and not args.no_golden:
            got = _run_all(predict, iter_batches(golden[0], in_specs), out_specs)
            validation = {}
            for s in out_specs:
                ref = golden[1].get(s["name"])
                if ref is not None and s["name"] in got:
                    validation[s["name"]] = compare(ref[:len(got[s["name"]])], got[s["name"]])

        accuracy = None
        eval_member = (manifest.get("eval") or {}).get("member")
        if eval_member and not args.no_eval:
            import numpy as np

            inputs, _, labels = split_npz(load_npz(bundle.member(eval_member)))
            got = _run_all(predict, iter_batches(inputs, in_specs), out_specs)
            logits = got[out_specs[0]["name"]]
            pred = np.argmax(logits.reshape(len(logits), -1), axis=-1)
            labels = np.asarray(labels).reshape(-1)[:len(pred)]
            accuracy = {"top1": float(np.mean(pred == labels)), "n": int(len(labels))}

        # op placement / per-op timing, after (and separate from) the timed runs
        extra = {}
        if hasattr(backend, "analyze"):
            feeds = dict((s["name"], quantize_input(timing_feeds[s["name"]], s)) for s in in_specs)
            extra = backend.analyze(session, model_path, feeds, args) or {}

        return {
            "schema": RESULT_SCHEMA,
            "bundle_sha256": bundle.sha256,
            "bundle": {
                "format": manifest.get("format"),
                "quantization": (manifest.get("quantization") or {}).get("mode"),
                "model": member,
                "model_bytes": os.path.getsize(model_path),
            },
            "device": device,
            "settings": {
                "runs": args.runs,
                "warmup": args.warmup,
                "min_seconds": args.min_seconds,
                "repeat": args.repeat,
                "cooldown": args.cooldown if args.repeat > 1 else None,
                "threads": args.threads or None,
                "max_runs": args.max_runs,
            },
            "runtime_details": backend.details(session),
            "load_ms": load_ms,
            "first_inference_ms": first_ms,
            "latency_ms": latency,
            "timed_seconds": elapsed,
            "throughput_ips": len(samples) * batch_size(in_specs[0]) / elapsed if elapsed > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
            "process_threads": process_threads(),
            "validation": validation,
            "accuracy": accuracy,
            "placement": extra.get("placement"),
            "op_timing": extra.get("op_timing"),
        }


def main(backend, argv=None):
    """Entry point of a runtime module; prints exactly one JSON document on success."""
    parser = build_parser("edgepack %s device runner" % backend.runtime)
    if hasattr(backend, "add_arguments"):
        backend.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.runs < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--repeat and --runs must be >= 1, --warmup and --threads >= 0")
    if not (math.isfinite(args.min_seconds) and math.isfinite(args.cooldown) and math.isfinite(args.timeout)) \
            or args.min_seconds < 0 or args.cooldown < 0 or args.timeout < 0:
        parser.error("--min-seconds, --cooldown and --timeout must be finite and >= 0")
    if args.runs > args.max_runs:
        parser.error("--runs %d exceeds --max-runs %d" % (args.runs, args.max_runs))
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _on_signal)
    try:
        start_watchdogs(args.timeout, args.watch_stdin)
        backend.check()
        result = run(backend, args)
    except RunnerError as e:
        sys.stderr.write("edgepack-runner: error: %s%s\n" % (e.message, (" -- " + e.hint) if e.hint else ""))
        return e.code
    except _Terminated as e:
        stopped = _stop_message()
        if stopped:
            message, hint, code = stopped
            sys.stderr.write("edgepack-runner: error: %s%s\n" % (message, (" -- " + hint) if hint else ""))
            return code
        sys.stderr.write("edgepack-runner: error: terminated by signal %s\n" % e.args[0])
        return 128 + int(e.args[0])
    except MemoryError:
        sys.stderr.write("edgepack-runner: error: out of memory on the device\n")
        return EXIT_ERROR
    except Exception as e:  # report anything unexpected on one line, traceback above it
        import traceback

        traceback.print_exc()
        sys.stderr.write("edgepack-runner: error: %s: %s\n" % (type(e).__name__, e))
        return EXIT_ERROR
    sys.stdout.write(json.dumps(result, allow_nan=False, sort_keys=True))
    sys.stdout.write("\n")
    sys.stdout.flush()
    return EXIT_OK
