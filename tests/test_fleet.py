"""A fleet of 8 real SSH devices on loopback (8 OpenSSH servers, each its own process, port, host key, user key
and cache directory, named in an edgepack.toml inventory), benched in parallel through the CLI while two of them
die mid-run: 6 complete result sets, 2 clear failures, nothing lost; then the two come back, are benched again
and report merges both runs into 8 results."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from edgepack.fleet import EXIT_SOME_FAILED
from helpers import cli
from sshd import Sshd, find_process, why_unavailable

_reason = why_unavailable()
if _reason and os.environ.get("EDGEPACK_REQUIRE_SSHD"):
    raise RuntimeError(f"EDGEPACK_REQUIRE_SSHD is set but: {_reason}")
pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.skipif(bool(_reason), reason=_reason or "")]

N = 8
KILLED = ("dev3", "dev6")


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    servers = {f"dev{i}": Sshd(root / f"dev{i}") for i in range(1, N + 1)}
    try:
        for s in servers.values():
            s.start()
        known = root / "known_hosts"
        known.write_text("".join(s.known_hosts_line() for s in servers.values()))
        entries = [
            f'[devices.{name}]\nhost = "127.0.0.1"\nport = {s.port}\nuser = "{s.user}"\n'
            f'identity = "{s.user_key}"\npython = "{sys.executable}"\nremote_dir = "{root / name / "cache"}"\n'
            f'groups = ["lab", "{"odd" if int(name[3:]) % 2 else "even"}"]\nlabels = {{ slot = "{name[3:]}" }}\n'
            for name, s in servers.items()
        ]
        (root / "edgepack.toml").write_text("\n".join(entries))
        yield root, servers, known
    finally:
        for s in servers.values():
            s.stop()


def _wait_for_runners(root: Path, names, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    left = set(names)
    while left and time.time() < deadline:
        for n in list(left):
            if find_process(f"onnx_runner.py {root / n / 'cache'}/bundles/"):
                left.discard(n)
        time.sleep(0.1)
    assert not left, f"the runner did not start on {sorted(left)}"


def test_devices_lists_the_fleet_with_reachability(fleet_dir):
    root, servers, known = fleet_dir
    proc = cli("devices", "@lab", "--known-hosts", str(known), "--parallel", "8", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["device"] for r in rows] == [f"dev{i}" for i in range(1, N + 1)]
    assert all(r["status"] == "ok" and r["formats"]["onnx"]["ready"] for r in rows), rows
    assert rows[2]["address"] == f"{servers['dev3'].user}@127.0.0.1:{servers['dev3'].port}"
    assert rows[2]["labels"] == {"slot": "3"} and rows[2]["groups"] == ["lab", "odd"]


def test_eight_devices_two_killed_mid_run(fleet_dir, tiny_bundle):
    root, servers, known = fleet_dir
    out = root / "bench.json"
    argv = [
        sys.executable, "-m", "edgepack", "bench", str(tiny_bundle), "--device", "@lab", "--parallel", "8",
        "--known-hosts", str(known), "--runs", "1", "--warmup", "1", "--min-seconds", "6", "--max-runs", "100000000",
        "--json", str(out),
    ]  # fmt: skip
    import subprocess

    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_runners(root, KILLED)
        during = json.loads(out.read_text())  # written from the start: every pair pending until it is done
        assert {p["device_spec"] for p in during["pending"]} >= set(KILLED)
        for name in KILLED:
            servers[name].kill_all()  # sshd and everything below it, runner included: the device vanishes
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_SOME_FAILED, stderr
    doc = json.loads(out.read_text())
    assert "pending" not in doc
    done = {r["device_spec"]: r for r in doc["results"]}
    assert sorted(done) == sorted(set(servers) - set(KILLED))
    for r in done.values():  # complete result sets
        assert r["result"]["accuracy"]["n"] == 40 and r["result"]["latency_ms"]["p50"] > 0
        assert r["result"]["validation"]["logits"]["cosine"] > 0.9999
    assert sorted((f["device_spec"], f["status"]) for f in doc["failures"]) == [(n, "lost") for n in KILLED]
    for n in KILLED:
        assert f"edgepack: error: tiny.fp32.edgepack @ {n}: lost: connection to {n} lost" in stderr, stderr
    assert "2 of 8 device(s) failed (dev3, dev6): 6 of 8 bundle x device results measured" in stderr

    # the two come back: bench just them again, and merge both runs into one report of 8
    for n in KILLED:
        servers[n].start()
    again = root / "again.json"
    proc2 = cli(
        "bench", str(tiny_bundle), "--device", ",".join(KILLED), "--known-hosts", str(known),
        "--runs", "3", "--min-seconds", "0", "--json", str(again), cwd=root,
    )  # fmt: skip
    assert proc2.returncode == 0, proc2.stderr
    rep = cli("report", str(out), str(again), "--format", "json")
    assert rep.returncode == 0, rep.stderr
    merged = json.loads(rep.stdout)
    assert sorted(r["device_spec"] for r in merged["records"]) == sorted(servers) and merged["failures"] == []
    for n in KILLED:  # the next run swept what the killed runner left
        assert list((root / n / "cache" / "work").iterdir()) == []
