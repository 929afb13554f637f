"""edgepack.transport and edgepack.ssh_connect against real servers on loopback: OpenSSH with and without
SFTP, Debian's dropbear (no SFTP; also with a BusyBox-only /usr/bin), OpenSSH as a jump host, ssh-agent."""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path

import paramiko
import pytest

from edgepack.errors import DeviceError
from edgepack.transport import open_transfer, put_dir, sha256_file
from sshd import Dropbear, Sshd, agent_unavailable, dropbear_unavailable, why_unavailable

_reason = why_unavailable()
if _reason and os.environ.get("EDGEPACK_REQUIRE_SSHD"):
    raise RuntimeError(f"EDGEPACK_REQUIRE_SSHD is set but: {_reason}")
pytestmark = [pytest.mark.ssh, pytest.mark.skipif(bool(_reason), reason=_reason or "")]

_no_dropbear = dropbear_unavailable()
_no_busybox = dropbear_unavailable(busybox=True)
needs_dropbear = pytest.mark.skipif(bool(_no_dropbear), reason=_no_dropbear or "")
needs_busybox = pytest.mark.skipif(bool(_no_busybox), reason=_no_busybox or "")
needs_agent = pytest.mark.skipif(bool(agent_unavailable()), reason=agent_unavailable() or "")

# server kind -> (transport kind it gets, shell tool set)
KINDS = {
    "openssh": "sftp",
    "openssh-nosftp": "exec",
    "dropbear": "exec",
    "busybox": "exec",
}


def _make(kind: str, root: Path):
    if kind == "openssh":
        return Sshd(root)
    if kind == "openssh-nosftp":
        return Sshd(root, sftp=False)
    if kind == "dropbear":
        return Dropbear(root)
    if kind == "busybox":
        return Dropbear(root, busybox=True)
    if kind == "busybox-nohash":
        return Dropbear(root, busybox=True, without=("sha256sum",))
    raise ValueError(kind)


_SKIPS = {"dropbear": needs_dropbear, "busybox": needs_busybox}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started: dict = {}
    yield lambda kind: started.get(kind) or started.setdefault(
        kind, _make(kind, tmp_path_factory.mktemp(kind)).start())
    for s in started.values():
        s.stop()


def _client(server) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    kh = server.root / "known_hosts"
    kh.write_text(server.known_hosts_line())
    c.load_host_keys(str(kh))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(server.address, server.port, server.user, key_filename=str(server.user_key), allow_agent=False,
              look_for_keys=False, timeout=10)
    return c


@pytest.fixture(params=[pytest.param(k, marks=_SKIPS.get(k, [])) for k in KINDS])
def device(request, servers):
    server = servers(request.param)
    client = _client(server)
    yield request.param, server, client
    client.close()


def _leftovers(d: Path) -> list[str]:
    return [p.name for p in d.rglob("*") if ".part-" in p.name] if d.exists() else []


def test_put_verifies_sha256_on_the_device(device, tmp_path):
    kind, server, client = device
    local = tmp_path / "model.edgepack"
    local.write_bytes(os.urandom(700_000))  # several chunks
    remote = tmp_path / "remote" / "bundles"
    t = open_transfer(client, name=kind)
    assert t.kind == KINDS[kind]
    assert (kind == "openssh") == (not t.notes), t.notes  # the fallback says why
    t.mkdirs(str(remote))
    final = str(remote / f"{sha256_file(local)}.edgepack")
    assert t.stat_size(final) is None
    tool = t.put(local, final, sha256_file(local))
    assert tool == "sha256sum"
    assert Path(final).read_bytes() == local.read_bytes()
    assert t.stat_size(final) == local.stat().st_size
    assert _leftovers(remote) == []
    t.remove(final)
    assert t.stat_size(final) is None


def test_wrong_sha256_is_refused_and_leaves_nothing(device, tmp_path):
    kind, server, client = device
    local = tmp_path / "x.bin"
    local.write_bytes(b"abc" * 1000)
    t = open_transfer(client, name=kind)
    final = tmp_path / "dst" / "x.bin"
    t.mkdirs(str(final.parent))
    with pytest.raises(DeviceError, match="arrived corrupted: sha256 on the device is [0-9a-f]{64} .sha256sum., "
                                          "expected 0{64}") as e:
        t.put(local, str(final), "0" * 64)
    assert "removed" in e.value.hint
    assert not final.exists() and _leftovers(final.parent) == []


def test_short_stream_is_refused_and_leaves_nothing(device, tmp_path):
    kind, server, client = device
    t = open_transfer(client, name=kind)
    final = tmp_path / "short.bin"
    with pytest.raises(DeviceError, match="arrived corrupted: size on the device is 100 bytes, expected 200"):
        t.put_stream(io.BytesIO(b"x" * 100), 200, str(final))
    assert not final.exists() and _leftovers(tmp_path) == []


