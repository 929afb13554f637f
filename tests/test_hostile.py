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


def craft(
    src: Path, dst: Path, put: dict | None = None, drop=(), edit=None, level: int = 6, keep_sizes: bool = True
) -> Path:
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
        zout.writestr(
            "manifest.json",
            manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode(),
            compress_type=zipfile.ZIP_DEFLATED,
        )
    return dst


def npz(arrays: dict, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    return buf.getvalue()


def zeros_npz(key: str, shape: tuple, deflate: bool = False):
    """A writer of an .npz holding one float32 array of zeros of ``shape``, streamed (never in memory)."""

    def write(f):
        method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        with (
            zipfile.ZipFile(f, "w", method, compresslevel=1 if deflate else None, allowZip64=True) as z,
            z.open(key + ".npy", "w", force_zip64=True) as g,
        ):
            np.lib.format.write_array_header_1_0(g, {"descr": "<f4", "fortran_order": False, "shape": shape})
            left, block = int(np.prod(shape)) * 4, bytes(1 << 20)
            while left:
                g.write(block[: min(left, len(block))])
                left -= min(left, len(block))

    return write


def run_runner(bundle: Path, *args: str, env: dict | None = None):
    """The device runner as on a device (a script), with its peak RSS in MiB."""
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), str(bundle), "--runs", "2", "--min-seconds", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
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
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, str(RUNNER), str(bundle), "--runs", "2", "--min-seconds", "0", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    inner = craft(
        tiny_bundle,
        tmp_path / "inner.edgepack",
        put={"golden.npz": zeros_npz("input/image", (1 << 18, 1, 8, 8), deflate=True)},
        level=0,
    )
    res = cli("verify", str(inner))
    assert res.returncode == 1 and "golden.npz: member input/image.npy inflates" in res.stderr, res.stderr
    extra = craft(
        tiny_bundle,
        tmp_path / "extra.edgepack",
        put={"pad.bin": lambda f: [f.write(bytes(1 << 20)) for _ in range(64)]},
    )
    assert extra.stat().st_size < 1 << 20
    work = tmp_path / "work"
    work.mkdir()
    code, _, err = run_runner(extra, "--workdir", str(work))
    assert code == rc.EXIT_BUNDLE_INVALID and "pad.bin inflates" in err
    assert list(work.iterdir()) == []
    # the limit is a setting: a user who trusts this bundle raises it (on the device too: bench passes it on)
    assert cli("verify", str(extra), env={"EDGEPACK_MAX_RATIO": "5000"}).returncode == 0
    res = cli("bench", str(extra), "--runs", "1", "--min-seconds", "0", env={"EDGEPACK_MAX_RATIO": "5000"})
    assert res.returncode == 0, res.stderr


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


# --------------------------------------------------------------------------- 2. device names


def test_device_names_never_reach_a_shell(tiny_bundle, tmp_path):
    """paramiko substitutes %h unquoted into Match exec; OpenSSH refuses such names and so does edgepack."""
    pwned = tmp_path / "pwned"
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text('Match exec "test %h = box"\n  User nobody\n')
    attacks = [
        f"x$(touch${{IFS}}{pwned})",
        f"x;touch {pwned}",
        f"u`touch {pwned}`@h",
        f"x|touch {pwned}",
        "-oProxyCommand=sh",
        "h\x1b[31m",
    ]
    for device in attacks:
        res = cli("bench", str(tiny_bundle), "--device", device, env={"HOME": str(home)})
        assert res.returncode == 2 and "bad " in one_line_error(res), (device, res.stderr)
        assert "\x1b" not in res.stderr, "control characters are shown escaped"
    for cmd in (["deploy", str(tiny_bundle)], ["doctor"]):
        res = cli(*cmd, "--device", attacks[0], env={"HOME": str(home)})
        assert res.returncode == 2 and "bad host name" in one_line_error(res)
    assert not pwned.exists(), "a device string ran a command on this machine"


# --------------------------------------------------------------------------- 3. runs, timeout, signals (local)


def test_runs_are_capped_by_max_runs(tiny_bundle):
    res = cli("bench", str(tiny_bundle), "--runs", "1000000000000")
    assert "--runs 1000000000000 exceeds --max-runs 10000" in one_line_error(res) and res.returncode == 2
    res = cli("bench", str(tiny_bundle), "--max-runs", "1000000000000")
    assert "--max-runs" in one_line_error(res) and res.returncode == 2


