"""Several devices at once: ``bench``/``deploy``/``doctor``/``devices`` over a selection (``--device @group``,
``--device a,b,c``), ``--parallel N`` devices at a time, and ``--shard i/N`` of a bench's bundle x device pairs.

:func:`run_on_devices` is the one engine: it runs ``fn(device)`` for each device in a bounded thread pool,
shows one live line per device (the steps edgepack prints for one device become that line), and returns one
:class:`Outcome` per device: the value, or the error and its kind (``unreachable``, ``lost``, ``timeout``,
``failed``, ``interrupted``). A failing device never stops the others. On Ctrl-C/SIGTERM every open device is
closed (each runner stops and cleans up on its device) and the interrupt goes on.
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar, cast

from edgepack import devices as devices_mod
from edgepack.devices import DeviceSpec, SSHOptions
from edgepack.errors import EdgepackError, UsageError
from edgepack.types import BenchFailure, BenchOptions, BenchRecord, FailureStatus
from edgepack.ui import console, printable, safe, steps_to

T = TypeVar("T")
DEFAULT_PARALLEL = 4
EXIT_SOME_FAILED = 6  # some devices (or bundle x device pairs) failed; the others' results were written

# How a device failed, from edgepack's own one-line errors (edgepack/ssh_connect.py, devices.py, transport.py).
_KINDS: list[tuple[FailureStatus, re.Pattern[str]]] = [
    ("timeout", re.compile(r"did not finish within")),
    ("lost", re.compile(r"connection to .* lost|lost while")),
    (
        "unreachable",
        re.compile(
            r"cannot reach|connection to .* refused|unknown host|does not speak SSH|closed the connection during the "
            r"SSH handshake|host key for .* is unknown|has CHANGED|authentication (failed|to)|no usable SSH key|"
            r"ProxyCommand .* failed|jump host .* could not connect|SSH to .* failed"
        ),
    ),
]


def classify(error: BaseException) -> FailureStatus:
    """``unreachable`` (could not connect), ``lost`` (the connection dropped), ``timeout`` (the run took longer
    than --timeout), ``interrupted``, else ``failed`` (the device answered but the work failed)."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    text = getattr(error, "message", None) or str(error)
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return kind
    return "failed"


@dataclass
class Outcome(Generic[T]):
    """What one device's ``fn`` gave: ``value``, or ``error`` with its ``status``."""

    device: DeviceSpec
    value: Optional[T] = None
    error: Optional[BaseException] = None
    status: str = "ok"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def message(self) -> str:
        if self.error is None:
            return ""
        if isinstance(self.error, EdgepackError):
            return self.error.one_line()
        return printable(f"{type(self.error).__name__}: {self.error}")


# --------------------------------------------------------------------------- the live board


@dataclass
class _Row:
    state: str = "waiting"  # waiting | running | ok | failed
    step: str = ""
    done: int = 0
    total: int = 0
    started: float = 0.0
    ended: float = 0.0


