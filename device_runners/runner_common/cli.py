"""The runner's command line and main flow: flags, watchdogs and signals, the measurement, one-line errors,
exit codes, and the JSON document on stdout."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import signal
import sys
import time
from types import FrameType
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from . import bundle as bundle_mod
from . import cpus as cpus_mod
from . import sustained as sustained_mod
from .backend import Backend
from .bundle import Bundle, load_npz, split_npz
from .errors import EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, RunnerError
from .result import document, write
from .system import cpu_temperature, device_info, peak_rss_mb, process_threads
from .tensors import batch_size, compare, dequantize_output, iter_batches, quantize_input, random_inputs
from .timing import summarize, timing_loop, timing_windows

KILL_GRACE_SECONDS = 5.0


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("bundle", help="path to a .edgepack bundle")
    p.add_argument("--runs", type=int, default=50, help="minimum timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="keep timing until at least this many seconds have passed (default 1)",
    )
    p.add_argument(
        "--max-runs",
        type=int,
        default=10000,
        help="stop after this many timed runs even if --min-seconds is not reached (default 10000)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="independent timing windows, each meeting --runs/--min-seconds (default 1)",
    )
    p.add_argument(
        "--cooldown", type=float, default=1.0, help="idle seconds before each timing window after the first (default 1)"
    )
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = runtime default")
    p.add_argument(
        "--sustained",
        type=float,
        default=0,
        metavar="SECONDS",
        help="sustained mode: back-to-back timing windows for this long, with clocks, temperatures and "
        "throttling flags read after each window, and a verdict (stable/throttled/drifting); 0 = off",
    )
    p.add_argument(
        "--window",
        type=float,
        default=0,
        metavar="SECONDS",
        help="sustained mode: seconds per window (0 = about 1/24 of --sustained, between 0.25 and 10)",
    )
    p.add_argument(
        "--drift-tolerance",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="sustained mode: sustained p50 within this fraction of the cold p50 is stable (default 0.05)",
    )
    p.add_argument(
        "--cpus",
        default=None,
        metavar="LIST|big|little|all",
        help="pin the runner (and the runtime's threads) to these cores, e.g. 4-7 or big; --threads 0 then "
        "means one thread per core",
    )
    p.add_argument("--workdir", default=None, help="where to extract the bundle (default: system temp)")
    p.add_argument("--no-golden", action="store_true", help="skip the golden agreement check")
    p.add_argument("--no-eval", action="store_true", help="skip the accuracy run")
    p.add_argument(
        "--timeout",
        type=float,
        default=0,
        help="stop (and clean up) when the run takes longer than this many seconds; 0 = no limit",
    )
    p.add_argument(
        "--watch-stdin",
        action="store_true",
        help="stop (and clean up) when stdin closes: edgepack went away (Ctrl-C, lost connection)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="time windows on request: after loading, read 'window [I]' or 'finish' lines on stdin, print one "
        "JSON line per window, then one result per bundle (edgepack bench --until-conclusive); implies --watch-stdin",
    )
    p.add_argument(
        "--serve-also",
        action="append",
        metavar="BUNDLE",
        help="with --serve: another bundle of the same runtime, loaded in this process too (window I times the "
        "I-th bundle, 0 = the first)",
    )
    p.add_argument(
        "--max-unpacked-bytes",
        type=int,
        default=None,
        help="limit on the bundle's unpacked size (default %d or EDGEPACK_MAX_UNPACKED_BYTES)"
        % bundle_mod.MAX_UNPACKED_BYTES,
    )
    p.add_argument(
        "--max-ratio",
        type=int,
        default=None,
        help="limit on a large member's unpacked:packed ratio (default %d or EDGEPACK_MAX_RATIO)"
        % bundle_mod.MAX_RATIO,
    )
    return p


# --------------------------------------------------------------------------- stopping: deadline, stdin, signals

_stop: dict[str, Any] = {"reason": None, "timeout": 0}


class _Terminated(BaseException):
    pass


def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
    raise _Terminated(signum)


def _stop_message() -> Optional[tuple[str, str, int]]:
    if _stop["reason"] == "timeout":
        return (
            "the run did not finish within %gs" % _stop["timeout"],
            "raise --timeout or lower --runs/--min-seconds/--repeat",
            EXIT_TIMEOUT,
        )
    if _stop["reason"] == "stdin":
        return ("stopped: edgepack went away (interrupted or disconnected)", "", 128 + signal.SIGTERM)
    return None


def _error_line(message: str, hint: str = "") -> str:
    return "edgepack-runner: error: %s%s\n" % (message, (" -- " + hint) if hint else "")


def _stop_self(reason: str) -> None:
    """Called from a watchdog thread: SIGTERM ourselves (the main thread cleans up), then SIGKILL our process
    group if the main thread is stuck in native code."""
    if _stop["reason"] is not None:
        return
    _stop["reason"] = reason
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except OSError:
        pass
    time.sleep(KILL_GRACE_SECONDS)
    stopped = _stop_message()
    try:
        if stopped:
            sys.stderr.write(_error_line(stopped[0], stopped[1]))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


_requests: "Optional[queue.Queue[str]]" = None


def start_watchdogs(timeout: float, watch_stdin: bool, serve: bool = False) -> None:
    """A deadline and/or stdin EOF (the controlling edgepack or its SSH channel went away) stop the run.
    With ``serve`` the stdin lines before EOF are the requests of :func:`next_request`."""
    import threading

    global _requests
    if serve:
        _requests = queue.Queue()

    if watch_stdin:
        try:
            os.setpgid(0, 0)  # our own process group, so the kill takes everything we started
        except (OSError, AttributeError):
            pass

        def reader() -> None:
            try:
                if _requests is not None:
                    for line in iter(sys.stdin.readline, ""):
                        _requests.put(line)
                        if line.strip() == "finish":
                            return  # stdin may close now: the result is on its way
                else:
                    while os.read(0, 4096):
                        pass
            except (OSError, ValueError):
                pass
            _stop_self("stdin")

        threading.Thread(target=reader, name="edgepack-stdin-watch", daemon=True).start()
    if timeout and timeout > 0:
        _stop["timeout"] = timeout

        def timer() -> None:
            time.sleep(timeout)
            _stop_self("timeout")

        threading.Thread(target=timer, name="edgepack-deadline", daemon=True).start()


def next_request() -> str:
    """The next request line of ``--serve`` (blocks; stdin EOF stops the runner from the reader thread)."""
    assert _requests is not None
    while True:
        try:
            return _requests.get(timeout=1.0)  # a timed wait: signals reach the main thread between waits
        except queue.Empty:
            continue


def emit_line(event: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, allow_nan=False, sort_keys=True) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- the measurement

Specs = Sequence[Mapping[str, Any]]


def _run_all(
    predict: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    feeds_iter: Iterable[Mapping[str, Any]],
    output_specs: Specs,
) -> dict[str, Any]:
    """Run every batch; return {output_name: concatenated array (dequantized)}."""
    import numpy as np

    collected: dict[str, list[Any]] = dict((s["name"], []) for s in output_specs)
    for feeds in feeds_iter:
        outs = predict(feeds)
        for s in output_specs:
            collected[s["name"]].append(dequantize_output(outs[s["name"]], s))
    return dict((k, np.concatenate(v, axis=0)) for k, v in collected.items() if v)


class _Loaded:
    """One bundle extracted, verified and loaded by its backend, ready to time (a serving runner may hold two)."""

    def __init__(self, backend: Backend, args: argparse.Namespace, path: str, stack: contextlib.ExitStack) -> None:
        self.backend = backend
        self.bundle = stack.enter_context(Bundle(path, args.workdir, args.max_unpacked_bytes))
        manifest = self.manifest = self.bundle.manifest
        if manifest.get("runtime") != backend.runtime:
            raise RunnerError(
                "bundle is for runtime %r, this runner runs %r" % (manifest.get("runtime"), backend.runtime),
                "use the %s runner for this bundle" % manifest.get("runtime"),
                EXIT_USAGE,
            )
        self.in_specs = manifest["inputs"]
        self.out_specs = manifest["outputs"]

        self.pinned = None
        if args.cpus:  # before the model loads: the runtime's threads inherit the affinity
            self.pinned = cpus_mod.pin(args.cpus)
            if not args.threads:
                args.threads = len(self.pinned)
        self.member = backend.model_member(manifest, args)  # e.g. the NPU model of an Ethos-U bundle
        self.model_path = self.bundle.member(self.member)
        t0 = time.perf_counter()
        backend.load(self.model_path, manifest, args)
        self.load_ms = (time.perf_counter() - t0) * 1000.0

        self.golden = None
        golden_member = (manifest.get("golden") or {}).get("member")
        if golden_member:
            self.golden = split_npz(load_npz(self.bundle.member(golden_member)))
        if self.golden and self.golden[0]:
            self.timing_feeds: Mapping[str, Any] = next(iter_batches(self.golden[0], self.in_specs))
        else:
            self.timing_feeds = random_inputs(self.in_specs)

        t0 = time.perf_counter()
        self.predict(self.timing_feeds)
        self.first_ms = (time.perf_counter() - t0) * 1000.0

    def quantized(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return dict((s["name"], quantize_input(feeds[s["name"]], s)) for s in self.in_specs)

    def predict(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.backend.run(self.quantized(feeds))

    def timed(self) -> object:
        return self.predict(self.timing_feeds)

    def document(
        self,
        args: argparse.Namespace,
        device: dict[str, Any],
        samples: list[float],
        sizes: list[int],
        elapsed: float,
        sustained: Optional[dict[str, Any]] = None,
        runs: Optional[int] = None,
    ) -> dict[str, Any]:
        """The golden and eval checks and the analysis (after, and separate from, the timed runs), and the
        result document."""
        backend, in_specs, out_specs, golden = self.backend, self.in_specs, self.out_specs, self.golden
        latency = summarize(samples, sizes if (len(sizes) > 1 or sustained) else None)
        runs = len(samples) if runs is None else runs

        validation = None
        if golden and golden[0] and not args.no_golden:
            got = _run_all(self.predict, iter_batches(golden[0], in_specs), out_specs)
            validation = {}
            for s in out_specs:
                ref = golden[1].get(s["name"])
                if ref is not None and s["name"] in got:
                    validation[s["name"]] = compare(ref[: len(got[s["name"]])], got[s["name"]])

        accuracy = None
        eval_member = (self.manifest.get("eval") or {}).get("member")
        if eval_member and not args.no_eval:
            import numpy as np

            inputs, _, labels = split_npz(load_npz(self.bundle.member(eval_member)))
            got = _run_all(self.predict, iter_batches(inputs, in_specs), out_specs)
            logits = got[out_specs[0]["name"]]
            pred = np.argmax(logits.reshape(len(logits), -1), axis=-1)
            labels = np.asarray(labels).reshape(-1)[: len(pred)]
            accuracy = {"top1": float(np.mean(pred == labels)), "n": int(len(labels))}

        # op placement / per-op timing, after (and separate from) the timed runs
        extra = backend.analyze(self.quantized(self.timing_feeds))

        return document(
            bundle_sha256=self.bundle.sha256,
            bundle={
                "format": self.manifest.get("format"),
                "quantization": (self.manifest.get("quantization") or {}).get("mode"),
                "model": self.member,
                "model_bytes": os.path.getsize(self.model_path),
            },
            device=device,
            settings={
                "runs": args.runs,
                "warmup": args.warmup,
                "min_seconds": args.min_seconds,
                "repeat": len(sizes) if args.serve else args.repeat,
                "cooldown": args.cooldown if (len(sizes) > 1 if args.serve else args.repeat > 1) else None,
                "threads": args.threads or None,
                "max_runs": args.max_runs,
                **({"served": True} if args.serve else {}),
                **({"sustained": args.sustained, "window": sustained["window_s"]} if sustained else {}),
                **({"cpus": args.cpus} if args.cpus else {}),
            },
            runtime_details=backend.details(),
            load_ms=self.load_ms,
            first_inference_ms=self.first_ms,
            latency_ms=latency,
            timed_seconds=elapsed,
            throughput_ips=runs * batch_size(in_specs[0]) / elapsed if elapsed > 0 else None,
            peak_rss_mb=peak_rss_mb(),
            process_threads=process_threads(),
            validation=validation,
            accuracy=accuracy,
            placement=extra.get("placement"),
            op_timing=extra.get("op_timing"),
            sustained=sustained,
            warnings=backend.warnings(self.manifest),
        )


def _device(backend: Backend, temps: list[Optional[float]]) -> dict[str, Any]:
    device = device_info(backend.runtime, backend.version())
    temps.insert(0, device["cpu"]["temperature_c"])
    return device


def _temperatures(
    device: dict[str, Any], temps: list[Optional[float]], cpus: Optional[str], read_now: bool = True
) -> None:
    if read_now:
        temps.append(cpu_temperature())
    device["cpu"]["temperature_end_c"] = temps[-1]
    known = [t for t in temps if t is not None]
    device["cpu"]["temperature_max_c"] = max(known) if known else None
    device["cpu"].update(cpus_mod.facts(cpus))


def run(backend: Backend, args: argparse.Namespace) -> dict[str, Any]:
    """The whole measurement of one bundle with ``backend``; returns the result document."""
    bundle_mod.set_limits(args.max_unpacked_bytes, args.max_ratio)
    with contextlib.ExitStack() as stack:
        loaded = _Loaded(backend, args, args.bundle, stack)
        temps: list[Optional[float]] = []
        device = _device(backend, temps)
        sustained = None
        if args.sustained:
            sustained, samples, sizes, elapsed = sustained_mod.measure(
                loaded.timed,
                args.sustained,
                args.window,
                args.warmup,
                args.max_runs,
                args.drift_tolerance,
                loaded.pinned or cpus_mod.affinity() or cpus_mod.present_cpus(),
                progress=_progress,
            )
            temps += [w["temperature_c"] for w in sustained["windows"]]
            _temperatures(device, temps, args.cpus, read_now=False)
            runs = sustained["runs"]
        else:
            samples, sizes, elapsed = timing_windows(
                loaded.timed,
                args.warmup,
                args.runs,
                args.min_seconds,
                args.max_runs,
                args.repeat,
                args.cooldown,
                between=lambda: temps.append(cpu_temperature()),
            )
            _temperatures(device, temps, args.cpus)
            runs = len(samples)
        return loaded.document(args, device, samples, sizes, elapsed, sustained, runs)


def serve(backend: Backend, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--serve``: the bundle (and ``--serve-also`` bundles, each with its own backend, in this one process so
    that nothing about the process differs between them) loaded once, then timing windows on request:
    ``window [I]`` times bundle I (0 = the first) and prints its samples as one JSON line; ``finish`` ends.
    Returns one result document per bundle, in order."""
    bundle_mod.set_limits(args.max_unpacked_bytes, args.max_ratio)
    with contextlib.ExitStack() as stack:
        loaded = [_Loaded(backend, args, args.bundle, stack)]
        for path in args.serve_also or []:
            other = type(backend)()
            other.check()
            loaded.append(_Loaded(other, args, path, stack))
        temps: list[Optional[float]] = []
        device = _device(backend, temps)
        emit_line(
            {
                "event": "ready",
                "load_ms": [x.load_ms for x in loaded],
                "first_inference_ms": [x.first_ms for x in loaded],
            }
        )
        samples: list[list[float]] = [[] for _ in loaded]
        sizes: list[list[int]] = [[] for _ in loaded]
        elapsed = [0.0 for _ in loaded]
        while True:
            words = next_request().split()
            if words == ["finish"]:
                break
            if not words or words[0] != "window" or len(words) > 2:
                raise RunnerError(
                    "unknown request %r" % " ".join(words)[:40], "request 'window [I]' or 'finish'", EXIT_USAGE
                )
            i = int(words[1]) if len(words) == 2 and words[1].isdigit() else 0 if len(words) == 1 else -1
            if not 0 <= i < len(loaded):
                raise RunnerError(
                    "no bundle %r to time" % words[-1], "request window 0..%d" % (len(loaded) - 1), EXIT_USAGE
                )
            got, seconds = timing_loop(loaded[i].timed, args.warmup, args.runs, args.min_seconds, args.max_runs)
            samples[i].extend(got)
            sizes[i].append(len(got))
            elapsed[i] += seconds
            emit_line(
                {
                    "event": "window",
                    "bundle": i,
                    "window": len(sizes[i]),
                    "samples": [round(x, 6) for x in got],
                    "seconds": seconds,
                }
            )
            temps.append(cpu_temperature())
        if not all(sizes):
            raise RunnerError("finished before every bundle had a timing window", "request window I first", EXIT_USAGE)
        _temperatures(device, temps, args.cpus)
        return [x.document(args, dict(device), samples[i], sizes[i], elapsed[i]) for i, x in enumerate(loaded)]


