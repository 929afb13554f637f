"""Where a runner runs: the local machine (a subprocess) or a device reached over SSH.

Both run the very same ``device_runners/`` code and return the runner's exit code,
stdout and stderr; everything above this module is the same for both.

SSH (paramiko, connected by :mod:`edgepack.ssh_connect`): host keys are checked against known_hosts at
every hop (unknown or changed keys are refused; ``accept_new_host_key`` adds unknown ones, like OpenSSH's
``StrictHostKeyChecking=accept-new``). ``~/.ssh/config`` is honoured (HostName, User, Port, IdentityFile,
IdentitiesOnly, UserKnownHostsFile, ConnectTimeout, ProxyJump, ProxyCommand); ``jump`` is ``ssh -J``.
Files move with :mod:`edgepack.transport` (SFTP, else an exec channel), each checked by size and sha256 on
the device and renamed into a content-addressed cache (``~/.cache/edgepack/bundles/<sha256>.edgepack``), so
a re-run uploads nothing. Remote paths and arguments are quoted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import socket
import subprocess
import sys
import weakref
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Sequence

from edgepack.errors import DeviceError, UsageError

if TYPE_CHECKING:
    from edgepack.runner_session import RunnerSession
    from edgepack.transport import Transfer

REMOTE_DIR = ".cache/edgepack"
TRANSPORTS = ("auto", "sftp", "exec")
RUNNER_FILES_GLOB = "**/*.py"  # the runtime modules and the runner_common/ package


@dataclass
class SSHOptions:
    accept_new_host_key: bool = False
    identity: Optional[Path] = None
    known_hosts: Optional[Path] = None
    ssh_config: Optional[Path] = None
    connect_timeout: float = 10.0
    remote_python: str = "python3"
    remote_dir: str = REMOTE_DIR
    run_timeout: Optional[float] = None
    jump: Optional[str] = None  # ProxyJump chain: [user@]host[:port][,...] ("none": ignore the config's)
    ask_password: bool = False  # password authentication (prompted on a terminal) after the keys
    transport: Optional[str] = None  # "auto" (None) | "sftp" | "exec"


def check_options(options: "SSHOptions") -> None:
    """Refuse option values paramiko would turn into a traceback."""
    import math

    t = options.connect_timeout
    if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise UsageError(f"--connect-timeout {t} is not a positive number of seconds", "use e.g. --connect-timeout 10")
    rt = options.run_timeout
    if rt is not None and (not math.isfinite(rt) or rt < 0):
        raise UsageError(f"--timeout {rt} is not a number of seconds >= 0", "use e.g. --timeout 600 (0 = no limit)")
    if options.identity is not None:
        check_identity(Path(options.identity))
    if options.transport is not None and options.transport not in TRANSPORTS:
        raise UsageError(
            f"--transport {options.transport!r} is not one of {', '.join(TRANSPORTS)}",
            "use --transport auto (SFTP when offered, else exec), sftp or exec",
        )
    if options.jump is not None:
        from edgepack.ssh_connect import parse_jump, validate_host, validate_user

        for hop in parse_jump(options.jump):  # a bad --jump is a usage error before anything connects
            validate_host(hop.host, "jump host")
            if hop.user is not None:
                validate_user(hop.user)


_PUBLIC_KEY_PREFIXES = (b"ssh-", b"ecdsa-", b"sk-ssh-", b"sk-ecdsa-", b"---- BEGIN SSH2 PUBLIC KEY")


def check_identity(path: Path) -> None:
    """An --identity that cannot be a private key is a usage error, not an SSH failure."""
    if not path.is_file():
        raise UsageError(
            f"identity file {path} does not exist", "pass the private key file (e.g. ~/.ssh/id_ed25519) to --identity"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise UsageError(f"identity file {path} cannot be read ({e.strerror or e})", "check its permissions")
    if head.lstrip().startswith(_PUBLIC_KEY_PREFIXES) or path.suffix == ".pub":
        private = path.with_suffix("") if path.suffix == ".pub" else "the private key"
        raise UsageError(f"identity file {path} is a public key", f"pass the private key ({private}) to --identity")
    if b"PRIVATE KEY-----" not in head and not head.startswith(b"PuTTY-User-Key-File"):
        raise UsageError(
            f"identity file {path} is not an SSH private key (no PEM/OpenSSH private key header)",
            "pass the private key file (e.g. ~/.ssh/id_ed25519) to --identity",
        )


@dataclass
class Execution:
    code: int
    stdout: str
    stderr: str


LineCallback = Callable[[str], None]


def _relay(callback: Optional[LineCallback], raw: bytes) -> None:
    """Hand one stderr line to ``callback``; a failing callback never stops the reading."""
    if callback is None:
        return
    try:
        callback(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except Exception:  # progress display only
        pass


def runner_dir() -> Path:
    return Path(str(resources.files("edgepack.device_runners")))


def runner_files() -> list[Path]:
    """Every file of the runner folder (absolute paths, subfolders included); ship each at runner_path(p)."""
    return sorted(p for p in runner_dir().glob(RUNNER_FILES_GLOB) if p.is_file())


def runner_path(p: Path) -> str:
    """A runner file's path relative to the runner folder, with / (``runner_common/bundle.py``)."""
    return p.relative_to(runner_dir()).as_posix()


