"""``edgepack deploy`` and ``edgepack bench``: put the bundle and runner on a device, run, read the JSON back."""

from __future__ import annotations

import json
import math
import os
import platform
import signal
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from edgepack import registry
from edgepack.bundle import sha256_file, verify_bundle
from edgepack.device_runners import runner_common
from edgepack.devices import DeviceSpec, Execution, SSHOptions, as_spec, open_device, pip_commands
from edgepack.errors import DeviceError, EdgepackError, UsageError
from edgepack.types import BenchOptions, BenchRecord, Manifest, RunResult
from edgepack.ui import step

_EXIT_MEANING = {
    runner_common.EXIT_RUNTIME_MISSING: "the runtime is missing on the device",
    runner_common.EXIT_BUNDLE_INVALID: "the bundle failed verification on the device",
    runner_common.EXIT_USAGE: "the runner rejected its arguments",
}


def _checked(bundle: Path) -> Manifest:
    manifest, problems = verify_bundle(bundle)
    if problems:
        raise EdgepackError(
            f"{bundle.name} failed verification: {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
            "rebuild the bundle; run edgepack verify for the full list",
        )
    return manifest


def _ssh_options(kwargs: dict[str, Any]) -> SSHOptions:
    fields = SSHOptions.__dataclass_fields__
    unknown = set(kwargs) - set(fields)
    if unknown:
        raise TypeError(f"unknown option(s): {sorted(unknown)}")
    return SSHOptions(**kwargs)


def deploy(bundle: Path, device: "str | DeviceSpec" = "local", **ssh: Any) -> str:
    """Upload the bundle and the runner; returns the bundle's path on the device."""
    _checked(bundle)
    sha = sha256_file(bundle)
    dev = open_device(device, _ssh_options(ssh))
    remote: str
    try:
        with step(f"upload runner and {bundle.name} to {dev.name}"):
            dev.put_runners()
            remote, _ = dev.put_bundle(bundle, sha)
        return remote
    finally:
        dev.close()


def split_kwargs(kwargs: dict[str, Any]) -> tuple[BenchOptions, SSHOptions]:
    """``edgepack.bench(**kwargs)``: timing settings, runtime flags (by their declared names) and SSH options."""
    timing = {k: kwargs.pop(k) for k in list(kwargs) if k in BenchOptions.__dataclass_fields__ and k != "flags"}
    if "delegate_options" in kwargs:  # the API's older spelling of the flag
        kwargs["delegate_option"] = kwargs.pop("delegate_options")
    names = {f.name for f in registry.bench_flags()}
    flags = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    return BenchOptions(**timing, flags=flags), _ssh_options(kwargs)


MAX_RUNS_LIMIT = 100_000_000  # --max-runs ceiling (every sample travels back in the result JSON)
TIMEOUT_BASE_SECONDS = 600.0


def default_timeout(min_seconds: float, repeat: int, cooldown: float) -> float:
    """--timeout when not given: 10 minutes for loading, warm-up, golden/eval runs and slow single
    inferences, plus twice the timed windows and their cool-downs."""
    return TIMEOUT_BASE_SECONDS + 2.0 * repeat * (min_seconds + cooldown)


def check_settings(o: BenchOptions) -> None:
    """Every bench setting checked before anything connects (nan/inf and negative values are usage errors)."""

    def bad(option: str, value: object, rule: str) -> NoReturn:
        raise UsageError(f"{option} {value} is out of range: {rule}", f"pass {option} {rule}")

    for option, value in (("--min-seconds", o.min_seconds), ("--cooldown", o.cooldown)):
        if not math.isfinite(value) or value < 0:
            bad(option, value, "as a finite number >= 0")
    if o.timeout is not None and (not math.isfinite(o.timeout) or o.timeout < 0):
        bad("--timeout", o.timeout, "as a finite number of seconds >= 0 (0 = no limit)")
    for option, value, low in (
        ("--runs", o.runs, 1),
        ("--repeat", o.repeat, 1),
        ("--warmup", o.warmup, 0),
        ("--threads", o.threads, 0),
        ("--max-runs", o.max_runs, 1),
    ):
        if value < low:
            bad(option, value, f">= {low}")
    if o.max_runs > MAX_RUNS_LIMIT:
        bad("--max-runs", o.max_runs, f"<= {MAX_RUNS_LIMIT}")
    if o.runs > o.max_runs:
        raise UsageError(
            f"--runs {o.runs} exceeds --max-runs {o.max_runs}",
            "lower --runs, or raise --max-runs (the loop never times more than --max-runs)",
        )


