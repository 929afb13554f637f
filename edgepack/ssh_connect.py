"""Connecting to a device the way ``ssh`` would with the user's ``~/.ssh/config``: jump hosts and keys.

- ProxyJump (``--jump`` or the config's ``ProxyJump``): comma-separated chains of ``[user@]host[:port]``
  (``ssh://`` and ``[v6]`` forms too); each hop is looked up in the config like OpenSSH does (HostName,
  User, Port, IdentityFile, its own ProxyJump), opened with a ``direct-tcpip`` channel through the previous
  hop, and its host key checked against the same known_hosts and policy as the device.
- ProxyCommand: run through ``/bin/sh -c 'exec …'`` as OpenSSH does, after %h/%p/%r/%n substitution;
  host and user names with shell metacharacters are refused before any substitution.
- Keys: ssh-agent keys (``SSH_AUTH_SOCK``), then the IdentityFile list (defaults ``~/.ssh/id_*`` when none
  is set), with IdentitiesOnly limiting agent keys to those files. A passphrase-protected key is asked for
  on a terminal only; without one the error names ``ssh-add KEY``. Passwords only with ``ask_password``,
  prompted when needed and never kept.

Errors are one-line ``DeviceError`` s (exit 5) naming the hop; bad host names are ``UsageError`` (exit 2).
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from edgepack.errors import DeviceError, UsageError

DEFAULT_KEYS = ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk")
MAX_HOPS = 8

HopSettings = tuple[str, int, str, dict[str, Any]]  # host, port, user, its ssh_config lookup
_HOP_RE = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]\s]+\]|[^:@/\s\[\]]+)(?::(?P<port>\d+))?/?$")


def validate_host(host: str, what: str = "host") -> str:
    """A host name or address safe to put in a shell command: the check ``--device`` gets (devices.host_ok)."""
    from edgepack.devices import host_ok

    if not host_ok(host):
        raise UsageError(f"bad {what} name {host!r}", "a host is letters, digits, '.', '-', '_' or an IP address")
    return host


def validate_user(user: str) -> str:
    from edgepack.devices import user_ok

    if not user_ok(user):
        raise UsageError(f"bad user name {user!r}", "a user name is letters, digits, '.', '-', '_', '+'")
    return user


@dataclass
class Hop:
    host: str
    user: Optional[str] = None
    port: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


def parse_jump(text: Optional[str]) -> list[Hop]:
    """``user@a:2222,b`` -> [Hop(a, user, 2222), Hop(b)]; "none" or empty -> []."""
    if not text or text.strip().lower() == "none":
        return []
    hops = []
    for part in text.split(","):
        m = _HOP_RE.match(part.strip())
        if not m:
            raise UsageError(f"bad jump host {part.strip()!r}", "use [user@]host[:port], comma-separated for a chain")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"bad port in jump host {part.strip()!r}", "ports are 1-65535")
        hops.append(Hop(host=m["host"].strip("[]"), user=m["user"], port=port))
    return hops


def proxy_command(template: str, host: str, port: int, user: str, alias: Optional[str] = None) -> str:
    """The ProxyCommand line with %h %p %r %n %% substituted; names are validated first."""
    validate_host(host)
    validate_user(user)
    if alias is not None:
        validate_host(alias, "host alias")
    out, i = [], 0
    subs = {"h": host, "p": str(int(port)), "r": user, "n": alias or host, "%": "%"}
    while i < len(template):
        c = template[i]
        if c == "%" and i + 1 < len(template) and template[i + 1] in subs:
            out.append(subs[template[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


@dataclass
class ConnectOptions:
    """How to reach one device. ``policy`` (a ``paramiko.MissingHostKeyPolicy``) and ``known_hosts`` apply
    to every hop. ``lookup`` is ``SSHConfig.lookup(alias)`` for the device; ``config`` (the SSHConfig) is
    used to look up jump hosts by name. ``identity_files`` (``--identity``) replaces the config's list."""

    policy: Any
    known_hosts: Optional[Path] = None
    lookup: dict[str, Any] = field(default_factory=dict)
    config: Any = None
    alias: Optional[str] = None
    jump: Optional[str] = None
    identity_files: list[Any] = field(default_factory=list)
    use_agent: bool = True
    ask_password: bool = False
    timeout: float = 10.0
    passphrase: Optional[Callable[[str], Optional[str]]] = None  # default: getpass on a terminal only
    password: Optional[Callable[[str], str]] = None  # default: getpass


