"""Hostile input, through the real CLI (issue 12): bundles crafted by an attacker (the manifest's sha256 list
kept consistent, so only the new checks can refuse them), device names, interrupts, NaNs, crafted text,
outputs that would overwrite inputs. Each case: a one-line error with the right exit code, nothing run,
nothing left behind, nothing lost. SSH cases are in test_hostile_ssh.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgepack.device_runners import runner_common as rc
from helpers import cli, one_line_error

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "device_runners" / "onnx_runner.py"


# --------------------------------------------------------------------------- crafting bundles

class _Tee:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        pass


def craft(src: Path, dst: Path, put: dict | None = None, drop=(), edit=None, level: int = 6,
          keep_sizes: bool = True) -> Path:
    """Rewrite ``src`` as an attacker would: members in ``put`` replaced or added (bytes, or a callable writing
    to a file), ``drop`` removed, the manifest's sha256 list and declared sizes updated to match; ``edit``
    changes the manifest dict last (or returns the raw bytes to store instead). ``level`` 0 stores members."""
    put = dict(put or {})
    with zipfile.ZipFile(src) as zin:
        manifest = json.loads(zin.read("manifest.json"))
        old = {i.filename: zin.read(i.filename) for i in zin.infolist() if i.filename != "manifest.json"}
    digests, sizes = {}, {}
    method = zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(dst, "w", method, compresslevel=level or None, allowZip64=True) as zout:
        for name in sorted(set(old) | set(put)):
            if name in drop:
                continue
            content = put.get(name, old.get(name))
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with zout.open(info, "w", force_zip64=True) as f:
                tee = _Tee(f)
                content(tee) if callable(content) else tee.write(content)
            digests[name], sizes[name] = tee.h.hexdigest(), tee.n
        manifest["members"] = digests
        if keep_sizes and "sizes" in manifest:
            manifest["sizes"] = sizes
        else:
            manifest.pop("sizes", None)
        if edit is not None:
            manifest = edit(manifest) or manifest
        # written last: readers find it by name, and its content depends on the members above
        zout.writestr("manifest.json", manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode(),
                      compress_type=zipfile.ZIP_DEFLATED)
    return dst


def npz(arrays: dict, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    return buf.getvalue()


def zeros_npz(key: str, shape: tuple, deflate: bool = False):
    """A writer of an .npz holding one float32 array of zeros of ``shape``, streamed (never in memory)."""
    def write(f):
        method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        with zipfile.ZipFile(f, "w", method, compresslevel=1 if deflate else None, allowZip64=True) as z, \
                z.open(key + ".npy", "w", force_zip64=True) as g:
            np.lib.format.write_array_header_1_0(g, {"descr": "<f4", "fortran_order": False, "shape": shape})
            left, block = int(np.prod(shape)) * 4, bytes(1 << 20)
            while left:
                g.write(block[:min(left, len(block))])
                left -= min(left, len(block))
    return write


def run_runner(bundle: Path, *args: str, env: dict | None = None):
    """The device runner as on a device (a script), with its peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, str(RUNNER), str(bundle), "--runs", "2", "--min-seconds", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


