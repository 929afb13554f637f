"""Real SSH servers on loopback for the tests: generated host and user keys, a free port, started and
stopped by the fixture (never left running).

- ``Sshd``: OpenSSH; ``sftp=False`` drops the ``Subsystem sftp`` line (a server that refuses SFTP),
  ``listen`` picks the loopback address (127.0.0.2 for a host behind a jump host).
- ``Dropbear``: Debian's dropbear (no SFTP, /bin/sh = dash); ``busybox=True`` gives its sessions a
  BusyBox-only /usr/bin (BusyBox ash, no python3) in a private mount namespace.
- ``SshAgent``: an ssh-agent on its own socket holding the keys the test adds."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def why_unavailable() -> str | None:
    if not Path(SSHD).exists():
        return "openssh-server is not installed (apt-get install openssh-server)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    if os.geteuid() != 0:
        return "sshd needs root here (privilege separation); run the SSH tests as root, as CI does"
    return None


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "edgepack-test", "-f", str(path)], check=True
    )
    return path


def _wait_for_banner(proc: subprocess.Popen, address: str, port: int, log: Path, what: str) -> None:
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()}")
        try:
            with socket.create_connection((address, port), timeout=0.5) as s:
                if s.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start listening")


def _host_key_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class Sshd:
    def __init__(
        self,
        root: Path,
        sftp: bool = True,
        listen: str = "127.0.0.1",
        log_level: str = "ERROR",
        tcp_forwarding: bool = True,
    ):
        self.root = root
        self.address = listen
        root.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(root / "host_ed25519")
        self.user_key = keygen(root / "id_ed25519")
        self.other_key = keygen(root / "id_other")
        (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
        self.port = free_port(listen)
        self.user = _user()
        subsystem = "Subsystem sftp internal-sftp" if sftp else "# no Subsystem line: SFTP is refused"
        self.config = root / "sshd_config"
        self.config.write_text(f"""
