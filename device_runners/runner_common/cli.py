"""The runner's command line and main flow: flags, watchdogs and signals, the measurement, one-line errors,
exit codes, and the JSON document on stdout."""

from __future__ import annotations

import argparse
import math
import os
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
from .timing import summarize, timing_windows

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


def start_watchdogs(timeout: float, watch_stdin: bool) -> None:
    """A deadline and/or stdin EOF (the controlling edgepack or its SSH channel went away) stop the run."""
    import threading

    if watch_stdin:
        try:
            os.setpgid(0, 0)  # our own process group, so the kill takes everything we started
        except (OSError, AttributeError):
            pass

        def reader() -> None:
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            _stop_self("stdin")

        threading.Thread(target=reader, name="edgepack-stdin-watch", daemon=True).start()
    if timeout and timeout > 0:
        _stop["timeout"] = timeout

        def timer() -> None:
            time.sleep(timeout)
            _stop_self("timeout")

        threading.Thread(target=timer, name="edgepack-deadline", daemon=True).start()


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


def run(backend: Backend, args: argparse.Namespace) -> dict[str, Any]:
    """The whole measurement of one bundle with ``backend``; returns the result document."""
    bundle_mod.set_limits(args.max_unpacked_bytes, args.max_ratio)
    with Bundle(args.bundle, args.workdir, args.max_unpacked_bytes) as bundle:
        manifest = bundle.manifest
        if manifest.get("runtime") != backend.runtime:
            raise RunnerError(
                "bundle is for runtime %r, this runner runs %r" % (manifest.get("runtime"), backend.runtime),
                "use the %s runner for this bundle" % manifest.get("runtime"),
                EXIT_USAGE,
            )
        in_specs = manifest["inputs"]
        out_specs = manifest["outputs"]

        pinned = None
        if args.cpus:  # before the model loads: the runtime's threads inherit the affinity
            pinned = cpus_mod.pin(args.cpus)
            if not args.threads:
                args.threads = len(pinned)
        member = backend.model_member(manifest, args)  # e.g. the NPU model of an Ethos-U bundle
        model_path = bundle.member(member)
        t0 = time.perf_counter()
        backend.load(model_path, manifest, args)
        load_ms = (time.perf_counter() - t0) * 1000.0

        def quantized(feeds: Mapping[str, Any]) -> dict[str, Any]:
            return dict((s["name"], quantize_input(feeds[s["name"]], s)) for s in in_specs)

        def predict(feeds: Mapping[str, Any]) -> Mapping[str, Any]:
            return backend.run(quantized(feeds))

        golden = None
        golden_member = (manifest.get("golden") or {}).get("member")
        if golden_member:
            golden = split_npz(load_npz(bundle.member(golden_member)))
        if golden and golden[0]:
            timing_feeds: Mapping[str, Any] = next(iter_batches(golden[0], in_specs))
        else:
            timing_feeds = random_inputs(in_specs)

        t0 = time.perf_counter()
        predict(timing_feeds)
        first_ms = (time.perf_counter() - t0) * 1000.0

        device = device_info(backend.runtime, backend.version())
        temps = [device["cpu"]["temperature_c"]]
        sustained = None
        if args.sustained:
            sustained, samples, sizes, elapsed = sustained_mod.measure(
                lambda: predict(timing_feeds),
                args.sustained,
                args.window,
                args.warmup,
                args.max_runs,
                args.drift_tolerance,
                pinned or cpus_mod.affinity() or cpus_mod.present_cpus(),
                progress=_progress,
            )
            temps += [w["temperature_c"] for w in sustained["windows"]]
            runs = sustained["runs"]
        else:
            samples, sizes, elapsed = timing_windows(
                lambda: predict(timing_feeds),
                args.warmup,
                args.runs,
                args.min_seconds,
                args.max_runs,
                args.repeat,
                args.cooldown,
                between=lambda: temps.append(cpu_temperature()),
            )
            temps.append(cpu_temperature())
            runs = len(samples)
        device["cpu"]["temperature_end_c"] = temps[-1]
        known = [t for t in temps if t is not None]
        device["cpu"]["temperature_max_c"] = max(known) if known else None
        device["cpu"].update(cpus_mod.facts(args.cpus))
        latency = summarize(samples, sizes if (args.repeat > 1 or sustained) else None)

        validation = None
        if golden and golden[0] and not args.no_golden:
            got = _run_all(predict, iter_batches(golden[0], in_specs), out_specs)
            validation = {}
            for s in out_specs:
                ref = golden[1].get(s["name"])
                if ref is not None and s["name"] in got:
                    validation[s["name"]] = compare(ref[: len(got[s["name"]])], got[s["name"]])

        accuracy = None
        eval_member = (manifest.get("eval") or {}).get("member")
        if eval_member and not args.no_eval:
            import numpy as np

            inputs, _, labels = split_npz(load_npz(bundle.member(eval_member)))
            got = _run_all(predict, iter_batches(inputs, in_specs), out_specs)
            logits = got[out_specs[0]["name"]]
            pred = np.argmax(logits.reshape(len(logits), -1), axis=-1)
            labels = np.asarray(labels).reshape(-1)[: len(pred)]
            accuracy = {"top1": float(np.mean(pred == labels)), "n": int(len(labels))}

        # op placement / per-op timing, after (and separate from) the timed runs
        extra = backend.analyze(quantized(timing_feeds))

        return document(
            bundle_sha256=bundle.sha256,
            bundle={
                "format": manifest.get("format"),
                "quantization": (manifest.get("quantization") or {}).get("mode"),
                "model": member,
                "model_bytes": os.path.getsize(model_path),
            },
            device=device,
            settings={
                "runs": args.runs,
                "warmup": args.warmup,
                "min_seconds": args.min_seconds,
                "repeat": args.repeat,
                "cooldown": args.cooldown if args.repeat > 1 else None,
                "threads": args.threads or None,
                "max_runs": args.max_runs,
                **({"sustained": args.sustained, "window": sustained["window_s"]} if sustained else {}),
                **({"cpus": args.cpus} if args.cpus else {}),
            },
            runtime_details=backend.details(),
            load_ms=load_ms,
            first_inference_ms=first_ms,
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
        )


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
        start_watchdogs(args.timeout, args.watch_stdin)
        backend.check()
        result = run(backend, args)
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
    write(result, sys.stdout)
    return EXIT_OK