PROGRESS_PREFIX = "edgepack-runner: progress "


def _progress(state: dict[str, Any]) -> None:
    """One progress line on stderr (edgepack relays it: elapsed/total, the window's p50, temperature, clock)."""
    import json

    try:
        sys.stderr.write(PROGRESS_PREFIX + json.dumps(state, allow_nan=False, sort_keys=True) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def main(backend: Backend, argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of a runtime module; prints exactly one JSON document on success and returns the exit code."""
    parser = build_parser("edgepack %s device runner" % backend.runtime)
    backend.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.runs < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--repeat and --runs must be >= 1, --warmup and --threads >= 0")
    if (
        not (math.isfinite(args.min_seconds) and math.isfinite(args.cooldown) and math.isfinite(args.timeout))
        or args.min_seconds < 0
        or args.cooldown < 0
        or args.timeout < 0
    ):
        parser.error("--min-seconds, --cooldown and --timeout must be finite and >= 0")
    if args.runs > args.max_runs:
        parser.error("--runs %d exceeds --max-runs %d" % (args.runs, args.max_runs))
    if args.sustained:
        if not all(math.isfinite(x) and x >= 0 for x in (args.sustained, args.window, args.drift_tolerance)):
            parser.error("--sustained, --window and --drift-tolerance must be finite and >= 0")
        if args.repeat > 1:
            parser.error("--sustained makes its own windows: drop --repeat")
        n, _ = sustained_mod.window_seconds(args.sustained, args.window)
        if n < sustained_mod.MIN_WINDOWS:
            parser.error(
                "--sustained %gs gives %d window(s); at least %d are needed (a longer --sustained or a shorter "
                "--window)" % (args.sustained, n, sustained_mod.MIN_WINDOWS)
            )
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _on_signal)
    try:
        start_watchdogs(args.timeout, args.watch_stdin or args.serve, args.serve)
        backend.check()
        results = serve(backend, args) if args.serve else [run(backend, args)]
    except RunnerError as e:
        sys.stderr.write(_error_line(e.message, e.hint))
        return e.code
    except _Terminated as e:
        stopped = _stop_message()
        if stopped:
            message, hint, code = stopped
            sys.stderr.write(_error_line(message, hint))
            return code
        sys.stderr.write("edgepack-runner: error: terminated by signal %s\n" % e.args[0])
        return 128 + int(e.args[0])
    except MemoryError:
        sys.stderr.write("edgepack-runner: error: out of memory on the device\n")
        return EXIT_ERROR
    except Exception as e:  # report anything unexpected on one line, traceback above it
        import traceback

        traceback.print_exc()
        sys.stderr.write("edgepack-runner: error: %s: %s\n" % (type(e).__name__, e))
        return EXIT_ERROR
    for result in results:
        write(result, sys.stdout)
    return EXIT_OK