def runner_digest() -> str:
    h = hashlib.sha256()
    for p in runner_files():
        h.update(runner_path(p).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- specs

_SPEC_RE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")
# What a host name, ssh_config alias or user may hold. OpenSSH refuses shell metacharacters in host and user
# names (ssh.c valid_hostname/valid_ruser) because ssh_config tokens such as %h and %r are substituted unquoted
# into Match exec / ProxyCommand / LocalCommand lines; edgepack allows less still: no quoting ever needed.
_HOST_OK = re.compile(r"^(?!-)[A-Za-z0-9_.-]+$")
_IPV6_OK = re.compile(r"^\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\]$")
_USER_OK = re.compile(r"^(?!-)[A-Za-z0-9_.+-]+$")


def host_ok(host: str) -> bool:
    """The one host-name check (``--device``, ``--jump``, ssh_config HostName/ProxyJump, ProxyCommand %h): a
    name or alias of letters, digits, '.', '-', '_', or an IPv6 address (bracketed or not)."""
    return bool(host) and bool(_HOST_OK.match(host) or _IPV6_OK.match(host if host.startswith("[") else f"[{host}]"))


def user_ok(user: str) -> bool:
    return bool(user) and bool(_USER_OK.match(user))


@dataclass
class DeviceSpec:
    """One device: parsed from ``--device`` (``text`` is what was typed) or read from an inventory
    (:mod:`edgepack.inventory`: ``text`` is the inventory name, and the per-device settings below win over the
    command line's, which fill what the inventory leaves unset)."""

    text: str
    local: bool
    user: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    identity: Optional[Path] = None
    python: Optional[str] = None
    remote_dir: Optional[str] = None
    groups: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.text

    def options(self, base: "SSHOptions") -> "SSHOptions":
        """``base`` with this device's own identity, Python and remote directory."""
        return replace(
            base,
            identity=self.identity or base.identity,
            remote_python=self.python or base.remote_python,
            remote_dir=self.remote_dir or base.remote_dir,
        )


def parse_device(text: str) -> DeviceSpec:
    text = (text or "local").strip()
    if text == "local":
        return DeviceSpec(text=text, local=True)
    m = _SPEC_RE.match(text)
    if not m:
        raise UsageError(f"bad --device {text!r}", "use local, [user@]host[:port], or a Host alias from ~/.ssh/config")
    if not host_ok(m["host"]):
        raise UsageError(
            f"bad host name in --device {text!r}: only letters, digits, '.', '-' and '_' (or a "
            "[bracketed] IPv6 address) are allowed, as a host name or ssh_config alias",
            "use local, [user@]host[:port], or a Host alias from ~/.ssh/config",
        )
    if m["user"] is not None and not user_ok(m["user"]):
        raise UsageError(
            f"bad user name in --device {text!r}: only letters, digits, '.', '-', '_' and '+' are allowed",
            "use local, [user@]host[:port], or a Host alias from ~/.ssh/config",
        )
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"bad port in --device {text!r}", "ports are 1-65535")
    return DeviceSpec(text=text, local=False, user=m["user"], host=m["host"].strip("[]"), port=port)


