"""Moving files to a device over an SSH connection: SFTP when the server offers it, else an exec channel.

Many devices have no SFTP: dropbear (Buildroot, Yocto, OpenWrt, NPU vendor images) has none of its own and
an OpenSSH server without a ``Subsystem sftp`` line refuses it. ``open_transfer`` tries SFTP and, when the
subsystem is refused, falls back to streaming over an exec channel (``cat > TEMP``, like ``scp -O`` does).

Either way a file goes to a temp name beside its final name (``NAME.part-XXXXXXXX``); the device checks its
size and, when a sha256 is given, its sha256 (``sha256sum``, the device's Python ``hashlib`` or ``openssl
dgst``, whichever exists), then renames it into place (``mv`` within one directory is an atomic rename).
Any failure removes the temp file. Over exec the check runs in the same remote command as the ``cat``, so a
connection that drops mid-upload still leaves nothing: ``cat`` sees end of input, the size is short, and the
device removes the temp file itself.

Every remote command is POSIX sh (dash, BusyBox ash) with ``shlex.quote``-d paths, and uses only
``cat wc stat mv rm mkdir`` plus the hash tool: no bash, no Python needed for the transfer itself.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import shlex
import socket
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

from edgepack.errors import DeviceError

CHUNK = 256 * 1024
TEMP_MARK = ".part-"
# exit codes of the remote upload/verify script
_E_WRITE, _E_SIZE, _E_HASH, _E_RENAME = 64, 65, 66, 67

_HASH_PY = (
    'import hashlib,sys\nh=hashlib.sha256()\nfor b in iter(lambda: sys.stdin.buffer.read(1<<20), b""):'
    " h.update(b)\nprint(h.hexdigest())"
)
HASH_TOOLS = ("sha256sum", "python", "openssl", "shasum")


def q(path: str) -> str:
    """A remote path quoted for sh; a leading '-' gets './' so no command reads it as an option."""
    path = str(path)
    return shlex.quote("./" + path if path.startswith("-") else path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def _hint(stderr: str, path: str) -> str:
    s = stderr.lower()
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    if "no space left" in s or "disk quota" in s:
        return f"free disk space on the device (df -h {parent}) or pass --remote-dir on a larger filesystem"
    if "read-only file system" in s:
        return "pass --remote-dir to a writable directory on the device (e.g. /data/edgepack or /tmp/edgepack)"
    if "permission denied" in s:
        return f"pass --remote-dir to a directory the SSH user can write, or fix the permissions of {parent}"
    if "nonexistent" in s or "no such file" in s:
        return f"create {parent} first (or pass another --remote-dir)"
    return "check free disk space (df -h) and permissions on the device"


class Transfer:
    """File operations on one connected ``paramiko.SSHClient``; ``kind`` is "sftp" or "exec".

    ``python`` is the device's Python, used only as a sha256 tool when ``sha256sum`` is missing.
    ``notes`` collects one-line remarks for the user (SFTP fallback, no sha256 tool); ``warn`` is also
    called with each.
    """

    kind = "exec"

    def __init__(
        self,
        client: Any,
        name: str = "device",
        python: str = "python3",
        timeout: float = 120.0,
        warn: Optional[Callable[[str], None]] = None,
    ):
        self.client = client
        self.name = name
        self.python = python
        self.timeout = timeout
        self.warn = warn
        self.notes: list[str] = []
        self._hash_tool: Optional[str] = None
        self._hash_probed = False

    # -- remote commands

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            if self.warn:
                self.warn(text)

    def run(
        self, command: str, stdin: Optional[BinaryIO] = None, size: Optional[int] = None, what: str = "a command"
    ) -> tuple[int, str, str]:
        """Run ``command`` on the device (stdin streamed from ``stdin`` in chunks, at most ``size`` bytes);
        return (exit code, stdout, stderr). A lost connection is a DeviceError."""
        import paramiko

        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise DeviceError(f"connection to {self.name} lost before {what}", "check the device, then run again")
        send_error = None
        try:
            chan = transport.open_session(timeout=self.timeout)
            chan.settimeout(self.timeout)
            chan.exec_command(command)
            if stdin is not None:
                left = size
                try:
                    while left is None or left > 0:
                        chunk = stdin.read(CHUNK if left is None else min(CHUNK, left))
                        if not chunk:
                            break
                        chan.sendall(chunk)
                        if left is not None:
                            left -= len(chunk)
                except (OSError, socket.timeout, paramiko.SSHException) as e:  # the command ended early
                    send_error = e
            chan.shutdown_write()
            out = chan.makefile("rb").read().decode("utf-8", "replace")
            err = chan.makefile_stderr("rb").read().decode("utf-8", "replace")
            if not chan.status_event.wait(self.timeout):
                raise socket.timeout("no exit status")
            code = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, EOFError, OSError, socket.timeout) as e:
            raise DeviceError(
                f"connection to {self.name} lost during {what} ({e or type(e).__name__})",
                "check the device, then run again (a partial upload removes itself)",
            ) from e
        if code == -1:
            raise DeviceError(
                f"connection to {self.name} lost during {what} (no exit status)",
                "check the device, then run again (a partial upload removes itself)",
            )
        if send_error is not None and code == 0:
            raise DeviceError(f"{what} on {self.name} failed: {send_error}", "check the device, then run again")
        return code, out, err

    def _check(self, command: str, what: str, path: str) -> str:
        code, out, err = self.run(command, what=what)
        if code != 0:
            msg = (err or out).strip().splitlines()
            raise DeviceError(
                f"{what} on {self.name} failed: {msg[-1] if msg else f'exit {code}'}", _hint(err or out, path)
            )
        return out

    # -- hashing

    def hash_tool(self) -> Optional[str]:
        """The device's sha256 tool: "sha256sum", "python", "openssl", "shasum", or None (none found)."""
        if not self._hash_probed:
            py = shlex.quote(self.python)
            probe = (
                "if command -v sha256sum >/dev/null 2>&1; then echo sha256sum; "
                f"elif command -v {py} >/dev/null 2>&1 && {py} -c 'import hashlib' >/dev/null 2>&1; "
                "then echo python; "
                "elif command -v openssl >/dev/null 2>&1; then echo openssl; "
                "elif command -v shasum >/dev/null 2>&1; then echo shasum; fi"
            )
            out = self.run(probe, what="looking for a sha256 tool")[1].strip()
            self._hash_tool = out if out in HASH_TOOLS else None
            self._hash_probed = True
        return self._hash_tool

    def _hash_command(self, tool: str) -> str:
        return {
            "sha256sum": 'sha256sum < "$t"',
            "python": f'{shlex.quote(self.python)} -c {shlex.quote(_HASH_PY)} < "$t"',
            "openssl": 'openssl dgst -sha256 < "$t"',
            "shasum": 'shasum -a 256 < "$t"',
        }[tool]

    def _finish_script(self, tmp: str, final: str, size: int, sha256: Optional[str]) -> tuple[str, Optional[str]]:
        """sh that checks the temp file's size (and sha256), then renames it; removes it on any mismatch."""
        lines = [
            f"t={q(tmp)}; f={q(final)}",
            'n=$(stat -L -c %s "$t" 2>/dev/null) || n=$(wc -c < "$t") || n=none',
            "n=$(echo $n)",
            (
                f'if [ "$n" != {size} ]; then rm -f "$t"; '
                f'echo "size on the device is $n bytes, expected {size}" >&2; exit {_E_SIZE}; fi'
            ),
        ]
        tool = None
        if sha256:
            tool = self.hash_tool()
            if tool is None:
                self.note(
                    f"no sha256 tool on {self.name} (sha256sum, {self.python} hashlib, openssl): uploads are "
                    "checked by size only (fix: install coreutils or BusyBox sha256sum on the device)"
                )
            else:
                lines += [
                    f"h=$({self._hash_command(tool)}) || h=",
                    "h=${h##*= }; h=${h%% *}",
                    (
                        f'if [ "$h" != {shlex.quote(sha256.lower())} ]; then rm -f "$t"; '
                        f'echo "sha256 on the device is ${{h:-unknown}} ({tool}), expected {sha256.lower()}" '
                        f">&2; exit {_E_HASH}; fi"
                    ),
                ]
        lines.append(f'mv -f "$t" "$f" || {{ rm -f "$t"; exit {_E_RENAME}; }}')
        return "\n".join(lines), tool

    def _fail(self, code: int, err: str, local_name: str, final: str) -> DeviceError:
        msg = err.strip().splitlines()
        detail = msg[-1] if msg else f"exit {code}"
        if code in (_E_SIZE, _E_HASH):
            return DeviceError(
                f"upload of {local_name} to {self.name} arrived corrupted: {detail}",
                "check the link and the device's storage, then run again (the partial file was removed)",
            )
        return DeviceError(f"upload of {local_name} to {self.name} failed: {detail}", _hint(err, final))

    # -- the interface SSHDevice uses

    def put(self, local: Path, remote_final: str, sha256: Optional[str] = None) -> Optional[str]:
        """Upload ``local`` to ``remote_final`` via a temp name; returns the hash tool used (None: size only)."""
        local = Path(local)
        with open(local, "rb") as f:
            return self.put_stream(f, local.stat().st_size, remote_final, sha256, local_name=local.name)

    def put_bytes(self, data: bytes, remote_final: str, sha256: Optional[str] = None) -> Optional[str]:
        return self.put_stream(
            io.BytesIO(data), len(data), remote_final, sha256, local_name=remote_final.rsplit("/", 1)[-1]
        )

    def put_stream(
        self, stream: BinaryIO, size: int, remote_final: str, sha256: Optional[str] = None, local_name: str = "a file"
    ) -> Optional[str]:
        """Upload ``size`` bytes read from ``stream``; fewer bytes than ``size`` is a failed upload."""
        tmp = f"{remote_final}{TEMP_MARK}{secrets.token_hex(4)}"
        script, tool = self._finish_script(tmp, remote_final, size, sha256)
        command = f't={q(tmp)}\ncat > "$t" || {{ rm -f "$t"; exit {_E_WRITE}; }}\n' + script
        code, _, err = self.run(command, stdin=stream, size=size, what=f"upload of {local_name}")
        if code != 0:
            self._remove_quietly(tmp)
            raise self._fail(code, err, local_name, remote_final)
        return tool

    def remote_sha256(self, path: str) -> Optional[str]:
        """sha256 of ``path`` hashed on the device, or None (absent, unreadable, or no sha256 tool there)."""
        tool = self.hash_tool()
        if tool is None:
            return None
        code, out, _ = self.run(
            f't={q(path)}; [ -f "$t" ] || exit 1; h=$({self._hash_command(tool)}) || exit 1; '
            'h=${h##*= }; echo "${h%% *}"',
            what=f"hashing {path}",
        )
        h = out.strip().lower()
        return h if code == 0 and len(h) == 64 and all(c in "0123456789abcdef" for c in h) else None

    def mkdirs(self, path: str) -> None:
        self._check(f"mkdir -p {q(path)}", f"creating {path}", path + "/x")

    def stat_size(self, path: str) -> Optional[int]:
        """The size of ``path`` on the device (a directory gives its inode size), or None when it is absent."""
        out = self.run(
            f'p={q(path)}; if [ -e "$p" ]; then n=$(stat -L -c %s "$p" 2>/dev/null) || '
            f'n=$(wc -c < "$p" 2>/dev/null); echo ${{n:-0}}; else echo none; fi',
            what=f"checking {path}",
        )[1].strip()
        return int(out) if out.isdigit() else None

    def remove(self, path: str, recursive: bool = False) -> None:
        self._check(f"rm -f{'r' if recursive else ''} {q(path)}", f"removing {path}", path)

    def rename(self, src: str, dst: str) -> bool:
        """Rename ``src`` to ``dst``; False (and nothing moved) when ``dst`` exists already."""
        code, out, err = self.run(
            f"if [ -e {q(dst)} ]; then exit 17; fi; mv -f {q(src)} {q(dst)}", what=f"renaming {src}"
        )
        if code == 17:
            return False
        if code != 0:
            raise DeviceError(
                f"renaming {src} on {self.name} failed: {(err or out).strip()[-200:]}", _hint(err or out, dst)
            )
        return True

    def _remove_quietly(self, path: str, recursive: bool = False) -> None:
        try:
            self.remove(path, recursive)
        except Exception:  # the connection may be gone; over exec the device already removed it
            pass

    def close(self) -> None:
        pass


