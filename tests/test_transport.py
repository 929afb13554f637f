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

from edgepack.errors import DeviceError, UsageError
from edgepack.ssh_connect import ConnectOptions, connect, parse_jump
from edgepack.transport import open_transfer, put_dir, sha256_file
from sshd import (
    Dropbear,
    SshAgent,
    Sshd,
    agent_unavailable,
    dropbear_unavailable,
    keygen,
    why_unavailable,
)

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
    yield lambda kind: started.get(kind) or started.setdefault(kind, _make(kind, tmp_path_factory.mktemp(kind)).start())
    for s in started.values():
        s.stop()


def _client(server) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    kh = server.root / "known_hosts"
    kh.write_text(server.known_hosts_line())
    c.load_host_keys(str(kh))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(
        server.address,
        server.port,
        server.user,
        key_filename=str(server.user_key),
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
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
    with pytest.raises(
        DeviceError, match="arrived corrupted: sha256 on the device is [0-9a-f]{64} .sha256sum., expected 0{64}"
    ) as e:
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
@pytest.mark.parametrize("where,expect", [("readonly_dir", "Read-only file system"), ("full_dir", "No space left")])
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


# --------------------------------------------------------------------------- ssh_connect: jump hosts, keys


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """jump (127.0.0.1, logs forwarding) -> jump2 (127.0.0.3) -> target (127.0.0.2); one user key for all."""
    root = tmp_path_factory.mktemp("net")
    jump = Sshd(root / "jump", log_level="DEBUG1").start()
    jump2 = Sshd(root / "jump2", listen="127.0.0.3").start()
    target = Sshd(root / "target", listen="127.0.0.2").start()
    for s in (jump2, target):
        (s.root / "authorized_keys").write_text((jump.user_key.parent / "id_ed25519.pub").read_text())
    kh = root / "known_hosts"
    kh.write_text(jump.known_hosts_line() + jump2.known_hosts_line() + target.known_hosts_line())
    yield dict(jump=jump, jump2=jump2, target=target, known_hosts=kh, key=jump.user_key)
    for s in (jump, jump2, target):
        s.stop()


def _run(client, command: str) -> str:
    _, out, _ = client.exec_command(command)
    return out.read().decode().strip()


def _config(tmp_path: Path, text: str):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(text)
    return paramiko.SSHConfig.from_path(str(cfg))


def _strict(net, **kw) -> ConnectOptions:
    base = dict(policy=paramiko.RejectPolicy(), known_hosts=net["known_hosts"], use_agent=False, timeout=10)
    base.update(kw)
    return ConnectOptions(**base)


def test_parse_jump_forms():
    assert [str(h) for h in parse_jump("a,u@b:2222,ssh://v@[fe80::1]:22")] == ["a", "u@b:2222", "v@fe80::1:22"]
    assert parse_jump("none") == []
    with pytest.raises(UsageError):
        parse_jump("u@b:99999")


def test_proxyjump_from_ssh_config(net, tmp_path):
    j, t = net["jump"], net["target"]
    cfg = _config(
        tmp_path,
        f"""
Host board
  HostName 127.0.0.2
  Port {t.port}
  User {t.user}
  IdentityFile {net["key"]}
  ProxyJump bastion
Host bastion
  HostName 127.0.0.1
  Port {j.port}
  IdentityFile {net["key"]}
""",
    )
    look = cfg.lookup("board")
    c = connect(look["hostname"], int(look["port"]), look["user"], _strict(net, lookup=look, config=cfg, alias="board"))
    try:
        assert _run(c, "echo $SSH_CONNECTION").split()[2:] == ["127.0.0.2", str(t.port)]
        assert c.route == [f"{j.user}@127.0.0.1:{j.port}"]
        assert f"127.0.0.2 port {t.port}" in j.log() and "direct-tcpip" in j.log()
        # the transfer layer works through the jump host
        tr = open_transfer(c)
        (tmp_path / "f").write_bytes(b"via jump")
        tr.put(tmp_path / "f", str(tmp_path / "f.out"), sha256_file(tmp_path / "f"))
        assert (tmp_path / "f.out").read_bytes() == b"via jump"
    finally:
        c.close()
    assert c.hops == []


def test_two_hop_chain_with_jump_flag(net):
    j, j2, t = net["jump"], net["jump2"], net["target"]
    c = connect(
        "127.0.0.2",
        t.port,
        t.user,
        _strict(net, jump=f"{j.user}@127.0.0.1:{j.port},{j2.user}@127.0.0.3:{j2.port}", identity_files=[net["key"]]),
    )
    try:
        assert _run(c, "echo $SSH_CONNECTION").split()[2:] == ["127.0.0.2", str(t.port)]
        assert len(c.route) == 2
    finally:
        c.close()


def test_unknown_host_key_on_the_jump_hop_is_refused(net, tmp_path):
    j, t = net["jump"], net["target"]
    kh = tmp_path / "known_hosts"
    kh.write_text(t.known_hosts_line())  # the device is known, the jump host is not
    with pytest.raises(DeviceError, match=f"host key for jump host .*127.0.0.1:{j.port} is unknown"):
        connect(
            "127.0.0.2",
            t.port,
            t.user,
            _strict(net, known_hosts=kh, jump=f"127.0.0.1:{j.port}", identity_files=[net["key"]]),
        )


def test_unknown_host_key_behind_the_jump_is_refused(net, tmp_path):
    j, t = net["jump"], net["target"]
    kh = tmp_path / "known_hosts"
    kh.write_text(j.known_hosts_line())
    with pytest.raises(DeviceError, match=f"host key for {t.user}@127.0.0.2:{t.port} is unknown"):
        connect(
            "127.0.0.2",
            t.port,
            t.user,
            _strict(net, known_hosts=kh, jump=f"127.0.0.1:{j.port}", identity_files=[net["key"]]),
        )


def test_proxycommand_with_openssh_client(net, tmp_path):
    j, t = net["jump"], net["target"]
    proxy = (
        f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="
        f"{net['known_hosts']} -i {net['key']} -p {j.port} -W %h:%p {j.user}@127.0.0.1"
    )
    cfg = _config(
        tmp_path,
        f"""
Host board
  HostName 127.0.0.2
  Port {t.port}
  ProxyCommand {proxy}
""",
    )
    look = cfg.lookup("board")
    c = connect(
        look["hostname"],
        int(look["port"]),
        t.user,
        _strict(net, lookup=look, alias="board", identity_files=[net["key"]]),
    )
    try:
        assert _run(c, "echo $SSH_CONNECTION").split()[2:] == ["127.0.0.2", str(t.port)]
        assert c.route[0].startswith("ProxyCommand ssh ")
    finally:
        c.close()


def test_proxycommand_refuses_shell_metacharacters_in_the_host(net, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UsageError, match="bad host name"):
        connect(f"x;touch {marker}", 22, "u", _strict(net, lookup={"proxycommand": "nc %h %p"}))
    assert not marker.exists()


@needs_agent
def test_agent_key_without_identity_file(net, tmp_path, monkeypatch):
    t = net["target"]
    agent = SshAgent(tmp_path / "agent").start()
    try:
        agent.add(net["key"])
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
        c = connect("127.0.0.2", t.port, t.user, _strict(net, use_agent=True, jump=f"127.0.0.1:{net['jump'].port}"))
        assert _run(c, "echo ok") == "ok"
        c.close()
        # IdentitiesOnly with another IdentityFile: the agent's key is not offered
        other = keygen(tmp_path / "id_other")
        with pytest.raises(DeviceError, match="authentication failed"):
            connect(
                "127.0.0.2",
                t.port,
                t.user,
                _strict(net, use_agent=True, lookup={"identitiesonly": "yes", "identityfile": [str(other)]}),
            )
    finally:
        agent.stop()


def _passphrase_target(net, tmp_path):
    key = keygen(tmp_path / "id_locked", passphrase="s3cret phrase")
    t = net["target"]
    with open(t.root / "authorized_keys", "a") as f:
        f.write((tmp_path / "id_locked.pub").read_text())
    return key, t


def test_passphrase_key_without_terminal_names_ssh_add(net, tmp_path, monkeypatch):
    key, t = _passphrase_target(net, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not os.isatty(0) or pytest.skip("stdin is a terminal")
    with pytest.raises(DeviceError, match="passphrase-protected") as e:
        connect("127.0.0.2", t.port, t.user, _strict(net, identity_files=[key]))
    assert f"ssh-add {key}" in e.value.hint
    # with the passphrase (what a terminal prompt returns) it connects
    c = connect("127.0.0.2", t.port, t.user, _strict(net, identity_files=[key], passphrase=lambda p: "s3cret phrase"))
    assert _run(c, "echo ok") == "ok"
    c.close()


@needs_agent
def test_passphrase_key_loaded_with_ssh_add_is_used_from_the_agent(net, tmp_path, monkeypatch):
    key, t = _passphrase_target(net, tmp_path)
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho 's3cret phrase'\n")
    askpass.chmod(0o700)
    agent = SshAgent(tmp_path / "agent").start()
    try:
        import subprocess

        subprocess.run(
            ["ssh-add", str(key)],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env={**agent.env(), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"},
        )
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
        c = connect("127.0.0.2", t.port, t.user, _strict(net, use_agent=True, identity_files=[key]))
        assert _run(c, "echo ok") == "ok"
        c.close()
    finally:
        agent.stop()


def test_password_only_when_asked(net, tmp_path, monkeypatch):
    t = net["target"]
    monkeypatch.setenv("HOME", str(tmp_path))
    asked = []
    with pytest.raises(DeviceError, match="authentication failed") as e:
        connect("127.0.0.2", t.port, t.user, _strict(net, password=asked.append))
    assert asked == [] and "--ask-password" in e.value.hint
    with pytest.raises(DeviceError, match="authentication failed.*password"):
        connect(
            "127.0.0.2",
            t.port,
            t.user,
            _strict(net, ask_password=True, password=lambda where: asked.append(where) or "wrong"),
        )
    assert asked == [f"{t.user}@127.0.0.2:{t.port}"]