_MEASURED = """
import atexit, runpy, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("peak-rss-kib %s\\n" % line.split()[1])
atexit.register(hwm)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def runner_rss_mib(bundle: Path, *args: str) -> tuple[int, str, float]:
    """Run the runner and return (exit code, stderr, its peak RSS in MiB). VmHWM of the exec'd process: not
    ru_maxrss, which on Linux carries over the (large) RSS of the pytest process that forked it."""
    proc = subprocess.run([sys.executable, "-c", _MEASURED, str(RUNNER), str(bundle), "--runs", "2",
                           "--min-seconds", "0", *args], capture_output=True, text=True, timeout=300)
    kib = [int(ln.split()[1]) for ln in proc.stderr.splitlines() if ln.startswith("peak-rss-kib ")]
    assert kib, proc.stderr
    return proc.returncode, proc.stderr, kib[-1] / 1024.0


GIB = 1 << 30


@pytest.fixture(scope="module")
def golden_bomb(tiny_bundle, tmp_path_factory) -> Path:
    """golden.npz inflating to 1 GiB of zeros (2**22 samples of 1x8x8 float32), declared sizes consistent."""
    dst = tmp_path_factory.mktemp("bomb") / "bomb.edgepack"
    return craft(tiny_bundle, dst, put={"golden.npz": zeros_npz("input/image", (1 << 22, 1, 8, 8))}, level=1)


# --------------------------------------------------------------------------- refused already (kept)

def test_path_traversal_symlink_and_flipped_bytes_are_refused(tiny_bundle, tmp_path):
    trav = craft(tiny_bundle, tmp_path / "trav.edgepack", put={"../evil.txt": b"x"})
    res = cli("verify", str(trav))
    assert res.returncode == 1 and "unsafe member name" in res.stderr
    assert not (tmp_path.parent / "evil.txt").exists()
    flipped = tmp_path / "flip.edgepack"
    with zipfile.ZipFile(tiny_bundle) as zin, zipfile.ZipFile(flipped, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, data[:-1] + bytes([data[-1] ^ 1]) if info.filename == "model.onnx" else data)
    res = cli("verify", str(flipped))
    assert res.returncode == 1 and "sha256 mismatch" in res.stderr
    link = tmp_path / "link.edgepack"
    with zipfile.ZipFile(tiny_bundle) as zin, zipfile.ZipFile(link, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zout.writestr(info, "/etc/passwd")
    res = cli("verify", str(link))
    assert res.returncode == 1 and "symbolic link" in res.stderr


def test_pickle_in_golden_npz_is_refused_in_one_line(tiny_bundle, tmp_path):
    import pickle

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, z.open("input/image.npy", "w") as g:
        obj = np.array([{"x": 1}] * 4, dtype=object)
        np.lib.format.write_array_header_1_0(g, {"descr": "|O", "fortran_order": False, "shape": (4,)})
        pickle.dump(obj, g, protocol=3)
    bad = craft(tiny_bundle, tmp_path / "pickle.edgepack", put={"golden.npz": buf.getvalue()})
    res = cli("verify", str(bad))
    assert res.returncode == 1 and "pickled object array" in res.stderr, res.stderr
    res = cli("bench", str(bad), "--runs", "1", "--min-seconds", "0")
    assert "pickled object array" in one_line_error(res)
    code, _, err = run_runner(bad)
    assert code == rc.EXIT_BUNDLE_INVALID and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("edgepack-runner: error: bundle failed verification")


# --------------------------------------------------------------------------- 1. decompression bombs

@pytest.mark.slow
def test_golden_bomb_refused_before_inflating(golden_bomb, tmp_path):
    assert golden_bomb.stat().st_size < 4 << 20, "the bomb is small on disk"
    for cmd in ("verify", "inspect"):
        t0 = time.time()
        res = cli(cmd, str(golden_bomb))
        assert "inflates" in one_line_error(res) and time.time() - t0 < 20, res.stderr
    work = tmp_path / "work"
    work.mkdir()
    code, err, rss = runner_rss_mib(golden_bomb, "--workdir", str(work))
    assert code == rc.EXIT_BUNDLE_INVALID and "inflates" in err, err
    assert rss < 2 * 1024, f"runner peaked at {rss:.0f} MiB on a bomb with a 1 GiB member"
    assert rss < 400, f"refused from the headers: no member inflated ({rss:.0f} MiB)"
    assert list(work.iterdir()) == [], "nothing written to the runner's temp dir"
    # the same bomb with the sizes the old format lacks: still refused
    res = cli("verify", str(craft(golden_bomb, tmp_path / "old.edgepack", keep_sizes=False, level=1)))
    assert "inflates" in one_line_error(res)


def test_inner_npz_bomb_and_extra_member_bomb(tiny_bundle, tmp_path):
    """golden.npz deflated inside (the outer zip stores it): the npz's own headers are checked; an extra
    listed member of zeros is refused before it is written out."""
    inner = craft(tiny_bundle, tmp_path / "inner.edgepack",
                  put={"golden.npz": zeros_npz("input/image", (1 << 18, 1, 8, 8), deflate=True)}, level=0)
    res = cli("verify", str(inner))
    assert res.returncode == 1 and "golden.npz: member input/image.npy inflates" in res.stderr, res.stderr
    extra = craft(tiny_bundle, tmp_path / "extra.edgepack", put={"pad.bin": lambda f: [f.write(bytes(1 << 20))
                                                                                         for _ in range(64)]})
    assert extra.stat().st_size < 1 << 20
    work = tmp_path / "work"
    work.mkdir()
    code, _, err = run_runner(extra, "--workdir", str(work))
    assert code == rc.EXIT_BUNDLE_INVALID and "pad.bin inflates" in err
    assert list(work.iterdir()) == []


def test_total_unpacked_cap_and_huge_manifest(tiny_bundle, tmp_path):
    res = cli("verify", str(tiny_bundle), env={"EDGEPACK_MAX_UNPACKED_BYTES": "4000"})
    assert "unpacks to" in one_line_error(res) and "limit" in res.stderr
    code, _, err = run_runner(tiny_bundle, "--max-unpacked-bytes", "4000")
    assert code == rc.EXIT_BUNDLE_INVALID and "unpacks to" in err
    assert cli("verify", str(tiny_bundle)).returncode == 0, "the default limit passes a real bundle"

    def pad(m):  # a 40 MiB manifest: whitespace after the JSON object
        return json.dumps(m).encode() + b" " * (40 << 20)

    huge = craft(tiny_bundle, tmp_path / "huge.edgepack", edit=pad)
    for cmd in ("inspect", "verify"):
        res = cli(cmd, str(huge))
        assert "manifest.json unpacks to 40.0 MiB (limit 16.0 MiB)" in one_line_error(res)


def test_declared_sizes_must_match_the_zip_headers(tiny_bundle, tmp_path):
    with zipfile.ZipFile(tiny_bundle) as zf:
        sizes = json.loads(zf.read("manifest.json"))["sizes"]
        assert sizes == {i.filename: i.file_size for i in zf.infolist() if i.filename != "manifest.json"}

    def lie(m):
        m["sizes"]["golden.npz"] -= 1

    bad = craft(tiny_bundle, tmp_path / "lie.edgepack", edit=lie)
    res = cli("verify", str(bad))
    assert res.returncode == 1 and "golden.npz unpacks to" in res.stderr and "declares" in res.stderr

    def model_bytes(m):  # an old bundle (no sizes): model.bytes is the declared size
        m["model"]["bytes"] += 100

    res = cli("verify", str(craft(tiny_bundle, tmp_path / "mb.edgepack", edit=model_bytes, keep_sizes=False)))
    assert res.returncode == 1 and "model.onnx unpacks to" in res.stderr


def test_golden_and_eval_counts_must_equal_the_manifest(tiny_bundle, tmp_path):
    with zipfile.ZipFile(tiny_bundle) as zf:
        golden = dict(np.load(io.BytesIO(zf.read("golden.npz"))))
    more = {k: np.concatenate([v] * 250) for k, v in golden.items()}  # 1000 samples, manifest says 4
    bad = craft(tiny_bundle, tmp_path / "count.edgepack", put={"golden.npz": npz(more)})
    res = cli("verify", str(bad))
    assert res.returncode == 1 and "holds 1000 samples, the manifest says 4" in res.stderr, res.stderr
    code, _, err = run_runner(bad)
    assert code == rc.EXIT_BUNDLE_INVALID and "holds 1000 samples" in err

    def fewer(m):
        m["eval"]["samples"] = 3

    res = cli("verify", str(craft(tiny_bundle, tmp_path / "eval.edgepack", edit=fewer)))
    assert res.returncode == 1 and "eval.npz: array labels holds 40 samples, the manifest says 3" in res.stderr


def test_bundle_without_declared_sizes_still_verifies_and_runs(tiny_bundle, tmp_path):
    old = craft(tiny_bundle, tmp_path / "old.edgepack", keep_sizes=False)
    with zipfile.ZipFile(old) as zf:
        assert "sizes" not in json.loads(zf.read("manifest.json"))
    assert cli("verify", str(old)).returncode == 0
    res = cli("bench", str(old), "--runs", "2", "--min-seconds", "0", "--json", "-")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["result"]["accuracy"]["n"] == 40


# --------------------------------------------------------------------------- 9. malformed manifests

@pytest.mark.parametrize("cmd", ["inspect", "verify", "bench", "deploy"])
def test_manifest_that_is_a_json_array(tiny_bundle, tmp_path, cmd):
    bad = craft(tiny_bundle, tmp_path / "array.edgepack", edit=lambda m: json.dumps([m]).encode())
    res = cli(cmd, str(bad))
    assert "manifest.json is a JSON list, not an object" in one_line_error(res)


def test_unknown_manifest_major_version_is_refused(tiny_bundle, tmp_path):
    def v2(m):
        m["schema"] = "edgepack.manifest/2"

    bad = craft(tiny_bundle, tmp_path / "v2.edgepack", edit=v2)
    res = cli("verify", str(bad))
    assert "'edgepack.manifest/2' is not supported" in one_line_error(res)
    code, _, err = run_runner(bad)
    assert code == rc.EXIT_BUNDLE_INVALID and "not supported" in err

    def minor(m):
        m["schema"] = "edgepack.manifest/1.1"

    assert cli("verify", str(craft(tiny_bundle, tmp_path / "v11.edgepack", edit=minor))).returncode == 0
