"""Issue 12 on a real sshd (127.0.0.1): interrupts, timeouts and lost connections stop the runner on the device
and leave nothing there; a corrupted cached bundle is repaired."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

import edgepack
from sshd import Sshd, bench_process, descendants, find_process, why_unavailable

_reason = why_unavailable()
pytestmark = [pytest.mark.ssh, pytest.mark.skipif(bool(_reason), reason=_reason or "")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield s
    s.stop()


@pytest.fixture
def home(tmp_path, server) -> Path:
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "known_hosts").write_text(server.known_hosts_line())
    (h / ".ssh" / "config").write_text(
        f"Host dev\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {server.user_key}\n"
        f"  UserKnownHostsFile {h / '.ssh' / 'known_hosts'}\n"
    )
    return h


def _runner(remote_dir: Path, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid = find_process(f"onnx_runner.py {remote_dir}/bundles/")
        if pid and list((remote_dir / "work").glob("edgepack-run-*")):
            return pid
        time.sleep(0.05)
    raise AssertionError("the runner did not start on the device")


def _gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_runner_on_the_device(tiny_bundle, home, tmp_path, sig):
    remote_dir = tmp_path / "cache"
    proc = bench_process(tiny_bundle, home, remote_dir, "120", "--json", str(tmp_path / "r.json"))
    pid = _runner(remote_dir)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert _gone(pid), "the runner kept running on the device (orphaned)"
    assert list((remote_dir / "work").iterdir()) == [], "the runner cleaned up its extraction dir"
    assert not (tmp_path / "r.json").exists()


def test_timeout_stops_the_runner_on_the_device(tiny_bundle, home, tmp_path):
    remote_dir = tmp_path / "cache"
    t0 = time.time()
    proc = bench_process(tiny_bundle, home, remote_dir, "120", "--timeout", "2")
    pid = _runner(remote_dir)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err
    last = err.strip().splitlines()[-1]
    assert "did not finish within 2s" in last and "--timeout" in last, err
    assert time.time() - t0 < 60 and _gone(pid)
    assert list((remote_dir / "work").iterdir()) == []


def test_lost_connection_stops_the_runner(tiny_bundle, home, tmp_path, server):
    """Only the SSH session dies (not the runner): the runner notices its stdin closing and stops."""
    remote_dir = tmp_path / "cache"
    proc = bench_process(tiny_bundle, home, remote_dir, "120")
    pid = _runner(remote_dir)
    keep = {pid, *descendants(pid)}
    sessions = [p for p in descendants(server.proc.pid) if p not in keep]
    for p in sessions:  # the per-connection sshd processes and the shell: the connection is gone
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 5, err
    assert _gone(pid), "the runner kept running after its connection died"
    assert list((remote_dir / "work").iterdir()) == []


def test_corrupted_cached_bundle_is_replaced(tiny_bundle, home, tmp_path):
    remote_dir = tmp_path / "cache"
    opts = dict(ssh_config=home / ".ssh" / "config", remote_python=sys.executable, remote_dir=str(remote_dir))
    first = edgepack.bench(tiny_bundle, "dev", runs=2, min_seconds=0, **opts)
    cached = remote_dir / "bundles" / f"{first.result.bundle_sha256}.edgepack"
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes: a size check cannot see it
    cached.write_bytes(bytes(data))
    again = edgepack.bench(tiny_bundle, "dev", runs=2, min_seconds=0, **opts)
    assert again.uploaded is True and again.result.accuracy.n == 40
    assert cached.read_bytes() == tiny_bundle.read_bytes()
    third = edgepack.bench(tiny_bundle, "dev", runs=2, min_seconds=0, **opts)
    assert third.uploaded is False, "an intact cached copy is reused"