def _client_class() -> Any:
    import paramiko

    class ChainClient(paramiko.SSHClient):
        """An SSHClient that also closes the jump-host connections (or ProxyCommand) below it."""

        def __init__(self) -> None:
            super().__init__()
            self.hops: list[Any] = []
            self.proxy: Any = None
            self.route: list[str] = []

        def close(self) -> None:
            try:
                super().close()
            finally:
                for h in reversed(self.hops):
                    try:
                        h.close()
                    except Exception:
                        pass
                self.hops = []
                if self.proxy is not None:
                    try:
                        self.proxy.close()
                    except Exception:
                        pass
                    self.proxy = None

    return ChainClient


# --------------------------------------------------------------------------- keys


def _pub_blob(path: str) -> Optional[bytes]:
    import base64

    try:
        parts = Path(path + ".pub").read_text().split()
        return base64.b64decode(parts[1]) if len(parts) >= 2 else None
    except (OSError, ValueError):
        return None


def _is_true(v: Any) -> bool:
    return str(v).strip().lower() in ("yes", "true", "1")


def _terminal_passphrase(path: str) -> Optional[str]:
    if not (sys.stdin and sys.stdin.isatty()):
        return None
    return getpass.getpass(f"Enter passphrase for key '{path}': ")


def _auth_strategy(user: str, lookup: dict[str, Any], options: ConnectOptions, where: str) -> Any:
    import paramiko
    from paramiko.auth_strategy import (
        AuthFailure,
        AuthStrategy,
        InMemoryPrivateKey,
        OnDiskPrivateKey,
        Password,
    )

    if options.identity_files:
        files, source = [str(Path(p).expanduser()) for p in options.identity_files], "python-config"
    elif lookup.get("identityfile"):
        files, source = [os.path.expanduser(p) for p in lookup["identityfile"]], "ssh-config"
    else:
        files, source = [os.path.expanduser(f"~/.ssh/{k}") for k in DEFAULT_KEYS], "implicit-home"
    identities_only = _is_true(lookup.get("identitiesonly", "no"))
    use_agent = options.use_agent and str(lookup.get("identityagent", "")).lower() != "none"

    class Strategy(AuthStrategy):
        def __init__(self) -> None:
            super().__init__(ssh_config=paramiko.SSHConfig())  # the lookup is done already
            self.locked: list[str] = []
            self.unreadable: list[str] = []
            self.tried: list[str] = []
            self.no_terminal = False

        def get_sources(self) -> Iterator[Any]:
            agent_keys = []
            if use_agent and os.environ.get("SSH_AUTH_SOCK"):
                try:
                    agent_keys = list(paramiko.Agent().get_keys())
                except (paramiko.SSHException, OSError):
                    agent_keys = []
            file_blobs = {p: _pub_blob(p) for p in files}
            agent_blobs = {k.asbytes() for k in agent_keys}
            for k in agent_keys:
                if identities_only and k.asbytes() not in file_blobs.values():
                    continue
                self.tried.append(f"agent key {k.get_name()}")
                yield InMemoryPrivateKey(user, k)
            for path in files:
                if not os.path.isfile(path) or (file_blobs[path] and file_blobs[path] in agent_blobs):
                    continue  # absent, or its agent copy was offered already
                try:
                    try:
                        pkey = paramiko.PKey.from_path(path)
                    except TypeError as e:  # cryptography: "Key is password-protected, but password ..."
                        if "password" not in str(e):
                            raise
                        raise paramiko.PasswordRequiredException(str(e)) from e
                except paramiko.PasswordRequiredException:
                    phrase = (options.passphrase or _terminal_passphrase)(path)
                    if phrase is None:
                        self.locked.append(path)
                        continue
                    try:
                        # cryptography wants bytes (the stubs say str)
                        pkey = paramiko.PKey.from_path(path, phrase.encode())  # type: ignore[arg-type]
                    except (paramiko.SSHException, ValueError, TypeError) as e:
                        raise DeviceError(
                            f"cannot decrypt {path} (wrong passphrase?)",
                            f"check the passphrase; ssh-keygen -y -f {shlex.quote(path)} tests it",
                        ) from e
                    finally:
                        phrase = None
                except (paramiko.SSHException, OSError, ValueError) as e:
                    self.unreadable.append(f"{path} ({e})")
                    continue
                self.tried.append(path)
                yield OnDiskPrivateKey(user, source, Path(path), pkey)
            if options.ask_password:
                if options.password is None and not (sys.stdin and sys.stdin.isatty()):
                    self.no_terminal = True  # paramiko would swallow the getter's error: say it after the keys
                else:
                    self.tried.append("password")
                    yield Password(user, password_getter=lambda: (options.password or _ask_password)(where))

        def authenticate(self, transport: Any) -> Any:
            try:
                return super().authenticate(transport)
            except AuthFailure as e:
                if self.locked:
                    key = self.locked[0]
                    raise DeviceError(
                        f"authentication to {where} needs {key}, which is passphrase-protected, "
                        "and there is no terminal to ask for the passphrase",
                        f"load it into your agent first: ssh-add {shlex.quote(key)} "
                        "(then SSH_AUTH_SOCK must reach edgepack)",
                    ) from e
                if self.no_terminal:
                    raise DeviceError(
                        f"authentication failed for {where} with the keys "
                        f"({', '.join(self.tried) or 'none found'}), and --ask-password needs a "
                        "terminal to ask for the password",
                        "run edgepack from a terminal, or use a key (ssh-copy-id, ssh-add)",
                    ) from e
                tried = ", ".join(self.tried) or "no key found (no agent, no IdentityFile, no ~/.ssh/id_*)"
                bad = f"; unreadable: {'; '.join(self.unreadable)}" if self.unreadable else ""
                raise DeviceError(
                    f"authentication failed for {where} (tried {tried}{bad})",
                    "pass --identity KEY or add the key to ssh-agent (ssh-add KEY); install your "
                    "public key on the device with ssh-copy-id"
                    + ("" if options.ask_password else "; or pass --ask-password"),
                ) from e

    return Strategy()