class SftpTransfer(Transfer):
    """Data over SFTP; the size/sha256 check and the rename run as one exec command (as for exec)."""

    kind = "sftp"

    def __init__(
        self,
        client: Any,
        sftp: Any,
        name: str = "device",
        python: str = "python3",
        timeout: float = 120.0,
        warn: Optional[Callable[[str], None]] = None,
    ):
        super().__init__(client, name=name, python=python, timeout=timeout, warn=warn)
        self.sftp = sftp

    def put_stream(
        self, stream: BinaryIO, size: int, remote_final: str, sha256: Optional[str] = None, local_name: str = "a file"
    ) -> Optional[str]:
        tmp = f"{remote_final}{TEMP_MARK}{secrets.token_hex(4)}"
        limited = _Limited(stream, size)
        try:
            self.sftp.putfo(limited, tmp, confirm=False)
        except (IOError, OSError, EOFError) as e:
            self._remove_quietly(tmp)
            raise DeviceError(f"upload of {local_name} to {self.name} failed: {e}", _hint(str(e), remote_final)) from e
        except BaseException:
            self._remove_quietly(tmp)
            raise
        script, tool = self._finish_script(tmp, remote_final, size, sha256)
        code, _, err = self.run(script, what=f"checking the upload of {local_name}")
        if code != 0:
            self._remove_quietly(tmp)
            if code == _E_SIZE and limited.left == 0:
                # all bytes were sent, fewer stored: paramiko drops the status of pipelined SFTP writes
                msg = err.strip().splitlines()
                detail = msg[-1] if msg else f"exit {code}"
                raise DeviceError(
                    f"upload of {local_name} to {self.name} failed: the device did not store all of "
                    f"it ({detail}; a full disk or a quota?)",
                    _hint("no space left", remote_final),
                )
            raise self._fail(code, err, local_name, remote_final)
        return tool

    def stat_size(self, path: str) -> Optional[int]:
        try:
            size: Optional[int] = self.sftp.stat(path).st_size
            return size
        except IOError:
            return None

    def remote_sha256(self, path: str) -> Optional[str]:
        """Hashed on the device; without a sha256 tool there, read back over SFTP and hashed here."""
        if self.hash_tool() is not None:
            return super().remote_sha256(path)
        h = hashlib.sha256()
        try:
            with self.sftp.open(path, "rb") as f:
                f.prefetch()
                while block := f.read(1 << 20):
                    h.update(block)
        except (IOError, OSError, EOFError):
            return None
        return h.hexdigest()

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception:
            pass


