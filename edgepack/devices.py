"""Where a runner runs: the local machine (a subprocess) or a device reached over SSH.

Both run the very same ``device_runners/`` code and return the runner's exit code,
stdout and stderr; everything above this module is the same for both.

SSH (paramiko): host keys are checked against known_hosts by default (unknown or
changed keys are refused; ``accept_new_host_key`` adds unknown ones, like OpenSSH's
``StrictHostKeyChecking=accept-new``). ``~/.ssh/config`` is honoured (HostName, User,
Port, IdentityFile, UserKnownHostsFile, ConnectTimeout). Remote paths and arguments
are quoted. Uploads go to a temp name and are renamed into a content-addressed cache
(``~/.cache/edgepack/bundles/<sha256>.edgepack``), so a re-run uploads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import secrets
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

from edgepack.errors import DeviceError, UsageError

REMOTE_DIR = ".cache/edgepack"
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


_PUBLIC_KEY_PREFIXES = (b"ssh-", b"ecdsa-", b"sk-ssh-", b"sk-ecdsa-", b"---- BEGIN SSH2 PUBLIC KEY")


def check_identity(path: Path) -> None:
    """An --identity that cannot be a private key is a usage error, not an SSH failure."""
    if not path.is_file():
        raise UsageError(f"identity file {path} does not exist", "pass the private key file (e.g. ~/.ssh/id_ed25519) "
                                                                  "to --identity")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise UsageError(f"identity file {path} cannot be read ({e.strerror or e})", "check its permissions")
    if head.lstrip().startswith(_PUBLIC_KEY_PREFIXES) or path.suffix == ".pub":
        private = path.with_suffix("") if path.suffix == ".pub" else "the private key"
        raise UsageError(f"identity file {path} is a public key", f"pass the private key ({private}) to --identity")
    if b"PRIVATE KEY-----" not in head and not head.startswith(b"PuTTY-User-Key-File"):
        raise UsageError(f"identity file {path} is not an SSH private key (no PEM/OpenSSH private key header)",
                         "pass the private key file (e.g. ~/.ssh/id_ed25519) to --identity")


@dataclass
class Execution:
    code: int
    stdout: str
    stderr: str


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


@dataclass
class DeviceSpec:
    text: str
    local: bool
    user: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None


def parse_device(text: str) -> DeviceSpec:
    text = (text or "local").strip()
    if text == "local":
        return DeviceSpec(text=text, local=True)
    m = _SPEC_RE.match(text)
    if not m:
        raise UsageError(f"bad --device {text!r}", "use local, [user@]host[:port], or a Host alias from ~/.ssh/config")
    if not (_HOST_OK.match(m["host"]) or _IPV6_OK.match(m["host"])):
        raise UsageError(f"bad host name in --device {text!r}: only letters, digits, '.', '-' and '_' (or a "
                         "[bracketed] IPv6 address) are allowed, as a host name or ssh_config alias",
                         "use local, [user@]host[:port], or a Host alias from ~/.ssh/config")
    if m["user"] is not None and not _USER_OK.match(m["user"]):
        raise UsageError(f"bad user name in --device {text!r}: only letters, digits, '.', '-', '_' and '+' are "
                         "allowed", "use local, [user@]host[:port], or a Host alias from ~/.ssh/config")
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

    def put_bundle(self, path: Path, sha256: str) -> tuple[str, bool]:
        return str(Path(path).resolve()), False

    def put_runners(self) -> str:
        return str(runner_dir())

    def workdir(self) -> Optional[str]:
        return None

    def run(self, argv: list[str]) -> Execution:
        """Run the runner with stdin a pipe we hold open (a runner given --watch-stdin stops when it closes);
        on a timeout or an interrupt, SIGTERM it (it cleans up), then SIGKILL it."""
        import threading

        proc = subprocess.Popen([self.python, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        chunks: dict[str, bytes] = {}
        readers = [threading.Thread(target=lambda k=k, f=f: chunks.__setitem__(k, f.read()), daemon=True)
                   for k, f in (("out", proc.stdout), ("err", proc.stderr))]
        for t in readers:
            t.start()
        try:
            proc.wait(timeout=self.run_timeout or None)  # not communicate(): it would close the runner's stdin
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise DeviceError(f"the runner did not finish within {self.run_timeout:g}s",
                              "raise --timeout or lower --runs/--min-seconds/--repeat")
        except BaseException:
            _stop(proc)
            raise
        finally:
            for t in readers:
                t.join(timeout=10)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        return Execution(proc.returncode, chunks.get("out", b"").decode("utf-8", "replace"),
                         chunks.get("err", b"").decode("utf-8", "replace"))

    def close(self) -> None:
        pass


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
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

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class SSHDevice:
    """A device reached over SSH with paramiko."""

    def __init__(self, spec: DeviceSpec, options: SSHOptions):
        import logging
        import time

        import paramiko

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
        cfg_path = options.ssh_config or Path.home() / ".ssh" / "config"
        cfg = {}
        if cfg_path.is_file():
            cfg = paramiko.SSHConfig.from_path(str(cfg_path)).lookup(spec.host)
        self.hostname = cfg.get("hostname", spec.host)
        self.port = spec.port or int(cfg.get("port", 22))
        self.user = spec.user or cfg.get("user") or _local_user()
        timeout = float(cfg.get("connecttimeout", options.connect_timeout))
        if not timeout > 0:
            raise UsageError(f"ConnectTimeout {timeout:g} in {cfg_path} is not a positive number of seconds",
                             "fix ConnectTimeout there")
        keys = [str(options.identity)] if options.identity else [os.path.expanduser(p) for p in cfg.get("identityfile", [])]
        for k in keys:  # like OpenSSH, a missing IdentityFile from ssh_config is skipped; a wrong one is an error
            if os.path.exists(k):
                check_identity(Path(k))
        known = options.known_hosts
        if known is None and cfg.get("userknownhostsfile"):
            known = Path(os.path.expanduser(cfg["userknownhostsfile"].split()[0]))
        known = known or Path.home() / ".ssh" / "known_hosts"
        self.known_hosts = known
        where = f"{self.user}@{self.hostname}:{self.port}"

        client = paramiko.SSHClient()
        if known.is_file():
            try:
                client.load_host_keys(str(known))
            except (UnicodeDecodeError, ValueError, paramiko.SSHException, OSError) as e:
                raise UsageError(f"known_hosts file {known} cannot be read ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:120] if str(e) else ''})",
                                 "remove or fix the damaged line (ssh-keygen -R HOST -f FILE rewrites it)")
        started = time.monotonic()
        if options.accept_new_host_key:
            client.set_missing_host_key_policy(_AcceptNewPolicy(known))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.hostname, port=self.port, username=self.user,
                           key_filename=[k for k in keys if os.path.exists(k)] or None,
                           timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                           allow_agent=True, look_for_keys=not options.identity)
        except paramiko.BadHostKeyException as e:
            raise DeviceError(f"host key for {where} has CHANGED (expected {e.expected_key.get_name()} "
                              f"{e.expected_key.get_fingerprint().hex()[:16]}..., got "
                              f"{e.key.get_fingerprint().hex()[:16]}...): possible man-in-the-middle",
                              f"if the device was reinstalled, remove its line from {known} "
                              f"(ssh-keygen -R '[{self.hostname}]:{self.port}' -f {known}) and connect again")
        except paramiko.AuthenticationException as e:
            raise DeviceError(f"authentication failed for {where} ({e})",
                              "pass --identity KEY or add the key to ssh-agent; install your public key on "
                              "the device with ssh-copy-id")
        except paramiko.SSHException as e:
            text = str(e)
            if "not found in known_hosts" in text:
                raise DeviceError(f"host key for {where} is unknown (not in {known})",
                                  "check the key, then add it with ssh-keyscan -p PORT HOST >> known_hosts, "
                                  "or pass --accept-new-host-key to trust it on first use")
            if "banner" in text or "No existing session" in text:
                if time.monotonic() - started >= timeout * 0.9:
                    raise DeviceError(f"cannot reach {where}: timed out after {timeout:g}s waiting for the SSH "
                                      "server's greeting", "check that this port is the device's sshd and that "
                                      "the device is not overloaded; raise --connect-timeout for a slow device")
                raise DeviceError(f"{where} does not speak SSH (no SSH greeting on port {self.port})",
                                  "check the port (host:PORT in --device, or Port in ~/.ssh/config)")
            if "No authentication methods available" in text or "not a valid" in text or "private key" in text:
                raise DeviceError(f"no usable SSH key for {where} ({text})",
                                  "pass --identity with your private key, set IdentityFile in ~/.ssh/config, or "
                                  "add the key to ssh-agent")
            raise DeviceError(f"SSH to {where} failed: {text}", "check that an SSH server runs on that port")
        except paramiko.ssh_exception.NoValidConnectionsError as e:
            raise DeviceError(f"connection to {where} refused", "check the host, the port and that sshd runs") from e
        except ConnectionRefusedError as e:
            raise DeviceError(f"connection to {where} refused", "check the host, the port and that sshd runs") from e
        except socket.gaierror as e:
            raise DeviceError(f"unknown host {self.hostname!r} ({e.strerror})",
                              "check the name, or add a Host entry to ~/.ssh/config") from e
        except (socket.timeout, TimeoutError) as e:
            raise DeviceError(f"cannot reach {where}: timed out after {timeout:.0f}s",
                              "check the device is on and reachable (ping, firewall)") from e
        except OSError as e:
            raise DeviceError(f"cannot reach {where}: {e.strerror or e}", "check the network and the port") from e
        self.client = client
        self._sftp = None
        self.python = options.remote_python

    # -- primitives

    def sftp(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def exec(self, command: str, timeout: Optional[float] = None, keep_stdin: bool = False) -> Execution:
        """Run ``command``; ``keep_stdin`` holds the remote stdin open until the command ends (a runner with
        --watch-stdin stops when it closes). The channel is closed on every way out, interrupts included."""
        import paramiko

        channel = None
        try:
            stdin, stdout, stderr = self.client.exec_command(command, timeout=timeout)
            channel = stdout.channel
            if not keep_stdin:
                stdin.close()
            out = stdout.read().decode("utf-8", "replace")
            err = stderr.read().decode("utf-8", "replace")
            code = stdout.channel.recv_exit_status()
        except socket.timeout:
            raise DeviceError(f"the command on {self.name} did not finish within {timeout:g}s",
                              "raise --timeout or lower --runs/--min-seconds/--repeat")
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise DeviceError(f"connection to {self.name} lost while running a command ({e or type(e).__name__})",
                              "check the device, then run the command again")
        finally:
            if channel is not None:
                channel.close()  # closes the remote stdin: a --watch-stdin runner stops and cleans up
        if code == -1:
            raise DeviceError(f"connection to {self.name} lost while running the runner (no exit status)",
                              "check the device (power, sshd, memory), then run the command again")
        return Execution(code, out, err)

    def _sh(self, command: str) -> Execution:
        res = self.exec(command)
        if res.code != 0:
            raise DeviceError(f"command on {self.name} failed ({res.code}): {command}: "
                              f"{(res.stderr or res.stdout).strip()[-300:]}", "check disk space and permissions")
        return res

    def _exists(self, path: str) -> Optional[int]:
        try:
            return self.sftp().stat(path).st_size
        except IOError:
            return None

    @contextlib.contextmanager
    def _undo_on_failure(self, undo, what: str):
        """Run ``undo`` (remove a partial upload) if the block fails; I/O errors become one DeviceError."""
        try:
            yield
        except BaseException as e:
            try:
                undo()
            except Exception:  # the connection may be gone; the temp name is never used again
                pass
            if isinstance(e, (IOError, OSError, EOFError)):
                raise DeviceError(f"{what} on {self.name} failed: {e}",
                                  "check free disk space (df -h ~) and permissions on the device") from e
            raise

    def _upload_file(self, local: Path, remote: str) -> None:
        tmp = f"{remote}.part-{secrets.token_hex(4)}"
        sftp = self.sftp()
        with self._undo_on_failure(lambda: sftp.remove(tmp), f"upload of {local.name}"):
            sftp.put(str(local), tmp, confirm=True)
            sftp.posix_rename(tmp, remote)

    # -- device interface

    def put_bundle(self, path: Path, sha256: str) -> tuple[str, bool]:
        base = self.options.remote_dir
        remote = f"{base}/bundles/{sha256}.edgepack"
        if self._exists(remote) == Path(path).stat().st_size:
            if self.remote_sha256(remote) == sha256:
                return remote, False
            # a damaged cached copy (disk error, edited by hand): replace it
        self._sh(f"mkdir -p {shlex.quote(base + '/bundles')}")
        self._upload_file(Path(path), remote)
        return remote, True

    def remote_sha256(self, remote: str) -> Optional[str]:
        """sha256 of a file on the device: hashed there by its Python, else read back over SFTP."""
        code = ("import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\n"
                "for b in iter(lambda: f.read(1<<20), b''): h.update(b)\nprint(h.hexdigest())")
        try:
            res = self.exec(f"{shlex.quote(self.python)} -c {shlex.quote(code)} {shlex.quote(remote)}", timeout=600)
            if res.code == 0 and re.fullmatch(r"[0-9a-f]{64}", res.stdout.strip()):
                return res.stdout.strip()
        except DeviceError:
            pass
        h = hashlib.sha256()
        try:
            with self.sftp().open(remote, "rb") as f:
                f.prefetch()
                while block := f.read(1 << 20):
                    h.update(block)
        except (IOError, OSError, EOFError):
            return None
        return h.hexdigest()

    def put_runners(self) -> str:
        base = self.options.remote_dir
        remote = f"{base}/runners/{runner_digest()}"
        if self._exists(remote + "/.complete") is not None:
            return remote
        tmp = f"{remote}.part-{secrets.token_hex(4)}"
        dirs = sorted({posixpath.dirname(f"{tmp}/{runner_path(p)}") for p in runner_files()} | {tmp})
        self._sh("mkdir -p " + " ".join(shlex.quote(d) for d in dirs))
        with self._undo_on_failure(lambda: self.exec(f"rm -rf {shlex.quote(tmp)}"), "installing the runner"):
            for p in runner_files():
                self.sftp().put(str(p), f"{tmp}/{runner_path(p)}")
            with self.sftp().open(f"{tmp}/.complete", "w") as f:
                f.write(runner_digest())
            try:
                self.sftp().posix_rename(tmp, remote)
            except IOError:  # another run installed the same runner first: use that one
                self.exec(f"rm -rf {shlex.quote(tmp)}")
        if self._exists(remote + "/.complete") is None:
            raise DeviceError(f"could not install the runner on {self.name}", "check disk space and permissions")
        return remote

    def workdir(self) -> Optional[str]:
        work = f"{self.options.remote_dir}/work"
        self._sh(f"mkdir -p {shlex.quote(work)}")
        return work

    def run(self, argv: list[str]) -> Execution:
        # Run under sh without exec so a runner killed by a signal comes back as exit status 128+N
        # (paramiko drops SSH "exit-signal" messages, which would look like a lost connection).
        inner = " ".join(shlex.quote(a) for a in [self.python, *argv]) + "; exit $?"
        return self.exec(f"sh -c {shlex.quote(inner)}", timeout=self.options.run_timeout or None, keep_stdin=True)

    def venv_python(self) -> Optional[str]:
        """The Python of the runtime venv edgepack made on this device earlier, if there is one."""
        py = f"{self.options.remote_dir}/venv/bin/python"
        return py if self._exists(py) is not None else None

    def install_runtime(self, packages: tuple[str, ...]) -> str:
        """Create (once) a venv in the device's edgepack cache, pip-install ``packages`` there, and use it."""
        venv = f"{self.options.remote_dir}/venv"
        py = f"{venv}/bin/python"
        if self._exists(py) is None:
            res = self.exec(f"{shlex.quote(self.options.remote_python)} -m venv {shlex.quote(venv)}")
            if res.code != 0:
                self.exec(f"rm -rf {shlex.quote(venv)}")
                raise DeviceError(f"could not create a venv on {self.name}: {(res.stderr or res.stdout).strip()[-200:]}",
                                  "install the venv module on the device (Debian/Raspberry Pi OS: sudo apt install "
                                  "python3-venv)")
        res = self.exec(" ".join([shlex.quote(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                  *(shlex.quote(p) for p in packages)]), timeout=1800)
        if res.code != 0:
            raise DeviceError(f"pip install {' '.join(packages)} failed on {self.name}: "
                              f"{(res.stderr or res.stdout).strip().splitlines()[-1:] or ''}",
                              "check the device reaches its package index and that wheels exist for its "
                              "architecture and Python")
        self.python = py
        return py

    def close(self) -> None:
        try:
            if self._sftp is not None:
                self._sftp.close()
        finally:
            self.client.close()


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def open_device(text: str, options: Optional[SSHOptions] = None):
    spec = parse_device(text)
    options = options or SSHOptions()
    if spec.local:
        return LocalDevice(run_timeout=options.run_timeout)
    return SSHDevice(spec, options)