# --------------------------------------------------------------------------- local


class LocalDevice:
    """This machine: the runner runs in a subprocess with this Python."""

    name = "local"

    def __init__(self, python: Optional[str] = None, run_timeout: Optional[float] = None):
        self.python = python or sys.executable
        self.run_timeout = run_timeout
        self._proc: Optional[subprocess.Popen[bytes]] = None

    def put_bundle(self, path: Path, sha256: str) -> tuple[str, bool]:
        return str(Path(path).resolve()), False

    def put_runners(self) -> str:
        return str(runner_dir())

    def workdir(self) -> Optional[str]:
        return None

    def run(self, argv: list[str], on_stderr_line: Optional[LineCallback] = None) -> Execution:
        """Run the runner with stdin a pipe we hold open (a runner given --watch-stdin stops when it closes);
        on a timeout or an interrupt, SIGTERM it (it cleans up), then SIGKILL it. ``on_stderr_line`` sees each
        stderr line as it arrives (progress)."""
        import threading

        proc = subprocess.Popen(
            [self.python, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._proc = proc
        chunks: dict[str, bytes] = {}

        def read_err(f: Any) -> None:
            got = []
            for raw in iter(f.readline, b""):
                got.append(raw)
                _relay(on_stderr_line, raw)
            chunks["err"] = b"".join(got)

        readers = [
            threading.Thread(target=lambda f=proc.stdout: chunks.__setitem__("out", f.read()), daemon=True),
            threading.Thread(
                target=(lambda f=proc.stderr: read_err(f))
                if on_stderr_line
                else (lambda f=proc.stderr: chunks.__setitem__("err", f.read())),
                daemon=True,
            ),
        ]
        for t in readers:
            t.start()
        try:
            proc.wait(timeout=self.run_timeout or None)  # not communicate(): it would close the runner's stdin
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise DeviceError(
                f"the runner did not finish within {self.run_timeout:g}s",
                "raise --timeout or lower --runs/--min-seconds/--repeat",
            )
        except BaseException:
            _stop(proc)
            raise
        finally:
            self._proc = None
            for t in readers:
                t.join(timeout=10)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    if f is not None:
                        f.close()
                except OSError:
                    pass
        return Execution(
            proc.returncode,
            chunks.get("out", b"").decode("utf-8", "replace"),
            chunks.get("err", b"").decode("utf-8", "replace"),
        )

    def start(self, argv: list[str]) -> "RunnerSession":
        """The runner kept running, for requests (``--serve``; :mod:`edgepack.runner_session`)."""
        from edgepack.runner_session import LocalSession

        return LocalSession(self.python, argv)

    def machine(self) -> str:
        import platform

        return platform.machine()

    def venv_python(self) -> Optional[str]:
        return None

    def install_runtime(self, steps: Sequence[Sequence[str]]) -> str:
        raise UsageError(
            "--install-runtime is for SSH devices", f"install the runtime here with: {pip_commands('pip', steps)}"
        )

    def close(self) -> None:
        proc = self._proc  # a runner still running: close() came from another thread (an interrupted fleet run)
        if proc is not None and proc.poll() is None:
            _stop(proc)


def _stop(proc: "subprocess.Popen[bytes]", grace: float = 10.0) -> None:
    """SIGTERM (the runner cleans up its extraction dir), then SIGKILL after ``grace`` seconds."""
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


# --------------------------------------------------------------------------- ssh


class _AcceptNewPolicy:
    """Add an unknown host key to the known_hosts file (OpenSSH's accept-new); changed keys still fail."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class SSHDevice:
    """A device reached over SSH with paramiko (through jump hosts or a ProxyCommand when asked), files moved
    by :mod:`edgepack.transport` (SFTP, else an exec channel)."""

    def __init__(self, spec: DeviceSpec, options: SSHOptions):
        import logging

        import paramiko

        from edgepack import ssh_connect

        check_options(options)
        # paramiko's transport thread logs a traceback for a non-SSH peer, which Python's last-resort handler
        # prints when no logging is configured; the error below says it in one line. (A handler set up by an
        # API user still gets paramiko's records.)
        log = logging.getLogger("paramiko")
        if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
            log.addHandler(logging.NullHandler())
        self.spec = spec
        self.options = options
        self.name = spec.text
        host = spec.host or ""
        cfg_path = options.ssh_config or Path.home() / ".ssh" / "config"
        config = None
        cfg: dict[str, Any] = {}
        if cfg_path.is_file():
            config = paramiko.SSHConfig.from_path(str(cfg_path))
            cfg = dict(config.lookup(host))
        self.hostname: str = cfg.get("hostname", host)
        self.port: int = spec.port or int(cfg.get("port", 22))
        self.user: str = spec.user or cfg.get("user") or _local_user()
        timeout = float(cfg.get("connecttimeout", options.connect_timeout))
        if not timeout > 0:
            raise UsageError(
                f"ConnectTimeout {timeout:g} in {cfg_path} is not a positive number of seconds",
                "fix ConnectTimeout there",
            )
        keys = (
            [str(options.identity)]
            if options.identity
            else [os.path.expanduser(p) for p in cfg.get("identityfile", [])]
        )
        for k in keys:  # like OpenSSH, a missing IdentityFile from ssh_config is skipped; a wrong one is an error
            if os.path.exists(k):
                check_identity(Path(k))
        known = options.known_hosts
        if known is None and cfg.get("userknownhostsfile"):
            known = Path(os.path.expanduser(cfg["userknownhostsfile"].split()[0]))
        known = known or Path.home() / ".ssh" / "known_hosts"
        self.known_hosts = known
        policy = _AcceptNewPolicy(known) if options.accept_new_host_key else paramiko.RejectPolicy()
        copts = ssh_connect.ConnectOptions(
            policy=policy,
            known_hosts=known,
            lookup=cfg,
            config=config,
            alias=host,
            jump=options.jump,
            identity_files=[str(options.identity)] if options.identity else [],
            ask_password=options.ask_password,
            timeout=timeout,
        )
        self.client = ssh_connect.connect(self.hostname, self.port, self.user, copts)
        self.route: list[str] = list(getattr(self.client, "route", []))
        self._transfer: Optional[Transfer] = None
        self._shell_facts: Optional[dict[str, str]] = None
        self._python_checked = False
        self.python = options.remote_python

    # -- primitives

    def transfer(self) -> "Transfer":
        """The file mover for this connection (SFTP, else exec; ``--transport`` chooses), opened once."""
        if self._transfer is None:
            from edgepack.transport import open_transfer
            from edgepack.ui import note, safe

            prefer = None if self.options.transport in (None, "auto") else self.options.transport
            self._transfer = open_transfer(
                self.client,
                name=self.name,
                python=self.python,
                prefer=prefer,
                timeout=max(self.options.connect_timeout, 120.0),
                warn=lambda text: note(safe(f"edgepack: note: {text}")),
            )
        return self._transfer

    def exec(
        self,
        command: str,
        timeout: Optional[float] = None,
        keep_stdin: bool = False,
        on_stderr_line: Optional[LineCallback] = None,
    ) -> Execution:
        """Run ``command``; ``keep_stdin`` holds the remote stdin open until the command ends (a runner with
        --watch-stdin stops when it closes); ``on_stderr_line`` sees each stderr line as it arrives. The channel
        is closed on every way out, interrupts included."""
        import threading

        import paramiko

        channel = None
        try:
            stdin, stdout, stderr = self.client.exec_command(command, timeout=timeout)
            channel = stdout.channel
            if not keep_stdin:
                stdin.close()
            if on_stderr_line is None:
                out = stdout.read().decode("utf-8", "replace")
                err = stderr.read().decode("utf-8", "replace")
            else:  # stderr line by line beside stdout (paramiko buffers the two streams apart)
                lines: list[bytes] = []
                failed: list[BaseException] = []

                def read_err() -> None:
                    try:
                        while True:
                            raw = stderr.readline()  # str (paramiko's text mode) or bytes
                            if not raw:
                                break
                            data = raw.encode("utf-8") if isinstance(raw, str) else raw
                            lines.append(data)
                            _relay(on_stderr_line, data)
                    except BaseException as e:  # handed to the main thread
                        failed.append(e)

                reader = threading.Thread(target=read_err, name="edgepack-stderr", daemon=True)
                reader.start()
                out = stdout.read().decode("utf-8", "replace")
                reader.join(timeout if timeout else None)
                if failed:
                    raise failed[0]
                err = b"".join(lines).decode("utf-8", "replace")
            code = stdout.channel.recv_exit_status()
        except socket.timeout:
            raise DeviceError(
                f"the command on {self.name} did not finish within {timeout:g}s",
                "raise --timeout or lower --runs/--min-seconds/--repeat",
            )
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise DeviceError(
                f"connection to {self.name} lost while running a command ({e or type(e).__name__})",
                "check the device, then run the command again",
            )
        finally:
            if channel is not None:
                channel.close()  # closes the remote stdin: a --watch-stdin runner stops and cleans up
        if code == -1:
            raise DeviceError(
                f"connection to {self.name} lost while running the runner (no exit status)",
                "check the device (power, sshd, memory), then run the command again",
            )
        return Execution(code, out, err)

    def _sh(self, command: str) -> Execution:
        res = self.exec(command)
        if res.code != 0:
            raise DeviceError(
                f"command on {self.name} failed ({res.code}): {command}: {(res.stderr or res.stdout).strip()[-300:]}",
                "check disk space and permissions",
            )
        return res

    def _exists(self, path: str) -> Optional[int]:
        return self.transfer().stat_size(path)

    # -- device interface

    def put_bundle(self, path: Path, sha256: str) -> tuple[str, bool]:
        base = self.options.remote_dir
        remote = f"{base}/bundles/{sha256}.edgepack"
        t = self.transfer()
        if t.stat_size(remote) == Path(path).stat().st_size:
            if t.remote_sha256(remote) == sha256:
                return remote, False
            # a damaged cached copy (disk error, edited by hand): replace it
        t.mkdirs(f"{base}/bundles")
        t.put(Path(path), remote, sha256)
        return remote, True

    def remote_sha256(self, remote: str) -> Optional[str]:
        """sha256 of a file on the device (hashed there; read back over SFTP when it has no sha256 tool)."""
        return self.transfer().remote_sha256(remote)

    def shell_facts(self) -> dict[str, str]:
        """What a POSIX sh (dash, BusyBox ash) on the device tells without Python: arch, shell, the Python at
        ``self.python`` and its version, the package manager. One command, cached."""
        if self._shell_facts is None:
            script = (
                f"py={shlex.quote(self.python)}\n"
                'echo "arch=$(uname -m 2>/dev/null)"\n'
                's=$(readlink -f /bin/sh 2>/dev/null); case "$s" in *busybox*) echo shell=busybox;; '
                '*) echo "shell=${s:-sh}";; esac\n'
                'p=$(command -v "$py" 2>/dev/null); echo "python=$p"\n'
                'if [ -n "$p" ]; then echo "pyver=$("$py" -c \'import sys; print("%d.%d" % '
                "sys.version_info[:2])' 2>/dev/null)\"; fi\n"
                "for m in apt-get apk opkg dnf yum; do if command -v $m >/dev/null 2>&1; then "
                "echo pkg=$m; break; fi; done\n"
            )
            code, out, err = self.transfer().run(script, what="looking at the device's shell and Python")
            self._shell_facts = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        return self._shell_facts

    def check_python(self) -> None:
        """A device without the Python edgepack runs its runner with is one line naming the install command."""
        if self._python_checked:
            return
        f = self.shell_facts()
        if not f.get("python"):
            what = " (a BusyBox system)" if f.get("shell") == "busybox" else ""
            raise DeviceError(
                f"no Python at {self.python!r} on {self.name}{what}: the runner needs Python 3.9+",
                f"{install_python_hint(f.get('pkg'))}, or pass --remote-python PATH",
            )
        self._python_checked = True

    def put_runners(self) -> str:
        from edgepack.transport import put_dir

        self.check_python()  # before anything is uploaded

        base = self.options.remote_dir
        digest = runner_digest()
        remote = f"{base}/runners/{digest}"
        t = self.transfer()
        if t.stat_size(remote + "/.complete") is not None:
            return remote
        t.mkdirs(f"{base}/runners")
        put_dir(t, runner_files(), remote, marker_text=digest, name=runner_path)
        if t.stat_size(remote + "/.complete") is None:
            raise DeviceError(f"could not install the runner on {self.name}", "check disk space and permissions")
        return remote

    def workdir(self) -> Optional[str]:
        work = f"{self.options.remote_dir}/work"
        self._sh(f"mkdir -p {shlex.quote(work)}")
        return work

    def run(self, argv: list[str], on_stderr_line: Optional[LineCallback] = None) -> Execution:
        # Run under sh without exec so a runner killed by a signal comes back as exit status 128+N
        # (paramiko drops SSH "exit-signal" messages, which would look like a lost connection).
        inner = " ".join(shlex.quote(a) for a in [self.python, *argv]) + "; exit $?"
        return self.exec(
            f"sh -c {shlex.quote(inner)}",
            timeout=self.options.run_timeout or None,
            keep_stdin=True,
            on_stderr_line=on_stderr_line,
        )

    def start(self, argv: list[str]) -> "RunnerSession":
        """The runner kept running, for requests (``--serve``; :mod:`edgepack.runner_session`)."""
        from edgepack.runner_session import SSHSession

        return SSHSession(self.client, self.name, self.python, argv)

    def machine(self) -> str:
        """The device's ``uname -m`` (what wheels it takes)."""
        return self.shell_facts().get("arch") or ""

    def venv_python(self) -> Optional[str]:
        """The Python of the runtime venv edgepack made on this device earlier, if there is one."""
        py = f"{self.options.remote_dir}/venv/bin/python"
        return py if self._exists(py) is not None else None

    def install_runtime(self, steps: Sequence[Sequence[str]]) -> str:
        """Create (once) a venv in the device's edgepack cache, run ``pip install`` there with each argument list
        of ``steps`` in turn, and use it. pip's temporary files go to the cache too (``TMPDIR``), so a noexec /tmp
        does not matter."""
        venv = f"{self.options.remote_dir}/venv"
        py = f"{venv}/bin/python"
        f = self.shell_facts()
        pyver, arch = f.get("pyver") or "3", f.get("arch") or "?"
        if self._exists(py) is None:
            res = self.exec(f"{shlex.quote(self.options.remote_python)} -m venv {shlex.quote(venv)}")
            if res.code != 0:
                self.exec(f"rm -rf {shlex.quote(venv)}")
                raise DeviceError(
                    f"could not create a venv with {self.options.remote_python} (Python {pyver}) on "
                    f"{self.name}: {_last_line(res.stderr or res.stdout)}",
                    install_venv_hint(f.get("pkg"), pyver),
                )
        tmp = f"{self.options.remote_dir}/tmp"
        pip = f"TMPDIR={shlex.quote(tmp)} {shlex.quote(py)} -m pip install -q --disable-pip-version-check"
        res = self.exec(
            f"mkdir -p {shlex.quote(tmp)} && {{ {pip_commands(pip, steps)}; }}"
            + f"; c=$?; rm -rf {shlex.quote(tmp)}; exit $c",
            timeout=1800,
        )
        if res.code != 0:
            packages = [a for s in steps for a in s if not a.startswith("-") and "://" not in a]
            raise DeviceError(
                f"pip install {' '.join(packages)} failed on {self.name} ({arch}, Python {pyver}): "
                f"{_last_line(res.stderr or res.stdout)}",
                f"check the device reaches its package index (run {pip_commands(py + ' -m pip install', steps)} "
                f"there to see why) and that it has {' and '.join(packages)} wheels for {arch} with Python {pyver}",
            )
        self.python = py
        return py

    def close(self) -> None:
        try:
            if self._transfer is not None:
                self._transfer.close()
        finally:
            self.client.close()


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else "no output"


def install_python_hint(pkg: Optional[str]) -> str:
    """The command that installs Python 3 with the package manager the device has."""
    return {
        "apt-get": "install it: sudo apt-get install python3 python3-venv",
        "apk": "install it: apk add python3 py3-pip",
        "opkg": "install it: opkg update && opkg install python3 python3-pip",
        "dnf": "install it: sudo dnf install python3",
        "yum": "install it: sudo yum install python3",
    }.get(
        pkg or "",
        "the image has no package manager: add Python 3 to it (Buildroot: BR2_PACKAGE_PYTHON3=y; "
        'Yocto: IMAGE_INSTALL:append = " python3 python3-pip")',
    )


def install_venv_hint(pkg: Optional[str], pyver: str) -> str:
    if pkg == "apt-get":
        return f"install the venv module: sudo apt-get install python{pyver}-venv"
    if pkg == "apk":
        return "install pip and venv: apk add py3-pip py3-virtualenv"
    return (
        f"install Python {pyver}'s venv and ensurepip modules on the device, or pass --remote-python with a "
        "Python that has numpy and the runtime"
    )


def _local_user() -> str:
    import getpass

    return getpass.getuser()


class Device(Protocol):
    """What bench, deploy and doctor use of a device (LocalDevice and SSHDevice)."""

    name: str
    python: Any  # the device's Python (str); bench sets it to venv_python()'s result after checking it

    def put_bundle(self, path: Path, sha256: str) -> tuple[str, bool]: ...
    def put_runners(self) -> str: ...
    def workdir(self) -> Optional[str]: ...
    def run(self, argv: list[str], on_stderr_line: Optional[LineCallback] = None) -> Execution: ...
    def start(self, argv: list[str]) -> "RunnerSession": ...
    def machine(self) -> str: ...
    def venv_python(self) -> Optional[str]: ...
    def install_runtime(self, steps: Sequence[Sequence[str]]) -> str: ...
    def close(self) -> None: ...


def pip_commands(pip: str, steps: Sequence[Sequence[str]]) -> str:
    """``pip`` run with each argument list of ``steps`` in turn, as one sh command (arguments quoted)."""
    return " && ".join(f"{pip} {' '.join(shlex.quote(a) for a in step)}" for step in steps)


def as_spec(device: "str | DeviceSpec") -> DeviceSpec:
    return device if isinstance(device, DeviceSpec) else parse_device(device)


_live: "weakref.WeakSet[Any]" = weakref.WeakSet()


def open_device(device: "str | DeviceSpec", options: Optional[SSHOptions] = None) -> Device:
    """Connect to ``device`` (a ``--device`` text or a DeviceSpec, whose own settings apply over ``options``)."""
    spec = as_spec(device)
    options = spec.options(options or SSHOptions())
    dev: Device
    if spec.local:
        dev = LocalDevice(python=spec.python, run_timeout=options.run_timeout)
        dev.name = spec.name  # "local", or the inventory's name for this machine
    else:
        dev = SSHDevice(spec, options)
    _live.add(dev)
    return dev


def close_all() -> None:
    """Close every device still open (from the main thread, when a fleet run is interrupted: each worker's
    runner stops as its connection or process goes, and the worker finishes with an error)."""
    for dev in list(_live):
        try:
            dev.close()
        except Exception:
            pass