def _ask_password(where: str) -> str:
    if not (sys.stdin and sys.stdin.isatty()):
        raise DeviceError(
            f"--ask-password needs a terminal to ask for {where}'s password",
            "run edgepack from a terminal, or use a key (ssh-copy-id, ssh-add)",
        )
    return getpass.getpass(f"{where}'s password: ")


# --------------------------------------------------------------------------- connect


def _hop_settings(hop: Hop, options: ConnectOptions) -> HopSettings:
    look = options.config.lookup(hop.host) if options.config is not None else {}
    host = look.get("hostname", hop.host)
    port = hop.port or int(look.get("port", 22))
    user = hop.user or look.get("user") or getpass.getuser()
    return validate_host(host, "jump host"), port, validate_user(user), look


def _expand_hops(hops: list[Hop], options: ConnectOptions, depth: int = 0) -> list[HopSettings]:
    """Each hop's (host, port, user, lookup), with the hops a jump host's own ProxyJump puts before it."""
    out = []
    for hop in hops:
        host, port, user, look = _hop_settings(hop, options)
        inner = parse_jump(look.get("proxyjump")) if look.get("proxyjump") else []
        if inner:
            if depth >= MAX_HOPS:
                raise UsageError("ProxyJump chain too long (a loop in ~/.ssh/config?)", "check the ProxyJump lines")
            out += _expand_hops(inner, options, depth + 1)
        out.append((host, port, user, look))
    return out


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def load_known_hosts(client: Any, known: Optional[Path]) -> None:
    """Load ``known`` into ``client``; a damaged file is a usage error, not a traceback."""
    import paramiko

    if known is None or not Path(known).is_file():
        return
    try:
        client.load_host_keys(str(known))
    except (UnicodeDecodeError, ValueError, paramiko.SSHException, OSError) as e:
        raise UsageError(
            f"known_hosts file {known} cannot be read ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else ''})",
            "remove or fix the damaged line (ssh-keygen -R HOST -f FILE rewrites it)",
        ) from e


def _open(host: str, port: int, user: str, look: dict[str, Any], options: ConnectOptions, sock: Any, label: str) -> Any:
    import time

    where = f"{label}{user}@{host}:{port}"
    client = _client_class()()
    known = options.known_hosts
    load_known_hosts(client, known)
    client.set_missing_host_key_policy(options.policy)
    t = options.timeout
    started = time.monotonic()
    try:
        client.connect(
            host,
            port=port,
            username=user,
            sock=sock,
            timeout=t,
            banner_timeout=t,
            auth_timeout=t,
            auth_strategy=_auth_strategy(user, look, options, where),
        )
    except DeviceError:
        client.close()
        raise
    except BaseException as e:
        client.close()
        raise _translate(e, where, host, port, known, t, time.monotonic() - started) from e
    return client