def test_local_run_timeout_stops_and_cleans_up(tiny_bundle, tmp_path):
    t0 = time.time()
    res = cli(
        "bench",
        str(tiny_bundle),
        "--runs",
        "1",
        "--min-seconds",
        "120",
        "--max-runs",
        "100000000",
        "--timeout",
        "3",
        "--json",
        str(tmp_path / "r.json"),
        env={"TMPDIR": str(tmp_path)},
    )
    assert res.returncode == 5 and "did not finish within 3s" in one_line_error(res), res.stderr
    assert "--timeout" in res.stderr and time.time() - t0 < 60
    assert not (tmp_path / "r.json").exists()
    assert not list(tmp_path.glob("edgepack-run-*")), "the runner removed its extraction dir"


def _popen_cli(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "edgepack", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _wait_for(pred, timeout=60.0, step=0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise AssertionError("timed out waiting")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_local_bench_stops_the_runner(tiny_bundle, tmp_path, sig):
    from sshd import find_process

    proc = _popen_cli(
        "bench",
        str(tiny_bundle),
        "--runs",
        "1",
        "--min-seconds",
        "120",
        "--max-runs",
        "100000000",
        "--json",
        str(tmp_path / "r.json"),
        env={"TMPDIR": str(tmp_path)},
    )
    runner = _wait_for(lambda: list(tmp_path.glob("edgepack-run-*")) and find_process(f"onnx_runner.py {tiny_bundle}"))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("edgepack: error: stopped by signal")
    _wait_for(lambda: not os.path.exists(f"/proc/{runner}"), timeout=20)
    assert not list(tmp_path.glob("edgepack-run-*")) and not (tmp_path / "r.json").exists()


def test_sigterm_during_build_leaves_nothing(tiny_model, tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmp.mkdir()
    proc = _popen_cli(
        "build", str(tiny_model), "--quantize", "dynamic", "-o", str(out / "m.edgepack"), env={"TMPDIR": str(tmp)}
    )
    _wait_for(lambda: list(tmp.glob("edgepack-build-*")), step=0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert list(out.iterdir()) == [] and list(tmp.glob("edgepack-build-*")) == [], "temp bundle and dir removed"


# --------------------------------------------------------------------------- 4. NaN and the gate


@pytest.fixture(scope="module")
def bench_json(tiny_bundle, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gate") / "r.json"
    cli(
        "bench",
        str(tiny_bundle),
        "--runs",
        "20",
        "--min-seconds",
        "0",
        "--repeat",
        "3",
        "--cooldown",
        "0",
        "--json",
        str(path),
        check=True,
    )
    return path


def _edited(src: Path, dst: Path, change) -> Path:
    data = json.loads(src.read_text())
    change(data["results"][0]["result"])
    dst.write_text(json.dumps(data))  # allow_nan: NaN is written as the bare token NaN
    return dst


def test_nan_in_a_result_fails_the_gate(bench_json, tmp_path):
    def nan_p50(r):
        r["latency_ms"]["p50"] = float("nan")

    nan = _edited(bench_json, tmp_path / "nan.json", nan_p50)
    assert "NaN" in nan.read_text()
    res = cli("report", str(nan), "--max-p50-ms", "0.000001")
    assert res.returncode == 1 and "p50 is nan, not a finite number" in res.stdout, res.stdout

    def nan_samples(r):
        r["latency_ms"]["samples"] = [float("nan")] * len(r["latency_ms"]["samples"])

    cur = _edited(bench_json, tmp_path / "cur.json", nan_samples)
    res = cli("report", str(cur), "--baseline", str(bench_json))
    assert res.returncode == 1 and "not finite numbers" in res.stdout


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--max-latency-regression", "nan"], "not a finite number"),
        (["--max-latency-regression", "5"], "ambiguous"),
        (["--max-size-growth", "inf%"], "not a finite number"),
        (["--max-accuracy-drop", "nan"], "not a finite number"),
        (["--max-p50-ms", "nan"], "--max-p50-ms nan is out of range"),
        (["--max-p99-ms", "inf"], "--max-p99-ms inf is out of range"),
        (["--min-accuracy", "nan"], "--min-accuracy nan is out of range"),
    ],
)
def test_nan_and_ambiguous_gate_options_are_usage_errors(bench_json, args, expect):
    res = cli("report", str(bench_json), "--baseline", str(bench_json), *args)
    assert res.returncode == 2 and expect in one_line_error(res), res.stderr


def test_a_10x_slowdown_fails_with_a_percent_threshold(bench_json, tmp_path):
    def slower(r):
        r["latency_ms"]["samples"] = [x * 10 for x in r["latency_ms"]["samples"]]
        r["latency_ms"]["p50"] *= 10

    slow = _edited(bench_json, tmp_path / "slow.json", slower)
    assert cli("report", str(slow), "--baseline", str(bench_json), "--max-latency-regression", "5%").returncode == 1
    assert cli("report", str(slow), "--baseline", str(bench_json), "--max-latency-regression", "0.05").returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--min-seconds", "nan"],
        ["--min-seconds", "inf"],
        ["--cooldown", "nan"],
        ["--warmup", "-1"],
        ["--threads", "-1"],
        ["--max-runs", "-1"],
        ["--timeout", "nan"],
        ["--timeout", "-5"],
    ],
)
def test_bad_bench_settings_are_usage_errors(tiny_bundle, args):
    res = cli("bench", str(tiny_bundle), *args)
    assert res.returncode == 2 and "out of range" in one_line_error(res) and "run onnxruntime" not in res.stderr


# --------------------------------------------------------------------------- 5. calibration data


def test_calibration_overflow_npy_and_text_are_one_line_errors(tiny_model, tmp_path):
    big = tmp_path / "big.npz"
    np.savez(big, image=np.full((100, 1, 8, 8), 1e300))
    res = cli("build", str(tiny_model), "--quantize", "int8", "--calibration", str(big), "-o", str(tmp_path / "b"))
    assert res.returncode == 2 and "beyond the range of float32" in one_line_error(res)
    npy = tmp_path / "calib.npy"
    np.save(npy, np.zeros((100, 1, 8, 8), np.float32))
    res = cli("build", str(tiny_model), "--quantize", "int8", "--calibration", str(npy), "-o", str(tmp_path / "c"))
    assert res.returncode == 2 and "is a .npy file" in one_line_error(res)
    txt = tmp_path / "calib.txt"
    txt.write_text("1 2 3\n")
    res = cli("build", str(tiny_model), "--quantize", "int8", "--calibration", str(txt), "-o", str(tmp_path / "d"))
    assert res.returncode == 2 and "is not a .npz file" in one_line_error(res)
    assert not list(tmp_path.glob("*.edgepack"))


# --------------------------------------------------------------------------- 6. crafted text


def test_crafted_text_is_shown_not_interpreted(tiny_bundle, tiny_model, tmp_path):
    def markup(m):
        m["source"]["file"] = "[/x]evil[bold]\x1b[31mRED\x1b[0m.onnx"
        m["outputs"][0]["name"] = "[/]"

    bad = craft(tiny_bundle, tmp_path / "markup.edgepack", edit=markup)
    res = cli("inspect", str(bad))
    assert res.returncode == 0, res.stderr
    assert "[/x]evil[bold]" in res.stdout and "\\x1b[31mRED" in res.stdout and "\x1b" not in res.stdout
    weird = tmp_path / "a[/b]" / "c[red].edgepack"
    res = cli("build", str(tiny_model), "-o", str(weird), env={"COLUMNS": "400"})
    assert res.returncode == 0, res.stderr
    assert weird.is_file() and "a[/b]/c[red].edgepack" in res.stdout and "a[/b]/c[red].edgepack" in res.stderr
    # a result file is untrusted too: its names go into the report's tables
    data = json.loads(cli("bench", str(weird), "--runs", "2", "--min-seconds", "0", "--json", "-", check=True).stdout)
    data["results"][0]["device_spec"] = "[/oops]\x1b]0;title\x07"
    (tmp_path / "r.json").write_text(json.dumps(data))
    data["results"][0]["bundle"] = "<img src=https://example.invalid/x.png>|"
    (tmp_path / "r.json").write_text(json.dumps(data))
    res = cli("report", str(tmp_path / "r.json"), "-o", str(tmp_path / "r.md"))
    assert res.returncode == 0, res.stderr
    assert "[/oops]" in res.stderr and "\x1b]0;" not in res.stderr
    md = (tmp_path / "r.md").read_text()
    assert "<img" not in md and "&lt;img src=https://example.invalid/x.png&gt;\\|" in md and "\x1b" not in md
    res = cli("report", str(tmp_path / "r.json"), "--format", "junit", "-o", str(tmp_path / "r.xml"))
    assert res.returncode == 0, res.stderr
    import xml.etree.ElementTree as ET

    ET.parse(tmp_path / "r.xml")  # well-formed despite the escape characters in the device name


# --------------------------------------------------------------------------- 7./8. outputs


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_outputs_never_overwrite_inputs(tiny_bundle, bench_json, tmp_path):
    import shutil

    b = shutil.copy(tiny_bundle, tmp_path / "X.edgepack")
    before = _digest(Path(b))
    for flag in ("--json", "--markdown"):
        res = cli("bench", str(b), flag, str(b))
        assert res.returncode == 2 and "is also an input" in one_line_error(res)
    assert _digest(Path(b)) == before
    r = Path(shutil.copy(bench_json, tmp_path / "r.json"))
    before = _digest(r)
    for flag in ("-o", "--save-baseline"):
        res = cli("report", str(r), flag, str(r))
        assert res.returncode == 2 and "is also an input" in one_line_error(res)
    res = cli("report", str(r), "--baseline", str(bench_json), "-o", str(bench_json))
    assert res.returncode == 2 and "is also an input" in one_line_error(res)
    assert _digest(r) == before


def test_unwritable_outputs_are_refused_before_the_work(tiny_bundle, bench_json, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    for flag in ("--json", "--markdown"):
        t0 = time.time()
        res = cli("bench", str(tiny_bundle), "--min-seconds", "30", flag, str(blocker / "out"))
        assert res.returncode == 2 and "is not a folder" in one_line_error(res)
        assert "run onnxruntime" not in res.stderr and time.time() - t0 < 20, "refused before the bench ran"
    for flag in ("-o", "--save-baseline"):
        res = cli("report", str(bench_json), flag, str(blocker / "sub" / "out.md"))
        assert res.returncode == 2 and "is not a folder" in one_line_error(res)
    res = cli("report", str(bench_json), "-o", str(tmp_path))
    assert res.returncode == 2 and "is a directory" in one_line_error(res)


def test_build_refuses_to_overwrite_its_source_and_checks_o_first(tiny_model, tmp_path):
    import shutil

    m = Path(shutil.copy(tiny_model, tmp_path / "m.onnx"))
    before = _digest(m)
    res = cli("build", str(m), "-o", str(m))
    assert _digest(m) == before, "the source model was replaced by the bundle"
    assert res.returncode == 2 and "is also an input" in one_line_error(res)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = cli("build", str(m), "-o", str(blocker / "m.edgepack"))
    assert res.returncode == 2 and "convert" not in res.stderr


# --------------------------------------------------------------------------- 9. SSH options and odd peers


def test_ssh_options_that_paramiko_would_turn_into_tracebacks(tiny_bundle, tmp_path):
    key = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(256)) * 4)
    cases = [
        (["--connect-timeout", "-1"], "--connect-timeout -1.0 is not a positive number"),
        (["--connect-timeout", "nan"], "is not a positive number"),
        (["--identity", str(tmp_path / "missing")], "does not exist"),
        (["--identity", f"{key}.pub"], "is a public key"),
        (["--identity", str(binary)], "is not an SSH private key"),
        (["--known-hosts", str(binary)], "cannot be read"),
    ]
    for args, expect in cases:
        res = cli("bench", str(tiny_bundle), "--device", "127.0.0.1:1", *args)
        assert res.returncode == 2 and expect in one_line_error(res), (args, res.stderr)


@pytest.fixture
def odd_peer():
    """A TCP port that is not sshd: 'garbage' answers like an HTTP server, 'silent' never says anything."""
    import socket
    import threading

    servers = []

    def start(mode):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        servers.append(s)
        held = []

        def loop():
            while True:
                try:
                    c, _ = s.accept()
                except OSError:
                    return
                if mode == "garbage":
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    c.close()
                else:
                    held.append(c)

        threading.Thread(target=loop, daemon=True).start()
        return s.getsockname()[1]

    yield start
    for s in servers:
        s.close()


def test_non_ssh_port_and_silent_listener(tiny_bundle, odd_peer):
    res = cli("bench", str(tiny_bundle), "--device", f"127.0.0.1:{odd_peer('garbage')}")
    assert res.returncode == 5 and "does not speak SSH" in one_line_error(res)
    t0 = time.time()
    res = cli("bench", str(tiny_bundle), "--device", f"127.0.0.1:{odd_peer('silent')}", "--connect-timeout", "2")
    assert res.returncode == 5 and "timed out after 2s" in one_line_error(res)
    assert "No existing session" not in res.stderr and time.time() - t0 < 30