Port {self.port}
ListenAddress {listen}
HostKey {self.host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding {"yes" if tcp_forwarding else "no"}
{subsystem}
LogLevel {log_level}
""")
        self.proc = None

    def known_hosts_line(self) -> str:
        kind, b64 = (self.root / "host_ed25519.pub").read_text().split()[:2]
        return f"{_host_key_name(self.address, self.port)} {kind} {b64}\n"

    def log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")

    def start(self) -> "Sshd":
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "sshd.log", "wb"),
        )
        _wait_for_banner(self.proc, self.address, self.port, self.root / "sshd.log", "sshd")
        return self

    def kill_all(self) -> None:
        """SIGKILL the listening sshd and every session below it (a device that vanishes)."""
        if self.proc and self.proc.poll() is None:
            for pid in [self.proc.pid, *descendants(self.proc.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _user() -> str:
    import getpass

    return getpass.getuser()


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def find_process(fragment: str) -> int | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if (
                fragment in cmd
                and "-m edgepack" not in cmd
                and "-m pytest" not in cmd
                and not cmd.startswith(("sh ", "bash ", "/bin/sh "))
            ):
                return int(d.name)
    return None


# --------------------------------------------------------------------------- dropbear

DROPBEAR = shutil.which("dropbear") or "/usr/sbin/dropbear"
BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"


def dropbear_unavailable(busybox: bool = False) -> str | None:
    if not Path(DROPBEAR).exists() or not shutil.which("dropbearkey"):
        return "dropbear is not installed (apt-get install dropbear-bin)"
    if busybox and not Path(BUSYBOX).exists():
        return "busybox is not installed (apt-get install busybox)"
    if os.geteuid() != 0:
        return "the dropbear fixture needs root (a private mount namespace for its passwd and /usr/bin)"
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        return "unshare -m is not permitted here (the dropbear fixture needs a private mount namespace)"
    return None


class Dropbear:
    """Debian's dropbear on 127.0.0.1, as on Buildroot/Yocto/OpenWrt images: no SFTP (dropbear has none of
    its own; the OpenSSH sftp-server it would exec is replaced by a non-executable file unless ``sftp=True``),
    sessions run the login shell /bin/sh (dash).

    The server runs in a private mount namespace (``unshare -m``) where a copy of /etc/passwd gives the
    current user a home in the fixture directory, so its ``.ssh/authorized_keys`` is the fixture's and no
    file outside the fixture is touched. With ``busybox=True`` /usr/bin (= /bin) is replaced there by a
    directory of BusyBox applets: BusyBox ash as /bin/sh, BusyBox cat/wc/sha256sum/mv..., and no python3
    (``without`` leaves applets out, e.g. sha256sum). In the namespace ``readonly_dir`` is a read-only bind
    mount, ``full_dir`` a 64 KiB tmpfs and ``noexec_dir`` a noexec tmpfs; all vanish with the server.
    """

    def __init__(self, root: Path, busybox: bool = False, sftp: bool = False, without: tuple[str, ...] = ()):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.sftp = sftp
        # seen only by the server's sessions: a read-only directory and a 64 KiB filesystem (a full disk)
        self.readonly_dir = root / "readonly"
        self.full_dir = root / "full"
        self.noexec_dir = root / "noexec"
        self.readonly_dir.mkdir()
        self.full_dir.mkdir()
        self.noexec_dir.mkdir()
        root.mkdir(parents=True, exist_ok=True)
        self.address = "127.0.0.1"
        self.host_key = root / "dropbear_ed25519"
        subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(self.host_key)], check=True, capture_output=True)
        pub = subprocess.run(
            ["dropbearkey", "-y", "-f", str(self.host_key)], check=True, capture_output=True, text=True
        ).stdout
        self.host_pub = next(ln for ln in pub.splitlines() if ln.startswith("ssh-")).split()[:2]
        self.user = _user()
        self.home = root / "home"
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        self.user_key = keygen(root / "id_ed25519")
        (self.home / ".ssh" / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
        self.port = free_port()
        self.busybox = busybox
        import pwd

        me = pwd.getpwuid(os.getuid())
        lines = []
        for ln in Path("/etc/passwd").read_text().splitlines():
            f = ln.split(":")
            if f and f[0] == me.pw_name:
                f[5], f[6] = str(self.home), "/bin/sh"
            lines.append(":".join(f))
        (root / "passwd").write_text("\n".join(lines) + "\n")
        self.bin = root / "busybox-bin"
        if busybox:
            self.bin.mkdir()
            shutil.copy2(BUSYBOX, self.bin / "busybox")
            applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
            for a in applets:
                if a != "busybox" and "/" not in a and a not in without:
                    (self.bin / a).symlink_to("busybox")
        self.proc = None

    def known_hosts_line(self) -> str:
        return f"{_host_key_name(self.address, self.port)} {self.host_pub[0]} {self.host_pub[1]}\n"

    def log(self) -> str:
        return (self.root / "dropbear.log").read_text(errors="replace")

    def start(self) -> "Dropbear":
        import shlex

        ro, full = shlex.quote(str(self.readonly_dir)), shlex.quote(str(self.full_dir))
        mounts = [
            f"mount --bind {shlex.quote(str(self.root / 'passwd'))} /etc/passwd",
            f"mount --bind {ro} {ro}",
            f"mount -o remount,ro,bind {ro}",
            f"mount -t tmpfs -o size=64k edgepack-full {full}",
            f"mount -t tmpfs -o size=8m,noexec edgepack-noexec {shlex.quote(str(self.noexec_dir))}",
        ]
        server = Path("/usr/lib/sftp-server")
        if not self.sftp and server.exists():  # Debian's openssh-sftp-server would give dropbear SFTP
            (self.root / "no-sftp-server").write_text("")
            mounts.append(
                f"mount --bind {shlex.quote(str(self.root / 'no-sftp-server'))} {shlex.quote(str(server.resolve()))}"
            )
        if self.busybox:
            mounts.append(f"mount --bind {shlex.quote(str(self.bin))} /usr/bin")
        script = (
            " && ".join(mounts)
            + " && exec "
            + " ".join(
                shlex.quote(a)
                for a in [
                    DROPBEAR,
                    "-F",
                    "-E",
                    "-s",
                    "-m",
                    "-r",
                    str(self.host_key),
                    "-p",
                    f"{self.address}:{self.port}",
                    "-P",
                    str(self.root / "dropbear.pid"),
                ]
            )
        )
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "dropbear.log", "wb"),
        )
        _wait_for_banner(self.proc, self.address, self.port, self.root / "dropbear.log", "dropbear")
        return self

    def stop(self) -> None:
        """SIGTERM the listener and its sessions (dropbear's session processes outlive a SIGTERMed listener)."""
        if self.proc and self.proc.poll() is None:
            for pid in [*descendants(self.proc.pid), self.proc.pid]:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    kill_all = Sshd.kill_all


# --------------------------------------------------------------------------- ssh-agent


def agent_unavailable() -> str | None:
    if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
        return "ssh-agent is not installed (apt-get install openssh-client)"
    return None


class SshAgent:
    """An ssh-agent in the foreground on its own socket (``SSH_AUTH_SOCK=agent.sock``); ``add`` loads a key."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.sock = root / "agent.sock"
        self.proc = None

    def start(self) -> "SshAgent":
        self.proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(self.sock)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "agent.log", "wb"),
        )
        deadline = time.time() + 10
        while not self.sock.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ssh-agent did not start: {(self.root / 'agent.log').read_text()}")
            time.sleep(0.05)
        return self

    def env(self) -> dict:
        return {**os.environ, "SSH_AUTH_SOCK": str(self.sock)}

    def add(self, key: Path) -> None:
        subprocess.run(
            ["ssh-add", "-q", str(key)], env=self.env(), check=True, capture_output=True, stdin=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def bench_process(bundle, home, remote_dir, seconds: str, *extra: str) -> "subprocess.Popen[str]":
    """``edgepack bench`` of ``bundle`` on the ``dev`` host of ``home``'s ssh config, running for ``seconds``
    (one long timing window), started in the background for a test to interrupt, kill or cut off."""
    import os
    import sys

    argv = [
        sys.executable,
        "-m",
        "edgepack",
        "-q",
        "bench",
        str(bundle),
        "--device",
        "dev",
        "--runs",
        "1",
        "--min-seconds",
        seconds,
        "--max-runs",
        "100000000",
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(remote_dir),
        *extra,
    ]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HOME": str(home)}
    )
