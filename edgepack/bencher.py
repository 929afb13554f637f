"""``edgepack deploy`` and ``edgepack bench``: put the bundle and runner on a device, run, read the JSON back."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from pydantic import ValidationError

from edgepack import registry
from edgepack.bundle import sha256_file, verify_bundle
from edgepack.device_runners import runner_common
from edgepack.devices import SSHOptions, open_device, parse_device
from edgepack.errors import DeviceError, EdgepackError, UsageError
from edgepack.types import BenchOptions, BenchResult, RunResult
from edgepack.ui import step

_EXIT_MEANING = {
    runner_common.EXIT_RUNTIME_MISSING: "the runtime is missing on the device",
    runner_common.EXIT_BUNDLE_INVALID: "the bundle failed verification on the device",
    runner_common.EXIT_USAGE: "the runner rejected its arguments",
}


def _checked(bundle: Path):
    manifest, problems = verify_bundle(bundle)
    if problems:
        raise EdgepackError(f"{bundle.name} failed verification: {problems[0]}"
                            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
                            "rebuild the bundle; run edgepack verify for the full list")
    return manifest


def _ssh_options(kwargs: dict) -> SSHOptions:
    fields = SSHOptions.__dataclass_fields__
    unknown = set(kwargs) - set(fields)
    if unknown:
        raise TypeError(f"unknown option(s): {sorted(unknown)}")
    return SSHOptions(**kwargs)


def deploy(bundle: Path, device: str = "local", **ssh) -> str:
    """Upload the bundle and the runner; returns the bundle's path on the device."""
    _checked(bundle)
    sha = sha256_file(bundle)
    dev = open_device(device, _ssh_options(ssh))
    try:
        with step(f"upload runner and {bundle.name} to {dev.name}"):
            dev.put_runners()
            remote, _ = dev.put_bundle(bundle, sha)
        return remote
    finally:
        dev.close()


def split_kwargs(kwargs: dict) -> tuple[BenchOptions, SSHOptions]:
    """``edgepack.bench(**kwargs)``: timing settings, runtime flags (by their declared names) and SSH options."""
    timing = {k: kwargs.pop(k) for k in list(kwargs) if k in BenchOptions.__dataclass_fields__ and k != "flags"}
    if "delegate_options" in kwargs:  # the API's older spelling of the flag
        kwargs["delegate_option"] = kwargs.pop("delegate_options")
    names = {f.name for f in registry.bench_flags()}
    flags = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    return BenchOptions(**timing, flags=flags), _ssh_options(kwargs)


def bench(bundle: Path, device: str = "local", options: BenchOptions | None = None,
          ssh: SSHOptions | None = None) -> BenchResult:
    """Upload (if needed) and run ``bundle`` on ``device`` with its format's runner.

    ``options.install_runtime``: if the device lacks the runtime, pip-install it into a venv in the device's
    edgepack cache (``<remote_dir>/venv``) and run there; later runs reuse that venv.
    ``options.repeat``: independent timing windows (``cooldown`` idle seconds between), so a report can tell
    run-to-run drift from a real change. ``options.flags``: the runtime's accelerator flags (edgepack/runtimes:
    ONNX ``ep``/``profile``, TFLite ``delegate``/``delegate_option``/``no_xnnpack``/``npu_model``, CoreML
    ``compute_units``); the result's ``placement`` says which ops the accelerator took."""
    options = options or BenchOptions()
    if options.repeat < 1 or options.runs < 1 or options.cooldown < 0:
        raise UsageError(f"--repeat {options.repeat} / --runs {options.runs} / --cooldown {options.cooldown:g} "
                         "out of range", "use --repeat >= 1, --runs >= 1, --cooldown >= 0")
    manifest = _checked(bundle)
    runtime = registry.runtime(manifest.format)
    extra = runtime.runner_args(manifest, options.flags)
    sha = sha256_file(bundle)
    ssh = ssh or SSHOptions()
    if options.install_runtime and parse_device(device).local:
        raise UsageError("--install-runtime is for SSH devices",
                         f"install the runtime here with: pip install {' '.join(runtime.device_packages)}")
    with step(f"connect to {device}"):
        dev = open_device(device, ssh)
    try:
        with step(f"upload runner and {bundle.name} to {dev.name}"):
            runners = dev.put_runners()
            remote, uploaded = dev.put_bundle(bundle, sha)
            workdir = dev.workdir()
        argv = [f"{runners}/{runtime.runner}", remote, *options.runner_argv(), *extra]
        if workdir:
            argv += ["--workdir", workdir]
        if options.install_runtime and dev.venv_python():
            dev.python = dev.venv_python()
        what = f"run {runtime.name} on {dev.name} (≥{options.runs} runs, ≥{options.min_seconds:g}s" + (
            f", ×{options.repeat} windows)" if options.repeat > 1 else ")")
        with step(what):
            res = dev.run(argv)
        if options.install_runtime and res.code == runner_common.EXIT_RUNTIME_MISSING:
            with step(f"install {' '.join(runtime.device_packages)} into a venv on {dev.name}"):
                dev.install_runtime(runtime.device_packages)
            with step(what):
                res = dev.run(argv)
    finally:
        dev.close()
    result = _parse(res, dev.name)
    if result.bundle_sha256 != sha:
        raise DeviceError(f"the device ran a bundle with sha256 {result.bundle_sha256[:12]}..., expected {sha[:12]}...",
                          "the cached copy on the device is stale or corrupt; remove ~/.cache/edgepack/bundles there")
    return BenchResult(bundle=bundle, bundle_name=bundle.name, device=dev.name, manifest=manifest, result=result,
                       bundle_bytes=bundle.stat().st_size, uploaded=uploaded)


def _parse(res, device: str) -> RunResult:
    lines = res.stderr.strip().splitlines()
    tail = "\n".join(lines[-5:])
    runner_line = next((ln for ln in reversed(lines) if ln.startswith("edgepack-runner: error:")), None)
    if res.code != 0:
        if runner_line:  # the runner's own one-line error: "message -- hint"
            message, _, hint = runner_line[len("edgepack-runner: error: "):].partition(" -- ")
        elif res.code < 0 or res.code >= 128:
            signum = abs(res.code) % 128
            name = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
            message = f"the runner was killed by signal {signum} ({name})"
            hint = ("SIGKILL usually means the device ran out of memory (dmesg shows the OOM killer)"
                    if signum == 9 else "check the device's logs")
        else:
            message = _EXIT_MEANING.get(res.code) or (lines[-1] if lines else f"exit code {res.code}")
            hint = ""
        raise DeviceError(f"runner failed on {device} (exit {res.code}): {message}",
                          hint or (f"runner stderr tail: {tail[-400:]}" if tail else "check the device"))
    try:
        data = json.loads(res.stdout)
        return RunResult.model_validate(data)
    except (ValueError, ValidationError) as e:
        raise DeviceError(f"the runner on {device} printed no valid result JSON ({str(e).splitlines()[0][:200]})",
                          f"runner stderr tail: {tail[-400:]}")