class _Limited(io.RawIOBase):
    """At most ``size`` bytes of ``stream`` (SFTP must not send more than the announced size)."""

    def __init__(self, stream: BinaryIO, size: int):
        self.stream, self.left = stream, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.stream.read(n) if n else b""
        self.left -= len(data)
        return data


def open_transfer(
    client: Any,
    name: str = "device",
    python: str = "python3",
    prefer: Optional[str] = None,
    timeout: float = 120.0,
    warn: Optional[Callable[[str], None]] = None,
) -> Transfer:
    """SFTP when the server offers it, else exec; ``prefer="exec"`` skips SFTP, ``prefer="sftp"`` requires it."""
    import paramiko

    if prefer == "exec":
        return Transfer(client, name=name, python=python, timeout=timeout, warn=warn)
    transport = client.get_transport()
    chan = None
    try:
        chan = transport.open_session(timeout=timeout)
        chan.invoke_subsystem("sftp")
        sftp = paramiko.SFTPClient(chan)
    except (paramiko.SSHException, EOFError, OSError) as e:
        if chan is not None:  # dropbear refuses the next channel while a failed one is still open
            chan.close()
        if transport is None or not transport.is_active():
            raise DeviceError(
                f"connection to {name} lost while opening SFTP ({e})", "check the device, then run again"
            ) from e
        if prefer == "sftp":
            raise DeviceError(
                f"{name} refuses SFTP ({e})",
                "enable the sftp Subsystem in the device's sshd_config, or let edgepack use exec",
            ) from e
        t = Transfer(client, name=name, python=python, timeout=timeout, warn=warn)
        t.note(f"{name} has no SFTP ({e}): files go over an exec channel (cat), checked on the device")
        return t
    return SftpTransfer(client, sftp, name=name, python=python, timeout=timeout, warn=warn)


