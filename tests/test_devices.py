"""Issue 19 end to end, through the real CLI: devices as they come. OpenSSH without SFTP, dropbear (also with a
BusyBox-only /usr/bin and no python3), a jump host given with --jump or by ~/.ssh/config ProxyJump, ssh-agent
keys with no identity file; doctor's one-line verdicts on bare devices (no Python, a read-only, full or noexec
--remote-dir). Every server is real and on loopback (tests/sshd.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli, one_line_error
from sshd import Dropbear, SshAgent, Sshd, agent_unavailable, dropbear_unavailable, why_unavailable

_reason = why_unavailable()
if _reason and os.environ.get("EDGEPACK_REQUIRE_SSHD"):
    raise RuntimeError(f"EDGEPACK_REQUIRE_SSHD is set but: {_reason}")
pytestmark = [pytest.mark.ssh, pytest.mark.skipif(bool(_reason), reason=_reason or "")]

_no_dropbear = dropbear_unavailable()
_no_busybox = dropbear_unavailable(busybox=True)
needs_dropbear = pytest.mark.skipif(bool(_no_dropbear), reason=_no_dropbear or "")
needs_busybox = pytest.mark.skipif(bool(_no_busybox), reason=_no_busybox or "")
needs_agent = pytest.mark.skipif(bool(agent_unavailable()), reason=agent_unavailable() or "")


def _device_python_has_runtime() -> bool:
    """dropbear's sessions use this machine's filesystem: sys.executable serves as the device's Python."""
    return subprocess.run([sys.executable, "-c", "import numpy, onnxruntime"], capture_output=True).returncode == 0


def _home(tmp_path: Path, config: str, known: str, name: str = "home") -> Path:
    h = tmp_path / name
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "known_hosts").write_text(known)
    (h / ".ssh" / "config").write_text(config.replace("KNOWN", str(h / ".ssh" / "known_hosts")))
    return h


def _alias(server, key: Path, name: str = "dev") -> str:
    return (
        f"Host {name}\n  HostName {server.address}\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {key}\n  UserKnownHostsFile KNOWN\n"
    )


def _bench(bundle: Path, device: str, home: Path, remote_dir: Path, *extra: str, env: dict | None = None):
    return cli(
        "bench",
        str(bundle),
        "--device",
        device,
        "--runs",
        "3",
        "--min-seconds",
        "0",
        "--warmup",
        "1",
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(remote_dir),
        "--json",
        "-",
        *extra,
        env={"HOME": str(home), **(env or {})},
    )


def _ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)["results"][0]["result"]
    assert r["device"]["runtime"] == "onnxruntime" and r["accuracy"]["n"] == 40
    assert r["validation"]["logits"]["cosine"] > 0.99999
    return r


def _nothing_left(remote_dir: Path) -> None:
    assert [p.name for p in remote_dir.rglob("*") if ".part-" in p.name] == []
    assert list((remote_dir / "work").iterdir()) == []


# --------------------------------------------------------------------------- OpenSSH without SFTP


@pytest.fixture(scope="module")
def nosftp(tmp_path_factory):
    s = Sshd(tmp_path_factory.mktemp("nosftp"), sftp=False).start()
    yield s
    s.stop()


@pytest.mark.slow
def test_bench_on_openssh_without_sftp(tiny_bundle, nosftp, tmp_path):
    home = _home(tmp_path, _alias(nosftp, nosftp.user_key), nosftp.known_hosts_line())
    remote_dir = tmp_path / "cache"
    proc = _bench(tiny_bundle, "dev", home, remote_dir)
    r = _ok(proc)
    assert "has no SFTP" in proc.stderr and "exec channel" in proc.stderr  # the fallback says why, once
    cached = remote_dir / "bundles" / f"{r['bundle_sha256']}.edgepack"
    assert cached.read_bytes() == tiny_bundle.read_bytes()
    from edgepack.devices import runner_digest, runner_files, runner_path

    shipped = remote_dir / "runners" / runner_digest()
    assert sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*.py")) == sorted(
        runner_path(p) for p in runner_files()
    )  # subfolders (runner_common/) included, over exec
    _nothing_left(remote_dir)
    import edgepack

    again = edgepack.bench(
        tiny_bundle,
        "dev",
        runs=1,
        min_seconds=0,
        ssh_config=home / ".ssh" / "config",
        remote_python=sys.executable,
        remote_dir=str(remote_dir),
    )
    assert again.uploaded is False, "the content-addressed cache works over exec too"
    # --transport sftp insists, in one line
    proc = cli(
        "deploy",
        str(tiny_bundle),
        "--device",
        "dev",
        "--transport",
        "sftp",
        "--remote-dir",
        str(tmp_path / "c2"),
        env={"HOME": str(home)},
    )
    assert proc.returncode == 5 and "refuses SFTP" in one_line_error(proc)
    assert not (tmp_path / "c2").exists()


