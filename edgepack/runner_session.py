"""A runner kept running between requests (``runner --serve``), locally or over SSH.

``bench --until-conclusive`` asks a runner for one timing window at a time and decides after each whether it
needs more, so the runner (and its loaded model) stays up between windows: nothing is re-uploaded, reloaded
or restarted per window. Requests are lines on the runner's stdin (``window``, ``finish``); replies are JSON
lines on its stdout, then the usual result document. Closing stdin stops the runner (it cleans up on the
device), as for every bench.
"""

from __future__ import annotations

import json
import queue
import shlex
import subprocess
import threading
import time
from typing import IO, Any, Optional

from edgepack.devices import Execution
from edgepack.errors import DeviceError


class RunnerSession:
    """One serving runner: :meth:`send` a request, :meth:`event` reads its next JSON line, :meth:`finish` asks
    for the result and waits for the runner to exit, :meth:`close` stops it whatever state it is in."""

    def __init__(self, name: str, stdout: IO[bytes], stderr: IO[bytes]):
        self.name = name
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._rest: list[str] = []
        self._err: list[bytes] = []
        self._readers = [
            threading.Thread(target=self._read_lines, args=(stdout,), daemon=True),
            threading.Thread(target=lambda: self._err.append(stderr.read()), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read_lines(self, stdout: IO[bytes]) -> None:
        try:
            for raw in iter(stdout.readline, b""):
                self._lines.put(raw.decode("utf-8", "replace"))
        except (OSError, ValueError, EOFError):
            pass
        finally:
            self._lines.put(None)

    # what a transport provides
    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _wait(self, timeout: Optional[float]) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # the protocol
    def send(self, request: str) -> None:
        try:
            self._write(request.encode() + b"\n")
        except (OSError, EOFError, ValueError):
            pass  # the runner has gone: event() reports why

    def event(self, timeout: Optional[float]) -> dict[str, Any]:
        """The runner's next JSON line; a DeviceError with the runner's own error when it ended instead."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise DeviceError(
                f"the runner on {self.name} sent nothing for {timeout:g}s",
                "raise --timeout or lower --runs/--min-seconds",
            )
        if line is None:
            raise self._failure()
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if not isinstance(data, dict) or "event" not in data:
            self._rest.append(line)
            raise self._failure()
        return data

    def _failure(self) -> DeviceError:
        from edgepack.bencher import _parse

        try:
            code = self._wait(30.0)
        except subprocess.TimeoutExpired:
            code = 1
        execution = self._execution(code if code != 0 else 1)
        try:
            _parse(execution, self.name)
        except DeviceError as e:
            e.runner_exit = execution.code  # type: ignore[attr-defined]  # read by --install-runtime
            return e
        return DeviceError(f"the runner on {self.name} stopped serving", "check the device")

    def _execution(self, code: int) -> Execution:
        for t in self._readers:
            t.join(timeout=10)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self._rest.append(line)
        return Execution(code, "".join(self._rest), b"".join(self._err).decode("utf-8", "replace"))

    def finish(self, timeout: Optional[float]) -> Execution:
        """Ask for the result document (golden/eval checks run now) and wait for the runner to exit."""
        self.send("finish")
        try:
            code = self._wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise DeviceError(
                f"the runner on {self.name} did not finish within {timeout:g}s", "raise --timeout"
            ) from None
        return self._execution(code)


class LocalSession(RunnerSession):
    def __init__(self, python: str, argv: list[str]):
        self.proc = subprocess.Popen(
            [python, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        super().__init__("local", self.proc.stdout, self.proc.stderr)

    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _wait(self, timeout: Optional[float]) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        from edgepack.devices import _stop

        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the runner stops and cleans up
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _stop(self.proc)


class SSHSession(RunnerSession):
    def __init__(self, client: Any, name: str, python: str, argv: list[str]):
        import paramiko

        # under sh without exec, as SSHDevice.run: a runner killed by a signal comes back as exit status 128+N
        inner = " ".join(shlex.quote(a) for a in [python, *argv]) + "; exit $?"
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise DeviceError(f"connection to {name} lost", "check the device, then run the command again")
        try:
            self.channel = transport.open_session()
            self.channel.exec_command(f"sh -c {shlex.quote(inner)}")
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise DeviceError(
                f"connection to {name} lost while starting the runner ({e or type(e).__name__})",
                "check the device, then run the command again",
            )
        super().__init__(name, self.channel.makefile("rb"), self.channel.makefile_stderr("rb"))

    def _write(self, data: bytes) -> None:
        self.channel.sendall(data)

    def _wait(self, timeout: Optional[float]) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.channel.exit_status_ready():
            if self.channel.closed and not self.channel.exit_status_ready():
                break
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired("runner", timeout or 0)
            time.sleep(0.05)
        code = self.channel.recv_exit_status() if self.channel.exit_status_ready() else -1
        if code == -1:
            raise DeviceError(
                f"connection to {self.name} lost while running the runner (no exit status)",
                "check the device (power, sshd, memory), then run the command again",
            )
        return int(code)

    def close(self) -> None:
        self.channel.close()  # closes the remote stdin: the runner stops and cleans up