def put_dir(
    transfer: Transfer,
    files: list[Path],
    remote: str,
    marker: str = ".complete",
    marker_text: str = "",
    name: Optional[Callable[[Path], str]] = None,
) -> bool:
    """Install ``files`` as directory ``remote`` all at once: each file verified into a temp directory beside
    it (at ``name(path)``, a relative path with '/', default its file name), then ``marker`` written, then one
    rename. False when ``remote`` is complete already (nothing sent); when another run installed it first,
    the temp directory is removed and that one is kept."""
    if transfer.stat_size(f"{remote}/{marker}") is not None:
        return False
    rel = {Path(p): (name or (lambda x: x.name))(Path(p)) for p in files}
    for r in rel.values():
        if r.startswith("/") or ".." in r.split("/"):
            raise ValueError(f"put_dir: {r!r} is not a relative path inside the directory")
    tmp = f"{remote}{TEMP_MARK}{secrets.token_hex(4)}"
    transfer.mkdirs(tmp)
    try:
        subdirs = sorted({r.rsplit("/", 1)[0] for r in rel.values() if "/" in r})
        for d in subdirs:
            transfer.mkdirs(f"{tmp}/{d}")
        for p, r in rel.items():
            transfer.put(p, f"{tmp}/{r}", sha256_file(p))
        transfer.put_bytes(marker_text.encode(), f"{tmp}/{marker}")
        if not transfer.rename(tmp, remote):
            transfer.remove(tmp, recursive=True)
    except BaseException:
        transfer._remove_quietly(tmp, recursive=True)
        raise
    return True
