"""edgepack: convert, quantize, bundle and benchmark models on edge devices.

Python API (the CLI is a thin layer over these)::

    import edgepack
    res = edgepack.build("model.onnx", to="onnx", quantize="int8", calibration="calib.npz")
    bench = edgepack.bench(res.path, device="local")          # or "pi@raspberrypi.local"
    print(bench.result.latency_ms.p50, bench.result.accuracy)

Importing edgepack imports no deep-learning framework; a conversion route imports
its framework when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

if TYPE_CHECKING:
    from edgepack.registry import Route
    from edgepack.types import BenchRecord, BuildResult, Manifest, TuneResult

__version__ = "0.1.0"

PathLike = Union[str, Path]


def build(
    source: PathLike,
    to: str = "onnx",
    quantize: str = "none",
    calibration: Optional[PathLike] = None,
    eval: Optional[PathLike] = None,
    inputs: Sequence[str] = (),
    output: Optional[PathLike] = None,
    min_cosine: Optional[float] = None,
    allow_mismatch: bool = False,
    opset: int = 18,
    io_dtype: Optional[str] = None,
    layout: Optional[str] = None,
    npu: Optional[str] = None,
    npu_config: Optional[PathLike] = None,
    npu_system_config: Optional[str] = None,
    npu_memory_mode: Optional[str] = None,
    npu_strict: bool = False,
    coreml_target: Optional[str] = None,
    route: Optional[str] = None,
    verbose: bool = False,
    keep_float: Optional[Union[int, str]] = None,
    explain_quant: bool = False,
) -> BuildResult:
    """Convert ``source`` to a ``to`` bundle in precision ``quantize``; returns a BuildResult.

    ``inputs`` are ``NAME:1x3x224x224[:dtype]`` strings (needed for file.py:callable sources).
    ``io_dtype`` (int8 TFLite: float32|int8|uint8) and ``layout`` (nhwc|nchw, default: the source's) shape the I/O.
    ``npu`` (e.g. ``ethos-u55-128``, any vela accelerator config) compiles the int8 TFLite model with vela
    (``npu_config``: a vela .ini or a built-in one like ``Arm/vela.ini``; ``npu_system_config``, ``npu_memory_mode``:
    sections of it) and bundles the NPU model and vela's findings (``manifest.npu``); ``npu_strict`` makes any
    CPU fallback an error. ``io_dtype`` defaults to int8 for an int8 NPU build, else float32.
    ``coreml_target`` (``to="coreml"``): minimum deployment target, e.g. iOS17, macOS14 (default iOS18).
    ``route`` pins one conversion route (``edgepack routes``); by default the routes to ``to`` are tried in order
    until one converts and validates (``manifest.route`` records which, and why the others were not used).
    ``verbose`` keeps the frameworks' log beside the bundle (``OUT.edgepack.log``).
    ``explain_quant`` ranks the quantized layers by their error against float (``manifest.quantization.sensitivity``);
    ``keep_float`` (N or ``"auto"``) keeps the N most sensitive in float (``manifest.quantization.kept_float``).
    Raises EdgepackError (with ``.message`` and ``.hint``) on bad input or failed validation.
    """
    from edgepack.builder import build as _build
    from edgepack.data import parse_input_spec
    from edgepack.errors import UsageError
    from edgepack.types import BuildOptions, CheckOptions, ConvertOptions, DataOptions, NpuOptions

    if not npu and (npu_config or npu_system_config or npu_memory_mode or npu_strict):
        raise UsageError(
            "--npu-config/--npu-system-config/--npu-memory-mode/--npu-strict need --npu",
            "add --npu ethos-u55-128 (or your board's accelerator config)",
        )
    options = BuildOptions(
        convert=ConvertOptions(
            target=to,
            quantize=quantize,
            route=route,
            io_dtype=io_dtype or ("int8" if npu and quantize == "int8" else "float32"),
            layout=layout.lower() if layout else None,
            opset=opset,
            coreml_target=coreml_target,
            keep_float=str(keep_float) if keep_float is not None else None,
            explain_quant=explain_quant or None,
        ),
        inputs=tuple(parse_input_spec(s) for s in inputs),
        data=DataOptions(calibration=Path(calibration) if calibration else None, eval=Path(eval) if eval else None),
        check=CheckOptions(min_cosine=min_cosine, allow_mismatch=allow_mismatch),
        npu=NpuOptions(
            accelerator=npu,
            config=str(npu_config) if npu_config else None,
            system_config=npu_system_config,
            memory_mode=npu_memory_mode,
            strict=npu_strict,
        )
        if npu
        else None,
        output=Path(output) if output else None,
        verbose=verbose,
    )
    return _build(str(source), options)


def bench(bundle: PathLike, device: str = "local", **kwargs: Any) -> BenchRecord:
    """Upload (if needed) and run ``bundle`` on ``device``; returns a BenchRecord (``.result``: the runner's
    RunResult, ``.manifest``, ``.device_spec``, ``.uploaded``).

    kwargs: the fields of :class:`edgepack.types.BenchOptions` (runs, warmup, min_seconds, max_runs, threads,
    repeat, cooldown, install_runtime, sustained ("2m" or seconds), sustained_window, drift_tolerance, cpus), the
    runtime flags by name (ep, profile, delegate, delegate_option, no_xnnpack, npu_model, compute_units: see
    ``edgepack.registry.bench_flags()``), and the SSH options of :class:`edgepack.devices.SSHOptions`
    (accept_new_host_key, identity, known_hosts, ...).
    """
    from edgepack.bencher import bench as _bench
    from edgepack.bencher import split_kwargs

    options, ssh = split_kwargs(dict(kwargs))
    return _bench(Path(bundle), device, options, ssh)


def tune(
    source: PathLike,
    device: str = "local",
    eval: Optional[PathLike] = None,
    calibration: Optional[PathLike] = None,
    max_accuracy_drop: float = 1.0,
    to: Sequence[str] = (),
    quantize: Sequence[str] = (),
    threads: Sequence[int] = (0,),
    inputs: Sequence[str] = (),
    output: Optional[PathLike] = None,
    budget_seconds: Optional[float] = None,
    cache_dir: Optional[PathLike] = None,
    cache: bool = True,
    confidence: float = 0.95,
    **kwargs: Any,
) -> TuneResult:
    """Build ``source`` in every format (``to``) x precision (``quantize``; empty: all the registry offers), bench
    each bundle on ``device`` with each ``threads`` setting, and write the fastest one whose top-1 on ``eval`` (on
    the device) is at most ``max_accuracy_drop`` points below the source model's to ``output``.

    Returns a TuneResult (``candidates``: one row each with its BenchRecord or why it failed / did not run;
    ``chosen``: the name of the one written, None when none met the budget). Builds are cached in ``cache_dir``
    (default ``~/.cache/edgepack/builds``; ``cache=False``: none). kwargs: bench timing (runs, warmup,
    min_seconds, max_runs, repeat, cooldown, timeout), ``ssh=SSHOptions(...)`` or the SSH options by name.
    """
    import dataclasses

    from edgepack.bencher import split_kwargs
    from edgepack.tuner import TuneOptions, default_bench
    from edgepack.tuner import tune as _tune

    ssh = kwargs.pop("ssh", None)
    timing = dataclasses.asdict(default_bench())
    timing.pop("flags")
    timing.update(kwargs)
    bench_options, ssh_from_kwargs = split_kwargs(timing)
    options = TuneOptions(
        eval=Path(eval) if eval else None,
        device=device,
        calibration=Path(calibration) if calibration else None,
        max_accuracy_drop=max_accuracy_drop,
        formats=tuple(to),
        precisions=tuple(quantize),
        threads=tuple(threads),
        inputs=tuple(inputs),
        output=Path(output) if output else None,
        budget_seconds=budget_seconds,
        cache_dir=Path(cache_dir) if cache_dir else None,
        use_cache=cache,
        confidence=confidence,
        bench=bench_options,
        ssh=ssh or ssh_from_kwargs,
    )
    return _tune(str(source), options)


def deploy(bundle: PathLike, device: str = "local", **kwargs: Any) -> str:
    """Upload ``bundle`` and the runner to ``device``; returns the remote bundle path."""
    from edgepack.bencher import deploy as _deploy

    return _deploy(Path(bundle), device, **kwargs)


def inspect(bundle: PathLike) -> Manifest:
    """Read and schema-check a bundle's manifest; returns the Manifest."""
    from edgepack.bundle import read_manifest

    return read_manifest(Path(bundle))


def verify(bundle: PathLike) -> tuple[Manifest, list[str]]:
    """Check schema and every member's sha256; returns (Manifest, problems)."""
    from edgepack.bundle import verify_bundle

    return verify_bundle(Path(bundle))


def routes() -> tuple[Route, ...]:
    """The declared conversion routes, in fallback order (``edgepack.registry.Route``)."""
    from edgepack.registry import routes as _routes

    return _routes()


__all__ = ["__version__", "build", "bench", "tune", "deploy", "inspect", "verify", "routes"]
