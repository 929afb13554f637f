"""What every edgepack device runner needs, whatever the runtime.

This folder travels to the device whole. It imports only the standard library and numpy (never edgepack,
never a framework) and runs on Python 3.9+. A runtime module (``onnx_runner.py``, ...) subclasses
:class:`Backend` and calls :func:`main`; everything else lives here, so every runtime reports the same keys:

- ``bundle``:  reading a bundle -- manifest, bomb limits, sha256 checks, safe extraction, golden/eval data
- ``tensors``: batches, (de)quantization, random inputs, output agreement (``compare``)
- ``timing``:  warm-up, timed runs and windows, statistics
- ``system``:  device info, CPU fingerprint, temperature, memory, threads
- ``cpus``:    per-core facts, core clusters (big.LITTLE), pinning (``--cpus``)
- ``sustained``: ``--sustained`` windows, clocks/temperature/throttling sensors, the verdict
- ``backend``: the interface a runtime implements
- ``result``:  the result document (its definition: ``edgepack.types.RunResult``)
- ``cli``:     flags, the main flow, watchdogs, exit codes, one-line errors, JSON on stdout
- ``errors``:  ``RunnerError`` and the exit codes

The names below are the public ones: runtime modules use ``runner_common.X`` (imported as ``runner_common`` when
run as a script, as ``edgepack.device_runners.runner_common`` in edgepack).
"""

from .backend import Analysis, Backend, require
from .bundle import (
    INPUT_PREFIX,
    LABELS_KEY,
    MANIFEST_MAJOR,
    MANIFEST_MEMBER,
    MANIFEST_SCHEMA_PREFIX,
    MAX_MANIFEST_BYTES,
    OUTPUT_PREFIX,
    RATIO_MIN_BYTES,
    Bundle,
    check_zip_headers,
    declared_sizes,
    load_npz,
    npz_problems,
    read_manifest,
    remove_stale_workdirs,
    set_limits,
    sha256_file,
    split_npz,
    verify_zip,
)
from .cli import KILL_GRACE_SECONDS, build_parser, main, run, start_watchdogs
from .cpus import clusters as core_clusters
from .errors import (
    EXIT_BUNDLE_INVALID,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_RUNTIME_MISSING,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    RunnerError,
)
from .result import RESULT_SCHEMA, document
from .system import cpu_fingerprint, cpu_temperature, device_info, peak_rss_mb, pid_alive, process_threads, read_text
from .tensors import batch_size, compare, dequantize_output, iter_batches, quantize_input, random_inputs
from .timing import percentile, summarize, timing_loop, timing_windows

__all__ = [
    "Analysis",
    "Backend",
    "require",
    "INPUT_PREFIX",
    "LABELS_KEY",
    "MANIFEST_MAJOR",
    "MANIFEST_MEMBER",
    "MANIFEST_SCHEMA_PREFIX",
    "MAX_MANIFEST_BYTES",
    "OUTPUT_PREFIX",
    "RATIO_MIN_BYTES",
    "Bundle",
    "check_zip_headers",
    "declared_sizes",
    "load_npz",
    "npz_problems",
    "read_manifest",
    "remove_stale_workdirs",
    "set_limits",
    "sha256_file",
    "split_npz",
    "verify_zip",
    "KILL_GRACE_SECONDS",
    "build_parser",
    "main",
    "run",
    "start_watchdogs",
    "core_clusters",
    "EXIT_BUNDLE_INVALID",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_RUNTIME_MISSING",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "RunnerError",
    "RESULT_SCHEMA",
    "document",
    "cpu_fingerprint",
    "cpu_temperature",
    "device_info",
    "peak_rss_mb",
    "pid_alive",
    "process_threads",
    "read_text",
    "batch_size",
    "compare",
    "dequantize_output",
    "iter_batches",
    "quantize_input",
    "random_inputs",
    "percentile",
    "summarize",
    "timing_loop",
    "timing_windows",
]