def test_missing_directory_is_one_line_with_a_fix(device, tmp_path):
    kind, server, client = device
    local = tmp_path / "x.bin"
    local.write_bytes(b"abc")
    t = open_transfer(client, name=kind)
    with pytest.raises(DeviceError, match=f"upload of x.bin to {kind} failed") as e:
        t.put(local, str(tmp_path / "nope" / "x.bin"))
    assert "create" in e.value.hint and "\n" not in e.value.one_line()


def test_put_dir_installs_once(device, tmp_path):
    kind, server, client = device
    src = tmp_path / "runners"
    src.mkdir()
    for i in range(3):
        (src / f"r{i}.py").write_text(f"print({i})\n")
    t = open_transfer(client, name=kind)
    base = tmp_path / "cache" / "runners"
    t.mkdirs(str(base))
    files = sorted(src.iterdir())
    assert put_dir(t, files, str(base / "abc"), marker_text="abc") is True
    assert sorted(p.name for p in (base / "abc").iterdir()) == [".complete", "r0.py", "r1.py", "r2.py"]
    assert put_dir(t, files, str(base / "abc")) is False
    assert _leftovers(base) == [] and sorted(p.name for p in base.iterdir()) == ["abc"]


@needs_dropbear
@pytest.mark.parametrize("where,expect", [("readonly_dir", "Read-only file system"),
                                          ("full_dir", "No space left")])
def test_readonly_and_full_remote_dir(servers, tmp_path, where, expect):
    server = servers("dropbear")
    client = _client(server)
    try:
        local = tmp_path / "big.bin"
        local.write_bytes(os.urandom(200_000))  # more than the 64 KiB filesystem
        t = open_transfer(client, name="board")
        with pytest.raises(DeviceError, match=f"upload of big.bin to board failed: .*{expect}") as e:
            t.put(local, str(getattr(server, where) / "big.bin"), sha256_file(local))
        assert "--remote-dir" in e.value.hint
        # in the server's namespace the directory is empty again
        code, out, _ = t.run(f"ls -a {getattr(server, where)}")
        assert code == 0 and out.split() == [".", ".."]
    finally:
        client.close()


@needs_busybox
def test_busybox_without_sha256sum_says_size_only(tmp_path):
    server = Dropbear(tmp_path / "bb", busybox=True, without=("sha256sum",)).start()
    try:
        client = _client(server)
        seen = []
        t = open_transfer(client, name="bare", warn=seen.append)
        assert t.kind == "exec"
        code, out, _ = t.run("command -v python3 || echo no-python")
        assert out.strip() == "no-python"
        local = tmp_path / "f.bin"
        local.write_bytes(b"123")
        assert t.put(local, str(tmp_path / "f.out"), sha256_file(local)) is None
        assert (tmp_path / "f.out").read_bytes() == b"123"
        assert any("no sha256 tool on bare" in n and "checked by size only" in n for n in seen)
        client.close()
    finally:
        server.stop()


def test_prefer_sftp_on_a_server_without_it_is_one_line(servers):
    client = _client(servers("openssh-nosftp"))
    try:
        with pytest.raises(DeviceError, match="refuses SFTP"):
            open_transfer(client, name="dev", prefer="sftp")
        assert open_transfer(client, prefer="exec").kind == "exec"
    finally:
        client.close()


class _DropLinkAfter(io.RawIOBase):
    """A stream of zeros that cuts the TCP connection under paramiko after ``n`` bytes (the link drops)."""

    def __init__(self, client, n):
        self.client, self.n, self.sent = client, n, 0

    def readable(self):
        return True

    def read(self, size=-1):
        if self.sent >= self.n:
            self.client.get_transport().sock.shutdown(socket.SHUT_RDWR)
        self.sent += size
        return b"\0" * size


@pytest.mark.parametrize("kind", ["openssh-nosftp", pytest.param("dropbear", marks=needs_dropbear)])
def test_link_dropping_mid_upload_leaves_nothing(kind, tmp_path):
    """Over exec the device checks the size in the same command: cat sees end of input, the file is
    short, and the device removes it although edgepack can no longer reach it."""
    server = _make(kind, tmp_path / "srv").start()
    try:
        client = _client(server)
        t = open_transfer(client, name="dev")
        dst = tmp_path / "dst"
        dst.mkdir()
        with pytest.raises(DeviceError, match="connection to dev lost during upload of big.bin"):
            t.put_stream(_DropLinkAfter(client, 2_000_000), 50_000_000, str(dst / "big.bin"), local_name="big.bin")
        deadline = time.time() + 10
        while os.listdir(dst) and time.time() < deadline:
            time.sleep(0.1)
        assert os.listdir(dst) == []
        client.close()
    finally:
        server.stop()