@pytest.mark.slow
def test_doctor_reports_the_transport(nosftp, tmp_path):
    home = _home(tmp_path, _alias(nosftp, nosftp.user_key), nosftp.known_hosts_line())
    proc = cli(
        "doctor",
        "--device",
        "dev",
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(tmp_path / "cache"),
        "--json",
        env={"HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)["facts"]
    assert facts["transport"] == "exec" and facts["sha256_tool"] == "sha256sum"
    assert any("has no SFTP" in n for n in facts["notes"])
    text = cli(
        "doctor",
        "--device",
        "dev",
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(tmp_path / "cache"),
        env={"HOME": str(home)},
    )
    assert "transport exec, sha256 checked with sha256sum" in text.stdout, text.stdout + text.stderr


@pytest.mark.slow
def test_transport_exec_on_a_server_with_sftp(tiny_bundle, tmp_path):
    s = Sshd(tmp_path / "srv").start()
    try:
        home = _home(tmp_path, _alias(s, s.user_key), s.known_hosts_line())
        proc = cli(
            "deploy",
            str(tiny_bundle),
            "--device",
            "dev",
            "--transport",
            "exec",
            "--remote-dir",
            str(tmp_path / "cache"),
            env={"HOME": str(home)},
        )
        assert proc.returncode == 0, proc.stderr
        assert "has no SFTP" not in proc.stderr  # asked for, not a fallback
        assert [p.name for p in (tmp_path / "cache" / "bundles").iterdir()][0].endswith(".edgepack")
        proc = cli(
            "doctor",
            "--device",
            "dev",
            "--transport",
            "exec",
            "--remote-python",
            sys.executable,
            "--remote-dir",
            str(tmp_path / "cache"),
            "--json",
            env={"HOME": str(home)},
        )
        assert json.loads(proc.stdout)["facts"]["transport"] == "exec"
        proc = cli(
            "doctor",
            "--device",
            "dev",
            "--remote-python",
            sys.executable,
            "--remote-dir",
            str(tmp_path / "cache"),
            "--json",
            env={"HOME": str(home)},
        )
        assert json.loads(proc.stdout)["facts"]["transport"] == "sftp"
    finally:
        s.stop()


# --------------------------------------------------------------------------- dropbear, BusyBox


@pytest.fixture(scope="module")
def dropbear(tmp_path_factory):
    if _no_dropbear:
        pytest.skip(_no_dropbear)
    s = Dropbear(tmp_path_factory.mktemp("dropbear")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def busybox(tmp_path_factory):
    if _no_busybox:
        pytest.skip(_no_busybox)
    s = Dropbear(tmp_path_factory.mktemp("busybox"), busybox=True).start()
    yield s
    s.stop()


@needs_dropbear
@pytest.mark.slow
def test_bench_on_dropbear(tiny_bundle, dropbear, tmp_path):
    if not _device_python_has_runtime():
        pytest.skip(f"{sys.executable} (the device's Python here) cannot import numpy and onnxruntime")
    home = _home(tmp_path, _alias(dropbear, dropbear.user_key), dropbear.known_hosts_line())
    remote_dir = tmp_path / "cache"
    proc = _bench(tiny_bundle, "dev", home, remote_dir)
    _ok(proc)
    assert "has no SFTP" in proc.stderr
    _nothing_left(remote_dir)


def _remote_ls(server, home: Path, path: Path) -> list[str]:
    from edgepack.devices import SSHOptions, open_device

    dev = open_device("dev", SSHOptions(ssh_config=home / ".ssh" / "config"))
    try:
        code, out, _ = dev.transfer().run(f"ls -A {path}")
        assert code == 0
        return out.split()
    finally:
        dev.close()


@needs_dropbear
@pytest.mark.parametrize(
    "where,expect",
    [("readonly_dir", "cannot be written: .*Read-only file system"), ("full_dir", r"is \(nearly\) full: 6\d KiB free")],
)
def test_doctor_on_a_readonly_or_full_remote_dir(dropbear, tmp_path, where, expect):
    home = _home(tmp_path, _alias(dropbear, dropbear.user_key), dropbear.known_hosts_line())
    rd = getattr(dropbear, where) / "cache"
    proc = cli(
        "doctor", "--device", "dev", "--remote-python", sys.executable, "--remote-dir", str(rd), env={"HOME": str(home)}
    )
    line = one_line_error(proc)
    assert proc.returncode == 5
    import re

    assert re.search(f"--remote-dir {rd} on dev {expect}", line), line
    assert "(fix: " in line and "--remote-dir" in line.split("(fix: ")[1]
    # nothing left behind in the device's view of the directory
    assert _remote_ls(dropbear, home, getattr(dropbear, where)) in ([], ["cache"])
    if where == "full_dir":
        assert _remote_ls(dropbear, home, rd) == []


@needs_dropbear
def test_doctor_on_a_noexec_remote_dir(dropbear, tmp_path):
    home = _home(tmp_path, _alias(dropbear, dropbear.user_key), dropbear.known_hosts_line())
    proc = cli(
        "doctor",
        "--device",
        "dev",
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(dropbear.noexec_dir / "cache"),
        "--json",
        env={"HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)["facts"]
    assert facts["transport"] == "exec" and facts["sha256_tool"] == "sha256sum"
    noexec = [n for n in facts["notes"] if "noexec" in n]
    assert len(noexec) == 1 and "--remote-dir" in noexec[0] and "native libraries" in noexec[0]
    assert not any(
        "noexec" in n
        for n in json.loads(
            cli(
                "doctor",
                "--device",
                "dev",
                "--remote-python",
                sys.executable,
                "--remote-dir",
                str(tmp_path / "c"),
                "--json",
                env={"HOME": str(home)},
            ).stdout
        )["facts"]["notes"]
    )


@needs_busybox
@pytest.mark.parametrize("command", ["doctor", "bench"])
def test_busybox_device_without_python_is_one_line(tiny_bundle, busybox, tmp_path, command):
    home = _home(tmp_path, _alias(busybox, busybox.user_key), busybox.known_hosts_line())
    args = ["doctor"] if command == "doctor" else ["bench", str(tiny_bundle)]
    proc = cli(*args, "--device", "dev", env={"HOME": str(home)})
    line = one_line_error(proc)
    assert proc.returncode == 5
    assert "no Python at 'python3' on dev (a BusyBox system)" in line, line
    # this machine's Debian has apt-get, but the BusyBox /usr/bin has no package manager: the fix says so
    assert "add Python 3 to it (Buildroot" in line and "--remote-python" in line
    assert not (busybox.home / ".cache").exists(), "nothing is uploaded to a device edgepack cannot use"


# --------------------------------------------------------------------------- jump hosts, agent


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """jump (127.0.0.1, logs forwarding) -> target (127.0.0.2, no SFTP); one user key for both."""
    root = tmp_path_factory.mktemp("net")
    jump = Sshd(root / "jump", log_level="DEBUG1").start()
    target = Sshd(root / "target", listen="127.0.0.2", sftp=False).start()
    (target.root / "authorized_keys").write_text((jump.root / "id_ed25519.pub").read_text())
    yield dict(jump=jump, target=target, key=jump.user_key, known=jump.known_hosts_line() + target.known_hosts_line())
    jump.stop()
    target.stop()


def _forwarded(jump, target) -> bool:
    return f"127.0.0.2 port {target.port}" in jump.log()


@pytest.mark.slow
def test_bench_through_a_jump_host_with_the_flag(tiny_bundle, net, tmp_path):
    j, t = net["jump"], net["target"]
    home = _home(tmp_path, "", net["known"])
    remote_dir = tmp_path / "cache"
    before = j.log().count(f"127.0.0.2 port {t.port}")
    proc = _bench(
        tiny_bundle,
        f"{t.user}@127.0.0.2:{t.port}",
        home,
        remote_dir,
        "--jump",
        f"{j.user}@127.0.0.1:{j.port}",
        "--identity",
        str(net["key"]),
    )
    _ok(proc)
    assert j.log().count(f"127.0.0.2 port {t.port}") > before, "the connection went through the jump host"
    _nothing_left(remote_dir)
    # the jump host's key is checked too: unknown there -> refused before anything reaches the device
    (home / ".ssh" / "known_hosts").write_text(t.known_hosts_line())
    proc = _bench(
        tiny_bundle,
        f"{t.user}@127.0.0.2:{t.port}",
        home,
        tmp_path / "c2",
        "--jump",
        f"{j.user}@127.0.0.1:{j.port}",
        "--identity",
        str(net["key"]),
    )
    assert proc.returncode == 5 and "host key for jump host" in one_line_error(proc)
    assert not (tmp_path / "c2").exists()


@pytest.mark.slow
def test_bench_through_proxyjump_in_ssh_config(tiny_bundle, net, tmp_path):
    j, t = net["jump"], net["target"]
    cfg = tmp_path / "ssh_config"
    known = tmp_path / "known_hosts"
    known.write_text(net["known"])
    cfg.write_text(
        f"Host board\n  HostName 127.0.0.2\n  Port {t.port}\n  User {t.user}\n  ProxyJump bastion\n"
        f"  IdentityFile {net['key']}\n  UserKnownHostsFile {known}\n"
        f"Host bastion\n  HostName 127.0.0.1\n  Port {j.port}\n  IdentityFile {net['key']}\n"
    )
    remote_dir = tmp_path / "cache"
    before = j.log().count(f"127.0.0.2 port {t.port}")
    proc = _bench(tiny_bundle, "board", tmp_path / "empty-home", remote_dir, "--ssh-config", str(cfg))
    _ok(proc)
    assert j.log().count(f"127.0.0.2 port {t.port}") > before
    # --jump none ignores the config's ProxyJump: 127.0.0.2 is reached directly here (loopback)
    proc = cli(
        "doctor",
        "--device",
        "board",
        "--ssh-config",
        str(cfg),
        "--jump",
        "none",
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(remote_dir),
        "--json",
        env={"HOME": str(tmp_path / "empty-home")},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["facts"]["route"] == []
    proc = cli(
        "doctor",
        "--device",
        "board",
        "--ssh-config",
        str(cfg),
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(remote_dir),
        "--json",
        env={"HOME": str(tmp_path / "empty-home")},
    )
    assert json.loads(proc.stdout)["facts"]["route"] == [f"{j.user}@127.0.0.1:{j.port}"]


@needs_agent
@pytest.mark.slow
def test_bench_with_an_agent_key_and_no_identity_file(tiny_bundle, net, tmp_path):
    t = net["target"]
    agent = SshAgent(tmp_path / "agent").start()
    try:
        agent.add(net["key"])
        home = _home(
            tmp_path,
            f"Host dev\n  HostName 127.0.0.2\n  Port {t.port}\n  User {t.user}\n  UserKnownHostsFile KNOWN\n",
            net["known"],
        )
        assert not list((home / ".ssh").glob("id_*")), "no key file to fall back on"
        _ok(_bench(tiny_bundle, "dev", home, tmp_path / "cache", env={"SSH_AUTH_SOCK": str(agent.sock)}))
        # the same without the agent: one line naming the fix
        proc = _bench(tiny_bundle, "dev", home, tmp_path / "c2", env={"SSH_AUTH_SOCK": ""})
        assert proc.returncode == 5 and "authentication failed" in one_line_error(proc)
        assert "ssh-add" in one_line_error(proc) and "--ask-password" in one_line_error(proc)
    finally:
        agent.stop()


@pytest.mark.slow
def test_bench_through_a_proxycommand(tiny_bundle, net, tmp_path):
    j, t = net["jump"], net["target"]
    known = tmp_path / "known_hosts"
    known.write_text(net["known"])
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        f"Host board\n  HostName 127.0.0.2\n  Port {t.port}\n  User {t.user}\n"
        f"  IdentityFile {net['key']}\n  UserKnownHostsFile {known}\n"
        f"  ProxyCommand ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={known} -i {net['key']} -p {j.port} -W %h:%p {j.user}@127.0.0.1\n"
    )
    before = j.log().count(f"127.0.0.2 port {t.port}")
    proc = _bench(tiny_bundle, "board", tmp_path / "empty-home", tmp_path / "cache", "--ssh-config", str(cfg))
    _ok(proc)
    assert j.log().count(f"127.0.0.2 port {t.port}") > before


def test_ask_password_without_a_terminal_is_one_line(tiny_bundle, net, tmp_path):
    t = net["target"]
    home = _home(tmp_path, "", net["known"])
    proc = cli(
        "deploy",
        str(tiny_bundle),
        "--device",
        f"{t.user}@127.0.0.2:{t.port}",
        "--ask-password",
        "--remote-dir",
        str(tmp_path / "cache"),
        env={"HOME": str(home), "SSH_AUTH_SOCK": ""},
    )
    line = one_line_error(proc)
    assert proc.returncode == 5 and "--ask-password needs a terminal" in line, line
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_bench_through_two_jump_hosts(tiny_bundle, net, tmp_path):
    """A two-hop chain through real servers: jump -> jump again (via its own forwarding) -> target."""
    j, t = net["jump"], net["target"]
    home = _home(tmp_path, "", net["known"])
    before = j.log().count("direct-tcpip")
    hop = f"{j.user}@127.0.0.1:{j.port}"
    _ok(
        _bench(
            tiny_bundle,
            f"{t.user}@127.0.0.2:{t.port}",
            home,
            tmp_path / "cache",
            "--jump",
            f"{hop},{hop}",
            "--identity",
            str(net["key"]),
        )
    )
    assert j.log().count("direct-tcpip") >= before + 2, "two forwarded channels: one per hop"


@pytest.mark.parametrize(
    "jump,expect",
    [("u@h:99999", "bad port in jump host"), ("x;touch y", "bad jump host"), ("-oProxyCommand=sh", "bad jump host")],
)
def test_bad_jump_is_a_usage_error(tiny_bundle, tmp_path, jump, expect):
    proc = cli("bench", str(tiny_bundle), "--device", "127.0.0.1:1", "--jump", jump, env={"HOME": str(tmp_path)})
    assert proc.returncode == 2 and expect in one_line_error(proc), proc.stderr