def bench(
    bundle: Path,
    device: "str | DeviceSpec" = "local",
    options: BenchOptions | None = None,
    ssh: SSHOptions | None = None,
) -> BenchRecord:
    """Upload (if needed) and run ``bundle`` on ``device`` with its format's runner.

    ``options.install_runtime``: if the device lacks the runtime, pip-install it into a venv in the device's
    edgepack cache (``<remote_dir>/venv``) and run there; later runs reuse that venv.
    ``options.repeat``: independent timing windows (``cooldown`` idle seconds between), so a report can tell
    run-to-run drift from a real change. ``options.flags``: the runtime's accelerator flags (edgepack/runtimes:
    ONNX ``ep``/``profile``, TFLite ``delegate``/``delegate_option``/``no_xnnpack``/``npu_model``, CoreML
    ``compute_units``); the result's ``placement`` says which ops the accelerator took.
    ``options.timeout``: seconds the runner may take (default :func:`default_timeout`; 0 = no limit). On a
    timeout, an interrupt or a lost connection the runner stops and cleans up on the device (it watches its
    stdin)."""
    from edgepack import sustained as sustained_mod

    options = options or BenchOptions()
    check_settings(options)
    options = sustained_mod.check_settings(options)  # --sustained in seconds from here on
    timeout = options.timeout
    if timeout is None:
        timeout = default_timeout(options.min_seconds, options.repeat, options.cooldown)
        timeout += 2.0 * float(options.sustained)
    manifest = _checked(bundle)
    runtime = registry.runtime(manifest.format)
    extra = runtime.runner_args(manifest, options.flags)
    sha = sha256_file(bundle)
    spec = as_spec(device)
    ssh = spec.options(ssh or SSHOptions())  # a copy, with an inventory device's own settings
    # the runner enforces the timeout itself (and cleans up); edgepack's own wait is a backstop behind it
    ssh.run_timeout = timeout + 30.0 if timeout else None
    if options.install_runtime and spec.local:
        raise UsageError(
            "--install-runtime is for SSH devices",
            f"install the runtime here with: {pip_commands('pip', runtime.install_steps(platform.machine()))}",
        )
    with step(f"connect to {spec.name}"):
        dev = open_device(spec, ssh)
    try:
        with step(f"upload runner and {bundle.name} to {dev.name}"):
            runners = dev.put_runners()
            remote, uploaded = dev.put_bundle(bundle, sha)
            workdir = dev.workdir()
        argv = runner_argv(f"{runners}/{runtime.runner}", remote, options, timeout, extra, workdir)
        if options.install_runtime and dev.venv_python():
            dev.python = dev.venv_python()
        what = f"run {runtime.name} on {dev.name} (≥{options.runs} runs, ≥{options.min_seconds:g}s" + (
            f", ×{options.repeat} windows)" if options.repeat > 1 else ")"
        )
        if options.sustained:
            what = f"run {runtime.name} on {dev.name} (sustained {float(options.sustained):g}s)"
        if options.cpus:
            what = what[:-1] + f", cores {options.cpus})"
        with step(what) as update:
            res = dev.run(argv, on_stderr_line=sustained_mod.Relay(update, what) if options.sustained else None)
        if options.install_runtime and res.code == runner_common.EXIT_RUNTIME_MISSING:
            with step(f"install {' '.join(runtime.device_packages)} into a venv on {dev.name}"):
                dev.install_runtime(runtime.install_steps(dev.machine()))
            with step(what) as update:
                res = dev.run(argv, on_stderr_line=sustained_mod.Relay(update, what) if options.sustained else None)
    finally:
        dev.close()
    return make_record(bundle, manifest, sha, dev.name, uploaded, _parse(res, dev.name), ssh.remote_dir)


def runner_argv(
    runner: str, remote: str, options: BenchOptions, timeout: float, extra: list[str], workdir: str | None
) -> list[str]:
    """The runner's command line for one bundle (``--serve`` is added by ``bench --until-conclusive``)."""
    argv = [runner, remote, *options.runner_argv(), "--timeout", str(timeout), "--watch-stdin"]
    for env, flag in (
        ("EDGEPACK_MAX_UNPACKED_BYTES", "--max-unpacked-bytes"),
        ("EDGEPACK_MAX_RATIO", "--max-ratio"),
    ):
        if os.environ.get(env, "").isdigit():  # the limits this machine allows, also on the device
            argv += [flag, os.environ[env]]
    argv += extra
    if workdir:
        argv += ["--workdir", workdir]
    return argv


def make_record(
    bundle: Path, manifest: Manifest, sha: str, device: str, uploaded: bool, result: RunResult, remote_dir: str
) -> BenchRecord:
    if result.bundle_sha256 != sha:
        raise DeviceError(
            f"the device ran a bundle with sha256 {result.bundle_sha256[:12]}..., expected {sha[:12]}...",
            f"the cached copy on the device is stale or corrupt; remove "
            f"{remote_dir}/bundles there (relative to the home directory)",
        )
    return BenchRecord(
        bundle=bundle.name,
        bundle_path=str(bundle),
        bundle_bytes=bundle.stat().st_size,
        device_spec=device,
        format=manifest.format,
        quantization=manifest.quantization.mode,
        min_cosine=manifest.validation.thresholds.get("min_cosine"),
        uploaded=uploaded,
        result=result,
        npu_placement=manifest.npu.placement if manifest.npu else None,
        manifest=manifest,
    )


def _parse(res: Execution, device: str) -> RunResult:
    from edgepack.sustained import without_progress

    lines = without_progress(res.stderr).strip().splitlines()
    tail = "\n".join(lines[-5:])
    runner_line = next((ln for ln in reversed(lines) if ln.startswith("edgepack-runner: error:")), None)
    if res.code != 0:
        if runner_line:  # the runner's own one-line error: "message -- hint"
            message, _, hint = runner_line[len("edgepack-runner: error: ") :].partition(" -- ")
        elif res.code < 0 or res.code >= 128:
            signum = abs(res.code) % 128
            name = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
            message = f"the runner was killed by signal {signum} ({name})"
            hint = (
                "SIGKILL usually means the device ran out of memory (dmesg shows the OOM killer)"
                if signum == 9
                else "check the device's logs"
            )
        else:
            message = _EXIT_MEANING.get(res.code) or (lines[-1] if lines else f"exit code {res.code}")
            hint = ""
        raise DeviceError(
            f"runner failed on {device} (exit {res.code}): {message}",
            hint or (f"runner stderr tail: {tail[-400:]}" if tail else "check the device"),
        )
    try:
        data = json.loads(res.stdout)
        return RunResult.model_validate(data)
    except (ValueError, ValidationError) as e:
        raise DeviceError(
            f"the runner on {device} printed no valid result JSON ({str(e).splitlines()[0][:200]})",
            f"runner stderr tail: {tail[-400:]}",
        )