def _translate(
    e: BaseException,
    where: str,
    host: str,
    port: int,
    known: Optional[Path],
    timeout: float = 10.0,
    elapsed: float = 0.0,
) -> BaseException:
    import paramiko

    if isinstance(e, paramiko.BadHostKeyException):
        return DeviceError(
            f"host key for {where} has CHANGED (expected {e.expected_key.get_name()} "
            f"{e.expected_key.fingerprint}, got {e.key.fingerprint}): possible man-in-the-middle",
            f"if the host was reinstalled, remove its line (ssh-keygen -R "
            f"'{_known_hosts_name(host, port)}' -f {known}) and connect again",
        )
    if isinstance(e, paramiko.AuthenticationException):
        return DeviceError(
            f"authentication failed for {where} ({e})",
            "pass --identity KEY or add the key to ssh-agent; install your public key on the device with ssh-copy-id",
        )
    if isinstance(e, paramiko.ProxyCommandFailure):
        return DeviceError(f"ProxyCommand for {where} failed: {e}", "run the ProxyCommand by hand to see why")
    if isinstance(e, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)):
        return DeviceError(f"connection to {where} refused", "check the host, the port and that sshd runs")
    if isinstance(e, paramiko.SSHException):
        text = str(e)
        if "not found in known_hosts" in text:
            return DeviceError(
                f"host key for {where} is unknown (not in {known})",
                f"check the key, then add it: ssh-keyscan -p {port} {host} >> {known}, "
                "or pass --accept-new-host-key to trust it on first use",
            )
        if "banner" in text or "No existing session" in text:
            if elapsed >= timeout * 0.9:
                return DeviceError(
                    f"cannot reach {where}: timed out after {timeout:g}s waiting for the SSH server's greeting",
                    "check that this port is the device's sshd and that "
                    "the device is not overloaded; raise --connect-timeout for a slow device",
                )
            return DeviceError(
                f"{where} does not speak SSH (no SSH greeting on port {port})",
                "check the port (host:PORT in --device, or Port in ~/.ssh/config)",
            )
        if "No authentication methods available" in text or "not a valid" in text or "private key" in text:
            return DeviceError(
                f"no usable SSH key for {where} ({text})",
                "pass --identity with your private key, set IdentityFile in ~/.ssh/config, or add the key to ssh-agent",
            )
        return DeviceError(f"SSH to {where} failed: {text}", "check that an SSH server runs on that port")
    if isinstance(e, socket.gaierror):
        return DeviceError(
            f"unknown host {host!r} ({e.strerror})", "check the name, or add a Host entry to ~/.ssh/config"
        )
    if isinstance(e, (socket.timeout, TimeoutError)):
        return DeviceError(
            f"cannot reach {where}: timed out after {timeout:g}s", "check the host is on and reachable (ping, firewall)"
        )
    if isinstance(e, EOFError):
        return DeviceError(
            f"{where} closed the connection during the SSH handshake",
            "check that this port is the device's sshd and its logs",
        )
    if isinstance(e, OSError):
        return DeviceError(f"cannot reach {where}: {e.strerror or e}", "check the network and the port")
    return e


def route(host: str, port: int, user: str, options: ConnectOptions) -> tuple[list[HopSettings], Optional[str]]:
    """(jump hops as (host, port, user, lookup), ProxyCommand line or None) for this device."""
    look = options.lookup or {}
    if options.jump:
        return _expand_hops(parse_jump(options.jump), options), None
    if look.get("proxyjump") and look["proxyjump"].strip().lower() != "none":
        return _expand_hops(parse_jump(look["proxyjump"]), options), None
    cmd = look.get("proxycommand")
    if cmd and cmd.strip().lower() != "none":
        return [], proxy_command(cmd, host, port, user, options.alias)
    return [], None


def connect(host: str, port: int, user: str, options: ConnectOptions) -> Any:
    """A connected, authenticated ``paramiko.SSHClient`` to ``user@host:port`` (``host`` is the HostName),
    through the jump hosts or ProxyCommand the options and config ask for. ``client.route`` lists the hops."""
    import paramiko

    validate_host(host)
    validate_user(user)
    hops, command = route(host, port, user, options)
    opened: list[Any] = []
    sock, proxy = None, None
    try:
        for i, (h, p, u, look) in enumerate(hops):
            c = _open(h, p, u, look, options, sock, "jump host ")
            opened.append(c)
            nh, np_ = (hops[i + 1][0], hops[i + 1][1]) if i + 1 < len(hops) else (host, port)
            try:
                sock = c.get_transport().open_channel(
                    "direct-tcpip", (nh, np_), ("127.0.0.1", 0), timeout=options.timeout
                )
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise DeviceError(
                    f"jump host {u}@{h}:{p} could not connect to {nh}:{np_} ({e})",
                    "check the address as seen from the jump host, that sshd runs there, and "
                    "AllowTcpForwarding on the jump host",
                ) from e
        if command:
            proxy = sock = paramiko.ProxyCommand(f"/bin/sh -c {shlex.quote('exec ' + command)}")
        client = _open(host, port, user, options.lookup or {}, options, sock, "")
    except BaseException:
        for c in reversed(opened):
            c.close()
        if proxy is not None:
            proxy.close()
        raise
    client.hops = opened
    client.proxy = proxy
    client.route = [f"{u}@{h}:{p}" for h, p, u, _ in hops] + ([f"ProxyCommand {command}"] if command else [])
    return client
