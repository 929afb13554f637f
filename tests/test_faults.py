"""Faults on a real SSH connection: the device's sshd killed mid-bench, the runner killed by a signal, a full
disk. Each is a clear one-line error with a non-zero exit, no result written as if complete, nothing left on the
device, and a re-run that succeeds once the device is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgepack
from edgepack.errors import DeviceError
from sshd import Sshd, bench_process, find_process, why_unavailable

_reason = why_unavailable()
pytestmark = [pytest.mark.ssh, pytest.mark.skipif(bool(_reason), reason=_reason or "")]


@pytest.fixture
def server(tmp_path):
    s = Sshd(tmp_path / "sshd").start()
    yield s
    s.stop()


def _home(tmp_path: Path, s: Sshd) -> Path:
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "known_hosts").write_text(s.known_hosts_line())
    (h / ".ssh" / "config").write_text(
        f"Host dev\n  HostName 127.0.0.1\n  Port {s.port}\n  User {s.user}\n"
        f"  IdentityFile {s.user_key}\n  UserKnownHostsFile {h / '.ssh' / 'known_hosts'}\n"
    )
    return h


def _wait_for_runner(remote_dir: Path, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid = find_process(f"onnx_runner.py {remote_dir}/bundles/")
        if pid and list((remote_dir / "work").glob("edgepack-run-*")):
            return pid
        time.sleep(0.1)
    raise AssertionError("the runner did not start on the device")


def _again(bundle, home, remote_dir):
    return edgepack.bench(
        bundle,
        "dev",
        runs=2,
        min_seconds=0,
        ssh_config=home / ".ssh" / "config",
        remote_python=sys.executable,
        remote_dir=str(remote_dir),
    )


def test_sshd_killed_mid_bench(tiny_bundle, server, tmp_path):
    home, remote_dir, out = _home(tmp_path, server), tmp_path / "cache", tmp_path / "result.json"
    proc = bench_process(tiny_bundle, home, remote_dir, "30", "--json", str(out))
    _wait_for_runner(remote_dir)
    server.kill_all()  # the device's sshd and everything below it, runner included, vanish
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 5, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("edgepack: error: connection to dev lost"), stderr
    assert not out.exists(), "no result may be written for an interrupted bench"
    server.start()  # the device is back: the re-run succeeds and sweeps the killed runner's files
    assert _again(tiny_bundle, home, remote_dir).result.latency_ms.p50 > 0
    assert list((remote_dir / "work").iterdir()) == []


def test_runner_killed_by_a_signal(tiny_bundle, server, tmp_path):
    home, remote_dir, out = _home(tmp_path, server), tmp_path / "cache", tmp_path / "result.json"
    proc = bench_process(tiny_bundle, home, remote_dir, "30", "--json", str(out))
    os.kill(_wait_for_runner(remote_dir), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 5
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("edgepack: error: runner failed on dev") and "signal 9" in last, stderr
    assert not out.exists()
    assert _again(tiny_bundle, home, remote_dir).result.accuracy.n == 40
    assert list((remote_dir / "work").iterdir()) == [], "the killed runner's extraction dir is swept"


def test_full_disk_on_the_device(tiny_bundle, server, tmp_path):
    home, remote_dir = _home(tmp_path, server), tmp_path / "cache"
    remote_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(remote_dir)], check=True)
    try:
        with pytest.raises(DeviceError, match="failed") as e:
            _again(tiny_bundle, home, remote_dir)
        assert "disk" in e.value.hint
        leftovers = [p for p in remote_dir.rglob("*") if p.is_file() and ".part-" in p.name]
        assert leftovers == [], "no partial upload left on the device"
    finally:
        subprocess.run(["umount", str(remote_dir)], check=True)
    assert _again(tiny_bundle, home, remote_dir).result.latency_ms.p50 > 0
