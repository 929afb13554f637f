"""A real OpenSSH server on 127.0.0.1 for the tests: generated host and user keys, a free port,
started and stopped by the fixture (never left running)."""

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgepack-test", "-f", str(path)],
                   check=True)
    return path


class Sshd:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(root / "host_ed25519")
        self.user_key = keygen(root / "id_ed25519")
        self.other_key = keygen(root / "id_other")
        (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
        self.port = free_port()
        self.user = _user()
        self.config = root / "sshd_config"
        self.config.write_text(f"""
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        self.proc = None

    def known_hosts_line(self) -> str:
        kind, b64 = (self.root / "host_ed25519.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}\n"

    def start(self) -> "Sshd":
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "wb"))
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not start listening")

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
            if (fragment in cmd and "-m edgepack" not in cmd and "-m pytest" not in cmd
                    and not cmd.startswith(("sh ", "bash ", "/bin/sh "))):
                return int(d.name)
    return None