@dataclass
class Board:
    """One line per device: state, done/total work items, the current step, elapsed time. A live table on a
    terminal; elsewhere (CI logs, -q off) one line when a device starts and one when it ends."""

    title: str
    names: list[str]
    totals: dict[str, int] = field(default_factory=dict)
    quiet: bool = False
    rows: dict[str, _Row] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    live: Any = None
    stopping: threading.Event = field(default_factory=threading.Event)  # set when the run is interrupted

    def __post_init__(self) -> None:
        self.rows = {n: _Row(total=self.totals.get(n, 0)) for n in self.names}

    def __enter__(self) -> "Board":
        from edgepack import ui

        self.quiet = self.quiet or ui._quiet
        if not self.quiet and console.is_terminal:
            from rich.live import Live

            self.live = Live(get_renderable=self.render, console=console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def render(self) -> Any:
        from rich.table import Table

        t = Table(title=safe(self.title), title_justify="left", show_edge=False, box=None)
        for c in ("", "device", "done", "s", "step"):
            t.add_column(c)
        icons = {"waiting": "[dim]·[/dim]", "running": "[yellow]…[/yellow]", "ok": "[green]✓[/green]"}
        now = time.monotonic()
        with self.lock:
            for name, r in self.rows.items():
                secs = (r.ended or now) - r.started if r.started else 0.0
                t.add_row(
                    icons.get(r.state, "[red]✗[/red]"),
                    safe(name),
                    f"{r.done}/{r.total}" if r.total else "",
                    f"{secs:.0f}" if r.started else "",
                    safe(r.step if len(r.step) <= 100 else r.step[:99] + "…"),
                )
        return t

    def _line(self, text: str) -> None:
        if not self.quiet and self.live is None:
            console.print(text, highlight=False)

    def start(self, name: str) -> None:
        with self.lock:
            r = self.rows[name]
            r.state, r.started = "running", time.monotonic()
        self._line(f"[yellow]…[/yellow] {safe(name)}: started")

    def step(self, name: str, text: str) -> None:
        with self.lock:
            self.rows[name].step = text

    def tick(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.rows[name].done += n

    def end(self, name: str, ok: bool, text: str) -> None:
        with self.lock:
            r = self.rows[name]
            r.state, r.ended, r.step = ("ok" if ok else "failed"), time.monotonic(), text
            secs = r.ended - r.started
            done = f" {r.done}/{r.total}" if r.total else ""
        icon = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self._line(f"{icon} {safe(name)}:{done} {safe(text)} [dim]({secs:.1f}s)[/dim]")


# --------------------------------------------------------------------------- the engine


def check_parallel(parallel: int) -> int:
    if not isinstance(parallel, int) or parallel < 1:
        raise UsageError(f"--parallel {parallel} is not a number of devices >= 1", "use e.g. --parallel 4")
    return parallel


def run_on_devices(
    devices: Sequence[DeviceSpec],
    fn: Callable[[DeviceSpec], T],
    parallel: int = DEFAULT_PARALLEL,
    on_done: Optional[Callable[[Outcome[T]], None]] = None,
    title: str = "devices",
    board: Optional[Board] = None,
    summary: Optional[Callable[[T], str]] = None,
) -> list[Outcome[T]]:
    """Run ``fn(device)`` for every device, at most ``parallel`` at a time; one :class:`Outcome` per device, in
    the order given. ``on_done`` is called in the calling thread as each device finishes (write results as
    they arrive there). ``fn`` raising marks its device failed (classified by :func:`classify`); the others
    go on. Interrupted (Ctrl-C/SIGTERM in the calling thread): the devices not started are cancelled, the open
    ones closed (their runners stop and clean up), then the interrupt is raised again."""
    check_parallel(parallel)
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UsageError(f"device {dup!r} is selected twice", "name each device once")
    board = board or Board(title, names)
    stop = board.stopping

    def work(device: DeviceSpec) -> Outcome[T]:
        t0 = time.monotonic()
        if stop.is_set():
            return Outcome(device, error=KeyboardInterrupt(), status="interrupted")
        board.start(device.name)
        try:
            with steps_to(lambda text: board.step(device.name, text)):
                value = fn(device)
            return Outcome(device, value=value, seconds=time.monotonic() - t0)
        except Exception as e:  # one device's failure, whatever it is, is that device's outcome
            if os.environ.get("EDGEPACK_DEBUG"):
                import traceback

                traceback.print_exc()
            status = "interrupted" if stop.is_set() else classify(e)
            return Outcome(device, error=e, status=status, seconds=time.monotonic() - t0)

    outcomes: dict[str, Outcome[T]] = {}
    with board, ThreadPoolExecutor(max_workers=min(parallel, max(1, len(devices)))) as pool:
        futures: dict[Future[Outcome[T]], DeviceSpec] = {pool.submit(work, d): d for d in devices}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    out = fut.result()
                    outcomes[out.device.name] = out
                    if out.ok:
                        board.end(out.device.name, True, summary(cast(T, out.value)) if summary else "done")
                    else:
                        board.end(out.device.name, False, f"{out.status}: {out.message()}")
                    if on_done is not None:
                        on_done(out)
        except BaseException:
            stop.set()
            for fut in pending:
                fut.cancel()
            devices_mod.close_all()
            wait(pending, timeout=60)
            raise
    return [outcomes[n] for n in names]


# --------------------------------------------------------------------------- sharding


def parse_shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``i/N`` (1 <= i <= N) -> (i, N)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise UsageError(
            f"bad --shard {text!r}", "use --shard i/N with shards numbered 1..N, e.g. --shard 2/4 in a 4-job matrix"
        )
    return int(m[1]), int(m[2])


def shard(
    bundles: Sequence[Path], devices: Sequence[DeviceSpec], index: int, count: int
) -> list[tuple[DeviceSpec, list[Path]]]:
    """Shard ``index`` of ``count`` (1-based) of the bundle x device pairs, the same in every job that is given
    the same bundles and devices in any order. Devices are sorted by name and bundles by file name. With at
    least ``count`` devices, whole devices are dealt out round-robin (device k -> shard k mod count + 1), so
    no two jobs time on one device at once; with fewer devices, the pairs, in (bundle, device) order, are
    dealt out round-robin (every job benches on its devices: right when each job's device is its own, e.g.
    ``local`` on each CI runner)."""
    devs = sorted(devices, key=lambda d: d.name)
    buns = sorted(bundles, key=lambda b: (b.name, str(b)))
    mine: dict[str, list[Path]] = {}
    if len(devs) >= count:
        for k, d in enumerate(devs):
            if k % count == index - 1:
                mine[d.name] = list(buns)
    else:
        pairs = [(b, d) for b in buns for d in devs]
        for k, (b, d) in enumerate(pairs):
            if k % count == index - 1:
                mine.setdefault(d.name, []).append(b)
    return [(d, mine[d.name]) for d in devs if d.name in mine]


# --------------------------------------------------------------------------- bench over devices


@dataclass
class FleetBench:
    """What a multi-device bench measured and could not."""

    records: list[BenchRecord]
    failures: list[BenchFailure]
    outcomes: list[Outcome[int]]

    @property
    def failed_devices(self) -> list[str]:
        return sorted({f.device_spec for f in self.failures})


def bench(
    work: Sequence[tuple[DeviceSpec, list[Path]]],
    options: BenchOptions,
    ssh: SSHOptions,
    parallel: int = DEFAULT_PARALLEL,
    on_change: Optional[Callable[[list[BenchRecord], list[BenchFailure], list[tuple[str, str]]], None]] = None,
) -> FleetBench:
    """Bench each device's bundles (in order, one connection and one runner upload per bundle as in a
    one-device bench; a bundle already in the device's cache is not uploaded again), ``parallel`` devices at
    a time. A bundle that fails on a device is a :class:`BenchFailure`; after an unreachable/lost/timed-out
    device its remaining bundles are ``not-run``. ``on_change(records, failures, pending)`` is called (under a
    lock) after every bundle x device pair, so results can be written as they arrive."""
    from edgepack.bencher import bench as bench_one

    lock = threading.Lock()
    records: list[BenchRecord] = []
    failures: list[BenchFailure] = []
    pending: list[tuple[str, str]] = [(b.name, d.name) for d, bs in work for b in bs]
    bundles_of = {d.name: bs for d, bs in work}
    board = Board(f"bench on {len(work)} device(s)", [d.name for d, _ in work], {d.name: len(bs) for d, bs in work})

    def emit(bundle: Path, device: DeviceSpec, item: "BenchRecord | BenchFailure") -> None:
        with lock:
            (records if isinstance(item, BenchRecord) else failures).append(item)  # type: ignore[arg-type]
            if (bundle.name, device.name) in pending:
                pending.remove((bundle.name, device.name))
            if on_change is not None:
                on_change(list(records), list(failures), list(pending))
        if isinstance(item, BenchRecord):
            board.tick(device.name)

    def fail(bundle: Path, device: DeviceSpec, status: FailureStatus, e: BaseException) -> BenchFailure:
        if isinstance(e, EdgepackError):
            return BenchFailure(
                bundle=bundle.name, device_spec=device.name, status=status, message=e.message, hint=e.hint
            )
        return BenchFailure(
            bundle=bundle.name, device_spec=device.name, status=status, message=f"{type(e).__name__}: {e}"
        )

    def on_device(device: DeviceSpec) -> int:
        bundles = bundles_of[device.name]
        first: Optional[Exception] = None
        for i, b in enumerate(bundles):
            try:
                emit(b, device, bench_one(b, device, options, ssh))
            except Exception as e:
                status = "interrupted" if board.stopping.is_set() else classify(e)
                emit(b, device, fail(b, device, status, e))
                first = first or e
                if status != "failed":  # the device is gone or stuck: its other bundles are not run
                    for rest in bundles[i + 1 :]:
                        emit(
                            rest,
                            device,
                            BenchFailure(
                                bundle=rest.name,
                                device_spec=device.name,
                                status="not-run",
                                message=f"not run: {device.name} was {status} before it",
                                hint=e.hint if isinstance(e, EdgepackError) else "",
                            ),
                        )
                    break
        if first is not None:
            raise first  # the device's outcome: failed, with its first error
        return len(bundles)

    outcomes = run_on_devices(
        [d for d, _ in work],
        on_device,
        parallel,
        board=board,
        summary=lambda n: f"{n} bundle(s) measured",
    )
    order = {(b.name, d.name): k for k, (d, bs) in enumerate(work) for b in bs}
    records.sort(key=lambda r: order.get((r.bundle, r.device_spec), 0))
    failures.sort(key=lambda f: order.get((f.bundle, f.device_spec), 0))
    return FleetBench(records, failures, outcomes)


def exit_code(total: int, failed: int) -> int:
    """0 when nothing failed, 5 when everything did, 6 when some did (the rest were measured and written)."""
    if failed == 0:
        return 0
    return 5 if failed >= total else EXIT_SOME_FAILED
