"""The ``edgepack`` command: a thin layer over the Python API.

Known failures (EdgepackError) become one line on stderr and a non-zero exit code;
set EDGEPACK_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import inspect as pyinspect
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from edgepack import __version__
from edgepack.errors import EdgepackError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Convert, quantize and bundle models for edge devices; run and measure them there.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgepack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
) -> None:
    from edgepack.ui import set_quiet

    set_quiet(quiet)


def _write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _declared(func: Callable[..., None], params: list[pyinspect.Parameter]) -> Callable[..., None]:
    """Give a command the parameters declared elsewhere (route options, runtime flags, the shared SSH options); typer
    reads ``__signature__``."""
    sig = pyinspect.signature(func)
    fixed = [p for p in sig.parameters.values() if p.kind is not pyinspect.Parameter.VAR_KEYWORD]
    func.__signature__ = sig.replace(parameters=fixed + params)  # type: ignore[attr-defined]
    func.__annotations__ = {**func.__annotations__, **{p.name: p.annotation for p in params}}
    return func


def _route_option_params() -> list[pyinspect.Parameter]:
    from edgepack import registry

    out = []
    for o in registry.build_options():
        kind = {int: Optional[int], bool: bool}.get(o.type, Optional[str])
        out.append(
            pyinspect.Parameter(
                o.name,
                pyinspect.Parameter.KEYWORD_ONLY,
                annotation=kind,
                default=typer.Option(False if o.type is bool else None, o.flag, help=o.help + _readers(o)),
            )
        )
    return out


def _readers(o: Any) -> str:
    from edgepack import registry

    return f" [routes: {', '.join(r.name for r in registry.routes() if o in r.options)}]"


def _bench_flag_params() -> list[pyinspect.Parameter]:
    from edgepack import registry

    out = []
    for f in registry.bench_flags():
        annotation: Any
        if f.kind is bool:
            annotation, default = bool, typer.Option(False, f.flag, *f.aliases, help=f.help)
        elif f.kind is list:
            annotation, default = List[str], typer.Option([], f.flag, *f.aliases, help=f.help)
        else:
            annotation, default = Optional[str], typer.Option(None, f.flag, *f.aliases, help=f.help)
        out.append(
            pyinspect.Parameter(f.name, pyinspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        )
    return out


def build(
    source: str = typer.Argument(
        ...,
        help="model.onnx | model.pt2 | model.pt (TorchScript) | file.py:callable | "
        ".keras | .h5 | SavedModel dir | .tflite",
    ),
    to: str = typer.Option("onnx", "--to", help="target format: onnx | tflite | coreml | executorch"),
    quantize: str = typer.Option(
        "none", "--quantize", help="none | fp16 | dynamic | int8 | int16x8 (tflite) | palettize4 | palettize6 (coreml)"
    ),
    route: Optional[str] = typer.Option(
        None,
        "--route",
        help="use this route only (edgepack routes lists them); default: try the routes to --to in order",
    ),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="DATA.npz, one array per input"),
    eval_data: Optional[Path] = typer.Option(None, "--eval", help="DATA.npz with inputs and 'labels'"),
    inputs: List[str] = typer.Option([], "--input", help="NAME:1x3x224x224[:float32]; repeat per input"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="bundle path (.edgepack)"),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="override the validation threshold"),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="bundle even if validation fails"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
    verbose: bool = typer.Option(False, "--verbose", help="keep the frameworks' log beside the bundle (OUT.log)"),
    npu: Optional[str] = typer.Option(
        None,
        "--npu",
        help="compile for an NPU with vela: ethos-u55-128, ethos-u65-256, "
        "ethos-u85-512, … (needs --to tflite --quantize int8)",
    ),
    npu_config: Optional[str] = typer.Option(None, "--npu-config", help="vela .ini file (or Arm/vela.ini)"),
    npu_system_config: Optional[str] = typer.Option(None, "--npu-system-config", help="vela --system-config"),
    npu_memory_mode: Optional[str] = typer.Option(None, "--npu-memory-mode", help="vela --memory-mode"),
    npu_strict: bool = typer.Option(False, "--npu-strict", help="fail if any op falls back to the CPU"),
    **route_options: Any,
) -> None:
    """Convert SOURCE to a bundle, check it against the source model, and write OUT.edgepack."""
    import edgepack

    given = {k: v for k, v in route_options.items() if v is not None}
    res = edgepack.build(
        source,
        to=to,
        quantize=quantize,
        calibration=calibration,
        eval=eval_data,
        inputs=inputs,
        output=output,
        min_cosine=min_cosine,
        allow_mismatch=allow_mismatch,
        npu=npu,
        npu_config=npu_config,
        npu_system_config=npu_system_config,
        npu_memory_mode=npu_memory_mode,
        npu_strict=npu_strict,
        route=route,
        verbose=verbose,
        **given,
    )
    if as_json:
        typer.echo(res.manifest.to_json(), nl=False)
        return
    from edgepack.inspect_view import summary

    summary(res.manifest, res.path, res.bytes)


app.command()(_declared(build, _route_option_params()))


@app.command()
def routes(as_json: bool = typer.Option(False, "--json", help="print the routes as JSON")) -> None:
    """List the conversion routes, in the order a build tries them, and whether each can run here."""
    import json

    from edgepack import registry

    rows: list[dict[str, Any]] = [
        {
            "route": r.name,
            "from": list(r.sources) + ([f"({', '.join(r.kinds)})"] if r.kinds else []),
            "to": r.target,
            "precisions": list(r.precisions),
            "options": [o.flag for o in r.options],
            "installed": not r.missing(),
            "install": None if not r.missing() else r.install_hint(),
            "summary": r.summary,
        }
        for r in registry.routes()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="conversion routes (tried top to bottom for each source -> target)")
    for col in ("route", "from", "to", "precisions", "options", "here", "what"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["route"],
            " ".join(r["from"]),
            r["to"],
            " ".join(r["precisions"]),
            " ".join(r["options"]),
            "yes" if r["installed"] else f"no: {r['install']}",
            r["summary"],
        )
    _console().print(table)


@app.command()
def inspect(
    bundle: Path = typer.Argument(..., help="a .edgepack file"),
    as_json: bool = typer.Option(False, "--json", help="print manifest.json"),
) -> None:
    """Show what a bundle holds: model, tensors, quantization, source, validation."""
    import edgepack

    manifest = edgepack.inspect(bundle)
    if as_json:
        typer.echo(manifest.to_json(), nl=False)
        return
    from edgepack.inspect_view import summary

    summary(manifest, bundle, bundle.stat().st_size)


@app.command()
def verify(bundle: Path = typer.Argument(..., help="a .edgepack file")) -> None:
    """Check the manifest schema and every member's sha256; exit 1 on any mismatch."""
    import edgepack

    manifest, problems = edgepack.verify(bundle)
    if problems:
        from edgepack.ui import printable

        for p in problems:
            typer.echo(f"FAIL {printable(p)}", err=True)
        typer.echo(f"{bundle}: INVALID ({len(problems)} problem(s))", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"{bundle}: OK ({len(manifest.members)} members verified, {manifest.format}, {manifest.quantization.mode})"
    )


_DEVICE = typer.Option(
    "local",
    "--device",
    "-d",
    help="local | [user@]host[:port] | ~/.ssh/config Host alias | an inventory name | @group | @label=value; "
    "several, comma-separated, run --parallel at a time",
)
_ACCEPT = typer.Option(False, "--accept-new-host-key", help="trust an unknown host key and add it to known_hosts")
_IDENTITY = typer.Option(None, "--identity", "-i", help="SSH private key file")
_KNOWN = typer.Option(None, "--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
_CONFIG = typer.Option(None, "--ssh-config", help="ssh config file (default ~/.ssh/config)")
_TIMEOUT = typer.Option(10.0, "--connect-timeout", help="seconds to wait for the device")
_PYTHON = typer.Option("python3", "--remote-python", help="Python on the device")
_RDIR = typer.Option(".cache/edgepack", "--remote-dir", help="cache directory on the device (relative to ~)")
_JUMP = typer.Option(
    None,
    "--jump",
    "-J",
    help="jump host(s) USER@HOST:PORT (USER@ and :PORT optional), "
    "comma-separated for a chain, like ssh -J; 'none' ignores the "
    "config's ProxyJump",
)
_ASKPASS = typer.Option(False, "--ask-password", help="also try password login, asked on the terminal")
_TRANSPORT = typer.Option(
    "auto",
    "--transport",
    help="auto | sftp | exec: how files reach the device (auto: SFTP when the server offers it, else an exec channel)",
)


# The SSH options deploy, bench and doctor share: (parameter, annotation, option), given to each command once.
_SSH_OPTIONS: list[tuple[str, Any, Any]] = [
    ("accept_new_host_key", bool, _ACCEPT),
    ("identity", Optional[Path], _IDENTITY),
    ("known_hosts", Optional[Path], _KNOWN),
    ("ssh_config", Optional[Path], _CONFIG),
    ("connect_timeout", float, _TIMEOUT),
    ("remote_python", str, _PYTHON),
    ("remote_dir", str, _RDIR),
    ("jump", Optional[str], _JUMP),
    ("ask_password", bool, _ASKPASS),
    ("transport", str, _TRANSPORT),
]


# Several devices (edgepack.inventory, edgepack.fleet): where names and @groups come from, how many at a time.
_FLEET_OPTIONS: list[tuple[str, Any, Any]] = [
    (
        "inventory",
        Optional[Path],
        typer.Option(
            None, "--inventory", help="edgepack.toml or an Ansible inventory (INI/YAML); default ./edgepack.toml"
        ),
    ),
    ("parallel", int, typer.Option(4, "--parallel", help="devices worked on at the same time")),
]


def _ssh_params() -> list[pyinspect.Parameter]:
    return [
        pyinspect.Parameter(n, pyinspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
        for n, a, d in _SSH_OPTIONS + _FLEET_OPTIONS
    ]


def _devices(device: str, given: dict[str, Any]) -> tuple[Any, int]:
    """The devices ``--device`` selects (edgepack.inventory.select) and ``--parallel``; pops both options."""
    from edgepack.fleet import check_parallel
    from edgepack.inventory import select

    inventory, parallel = given.pop("inventory"), given.pop("parallel")
    return select(device, inventory), check_parallel(parallel)


def _ssh_options(given: dict[str, Any]) -> Any:
    """Take the SSH options out of a command's keyword arguments (what is left are the command's own)."""
    from edgepack.devices import SSHOptions

    values = {n: given.pop(n) for n, _, _ in _SSH_OPTIONS}
    if values["transport"] == "auto":
        values["transport"] = None
    return SSHOptions(**values)


def deploy(bundle: Path = typer.Argument(...), device: str = _DEVICE, **ssh: Any) -> None:
    """Upload BUNDLE and the device runner to the device's cache."""
    import dataclasses

    import edgepack

    devices, parallel = _devices(device, ssh)
    options = _ssh_options(ssh)
    if len(devices) > 1:
        from edgepack import fleet_cli

        raise typer.Exit(fleet_cli.deploy(bundle, devices, options, parallel))
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    remote = edgepack.deploy(bundle, devices[0], **fields)
    typer.echo(f"{bundle.name} -> {devices[0].name}:{remote}")


app.command()(_declared(deploy, _ssh_params()))


def bench(
    bundle: List[Path] = typer.Argument(..., help="one or more .edgepack files"),
    device: str = _DEVICE,
    runs: int = typer.Option(50, "--runs", help="minimum timed runs"),
    warmup: int = typer.Option(5, "--warmup", help="untimed warm-up runs"),
    min_seconds: float = typer.Option(1.0, "--min-seconds", help="minimum timed seconds"),
    max_runs: int = typer.Option(10000, "--max-runs", help="upper bound on timed runs"),
    threads: int = typer.Option(0, "--threads", help="intra-op threads (0 = runtime default)"),
    repeat: int = typer.Option(1, "--repeat", help="independent timing windows (for report's statistics)"),
    cooldown: float = typer.Option(1.0, "--cooldown", help="idle seconds between timing windows"),
    install_runtime: bool = typer.Option(
        False, "--install-runtime", help="pip-install a missing runtime into a venv in the device's cache"
    ),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results as JSON here ('-' = stdout)"),
    md_out: Optional[Path] = typer.Option(None, "--markdown", help="write a Markdown table here ('-' = stdout)"),
    top: int = typer.Option(10, "--top", help="rows of the per-op timing table"),
    timeout: Optional[float] = typer.Option(
        None,
        "--timeout",
        help="seconds one bundle's run may take; the runner is stopped "
        "and cleaned up after (default 600 + 2 × repeat × "
        "(min-seconds + cooldown); 0 = no limit)",
    ),
    until_conclusive: bool = typer.Option(
        False,
        "--until-conclusive",
        help="add timing windows (interleaved with the baseline's bundle) until the latency verdict against the "
        "baseline is known or --budget-seconds ends; exit 1 when regressed",
    ),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", help="with --until-conclusive: BASE.json (its bundle is timed alongside when still here)"
    ),
    baseline_bundle: Optional[Path] = typer.Option(
        None, "--baseline-bundle", help="with --until-conclusive: OLD.edgepack, timed interleaved with BUNDLE"
    ),
    max_latency_regression: Optional[str] = typer.Option(
        None, "--max-latency-regression", help="with --until-conclusive: the limit, e.g. 5% (default 5%)"
    ),
    budget_seconds: Optional[float] = typer.Option(
        None, "--budget-seconds", help="with --until-conclusive: seconds of sampling at most (default 300)"
    ),
    statistic: Optional[str] = typer.Option(
        None, "--statistic", help="with --until-conclusive: the window quantile compared, p50 (default) or e.g. p10"
    ),
    junit_out: Optional[Path] = typer.Option(None, "--junit", help="write the checks as JUnit XML here"),
    sustained: Optional[str] = typer.Option(
        None,
        "--sustained",
        help="e.g. 2m: run back-to-back timing windows that long, read clocks, temperature and throttling "
        "flags after each, and report cold vs sustained p50 with a verdict (stable/throttled/drifting)",
    ),
    sustained_window: float = typer.Option(
        0.0, "--sustained-window", help="seconds per sustained window (default: about 1/24 of --sustained)"
    ),
    drift_tolerance: str = typer.Option(
        "5%", "--drift-tolerance", help="sustained p50 within this of the cold p50 is stable (default 5%)"
    ),
    cpus: Optional[str] = typer.Option(
        None, "--cpus", help="pin the runner to cores: 4-7, 0,2, big, little (resolved on the device) or all"
    ),
    shard: Optional[str] = typer.Option(
        None, "--shard", help="i/N: bench only this job's share of the bundle x device pairs (a CI matrix)"
    ),
    **extra: Any,
) -> None:
    """Run bundle(s) on the device(s): verify, time, check agreement and accuracy; print a report."""
    from edgepack import fleet, report
    from edgepack.bencher import bench as run_bench
    from edgepack.gate import parse_fraction
    from edgepack.outputs import check_outputs
    from edgepack.types import BenchOptions

    check_outputs(
        {"--json": json_out, "--markdown": md_out, "--junit": junit_out}, [*bundle, baseline, baseline_bundle]
    )  # before the bench, not after it
    devices, parallel = _devices(device, extra)
    shard_of = fleet.parse_shard(shard)
    ssh = _ssh_options(extra)  # what is left in extra: the runtime flags
    tolerance = parse_fraction(drift_tolerance, "--drift-tolerance")
    options = BenchOptions(
        runs=runs,
        warmup=warmup,
        min_seconds=min_seconds,
        max_runs=max_runs,
        threads=threads,
        repeat=repeat,
        cooldown=cooldown,
        install_runtime=install_runtime,
        timeout=timeout,
        flags=extra,
        sustained=sustained or 0.0,
        sustained_window=sustained_window,
        drift_tolerance=0.05 if tolerance is None else tolerance,
        cpus=cpus,
    )
    from edgepack import sequential

    limit = sequential.check_flags(
        bundle, until_conclusive, baseline, baseline_bundle, max_latency_regression, budget_seconds, options, statistic
    )
    if len(devices) > 1 or shard_of is not None:
        if limit is not None:
            raise EdgepackError(
                "--until-conclusive compares two bundles on one device", "pass one --device and no --shard", exit_code=2
            )
        from edgepack import fleet_cli

        code = fleet_cli.bench(
            bundle, devices, shard_of, options, ssh, parallel, json_out, md_out, top, write=_write_atomic
        )
        raise typer.Exit(code)
    if limit is not None:
        records, rep = sequential.bench_until_conclusive(
            bundle, devices[0], options, ssh, limit, budget_seconds, baseline, baseline_bundle, statistic
        )
    else:
        records = [run_bench(b, devices[0], options, ssh) for b in bundle]
        rep = report.make_report(records)
    if not (str(json_out) == "-" or str(md_out) == "-" or str(junit_out) == "-"):
        console = _console()
        console.print(report.table(rep))
        console.print(report.checks_table(rep))
        from edgepack.placement_view import print_result
        from edgepack.sustained import print_tables

        print_tables(records, console)
        for r in records:
            print_result(r, console, top, title=r.bundle)
        from edgepack.report_rows import run_warnings

        for w in run_warnings(records):
            console.print(w, style="yellow", markup=False)
    if json_out:
        text = report.bench_json(records)
        typer.echo(text, nl=False) if str(json_out) == "-" else _write_atomic(json_out, text)
    if md_out:
        text = report.markdown(rep, top)
        typer.echo(text, nl=False) if str(md_out) == "-" else _write_atomic(md_out, text)
    if junit_out:
        text = report.junit(rep)
        typer.echo(text, nl=False) if str(junit_out) == "-" else _write_atomic(junit_out, text)
    for c in rep.failed:  # bench measures; gating is edgepack report's job (and --until-conclusive's)
        typer.echo(f"edgepack: {'error' if limit is not None else 'warning'}: {c.entry}: {c.message}", err=True)
    if limit is not None and rep.failed:
        raise typer.Exit(1)


app.command()(_declared(bench, _bench_flag_params() + _ssh_params()))


def tune(
    source: str = typer.Argument(..., help="the model, as for build"),
    device: str = _DEVICE,
    eval_data: Path = typer.Option(..., "--eval", help="DATA.npz with inputs and 'labels' (accuracy on the device)"),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="DATA.npz for int8/int16x8"),
    max_accuracy_drop: str = typer.Option("1.0", "--max-accuracy-drop", help="top-1 points below the reference"),
    to: Optional[str] = typer.Option(None, "--to", help="formats, e.g. onnx,tflite (default: all the source reaches)"),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="precisions, e.g. none,fp16,int8 (default: all)"),
    threads: str = typer.Option("0", "--threads", help="bench thread counts, e.g. 1,2,4 (0 = runtime default)"),
    inputs: List[str] = typer.Option([], "--input", help="NAME:1x3x224x224[:float32]; repeat per input"),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="the chosen bundle (default STEM.best.edgepack)"
    ),
    budget_seconds: Optional[float] = typer.Option(None, "--budget-seconds", help="stop starting candidates after"),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="build cache (default ~/.cache/edgepack/builds)"
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="build every candidate afresh, cache nothing"),
    runs: int = typer.Option(50, "--runs", help="minimum timed runs per candidate"),
    warmup: int = typer.Option(5, "--warmup", help="untimed warm-up runs"),
    min_seconds: float = typer.Option(0.5, "--min-seconds", help="minimum timed seconds per window"),
    repeat: int = typer.Option(3, "--repeat", help="timing windows per candidate"),
    cooldown: float = typer.Option(0.2, "--cooldown", help="idle seconds between windows"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the result as JSON here ('-' = stdout)"),
    md_out: Optional[Path] = typer.Option(None, "--markdown", help="write a Markdown table here ('-' = stdout)"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="write an HTML page with the Pareto plot here"),
    **ssh: Any,
) -> None:
    """Build every format x precision, bench each on the device, keep the fastest within the accuracy budget."""
    import edgepack
    from edgepack.gate import parse_points
    from edgepack.outputs import check_outputs
    from edgepack.tuner import parse_list, parse_threads

    check_outputs({"--json": json_out, "--markdown": md_out, "--html": html_out}, [eval_data, calibration, output])
    if html_out is not None:
        from edgepack.errors import require

        require("matplotlib", "report")  # before the search, not after it
    res = edgepack.tune(
        source,
        device=device,
        eval=eval_data,
        calibration=calibration,
        max_accuracy_drop=_points_or_any(parse_points(max_accuracy_drop, "--max-accuracy-drop")),
        to=parse_list(to, "--to"),
        quantize=parse_list(quantize, "--quantize"),
        threads=parse_threads(threads),
        inputs=inputs,
        output=output,
        budget_seconds=budget_seconds,
        cache_dir=cache_dir,
        cache=not no_cache,
        runs=runs,
        warmup=warmup,
        min_seconds=min_seconds,
        repeat=repeat,
        cooldown=cooldown,
        ssh=_ssh_options(ssh),
    )
    from edgepack import tune_report

    if not (str(json_out) == "-" or str(md_out) == "-"):
        console = _console()
        console.print(tune_report.table(res))
        for n in res.notes:
            console.print(f"note: {n}", markup=False)
    for path, fmt in ((json_out, "json"), (md_out, "md"), (html_out, "html")):
        if path:
            text = tune_report.render(res, fmt)
            typer.echo(text, nl=False) if str(path) == "-" else _write_atomic(path, text)
    if res.chosen is None:
        raise EdgepackError(
            f"no candidate is within {res.max_accuracy_drop:g} point(s) of the reference top-1 "
            f"{res.reference.top1 * 100:.2f}%",
            "raise --max-accuracy-drop, give int8 representative --calibration data, or add precisions (--quantize)",
        )


app.command()(_declared(tune, _ssh_params()))


def _points_or_any(value: Optional[float]) -> float:
    return 100.0 if value is None else value  # "off": any accuracy


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=220)
    return console


@app.command()
def report(
    results: List[Path] = typer.Argument(..., help="bench --json files (or saved reports) to merge"),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", help="a baseline from --save-baseline (or any bench --json file)"
    ),
    fmt: str = typer.Option("md", "--format", "-f", help="md | json | junit | html"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="write the report here (default: stdout)"),
    save_baseline: Optional[Path] = typer.Option(
        None, "--save-baseline", help="also write the merged results as a baseline file to commit"
    ),
    max_latency_regression: Optional[str] = typer.Option(
        None,
        "--max-latency-regression",
        help="e.g. 5%: fail when p50 is slower by more, with statistical confidence (default 5%; off)",
    ),
    max_accuracy_drop: Optional[str] = typer.Option(
        None, "--max-accuracy-drop", help="top-1 percentage points (default 0.5; off)"
    ),
    max_size_growth: Optional[str] = typer.Option(None, "--max-size-growth", help="e.g. 10% (default 10%; off)"),
    max_p50_ms: Optional[float] = typer.Option(None, "--max-p50-ms", help="absolute p50 ceiling"),
    max_p90_ms: Optional[float] = typer.Option(None, "--max-p90-ms", help="absolute p90 ceiling"),
    max_p99_ms: Optional[float] = typer.Option(None, "--max-p99-ms", help="absolute p99 ceiling"),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="top-1 floor in percent"),
    confidence: float = typer.Option(0.95, "--confidence", help="confidence of the latency interval"),
    strict_device: bool = typer.Option(
        False, "--strict-device", help="fail (not flag) latency measured on another device than its baseline"
    ),
    top: int = typer.Option(10, "--top", help="rows of the per-op timing tables"),
    max_cpu_fallback_ops: Optional[int] = typer.Option(
        None, "--max-cpu-fallback-ops", help="placement gate: fail when an accelerator leaves more ops on the CPU"
    ),
    min_accelerated_share: Optional[str] = typer.Option(
        None,
        "--min-accelerated-share",
        help="placement gate: e.g. 0.9 or 90%: fail when less of the graph is accelerated",
    ),
) -> None:
    """Merge bench results into one report (md/json/junit/html) and gate them; exit 1 when a check fails."""
    from edgepack import report as rp
    from edgepack.gate import GateSettings, check_number, parse_fraction, parse_points
    from edgepack.outputs import check_outputs

    check_outputs({"-o": output, "--save-baseline": save_baseline}, [*results, baseline])
    for option, value in (
        ("--max-p50-ms", max_p50_ms),
        ("--max-p90-ms", max_p90_ms),
        ("--max-p99-ms", max_p99_ms),
        ("--min-accuracy", min_accuracy),
    ):
        check_number(value, option, high=100.0 if option == "--min-accuracy" else None)
    check_number(max_cpu_fallback_ops, "--max-cpu-fallback-ops")
    if fmt not in rp.FORMATS:
        raise EdgepackError(
            f"unknown report format {fmt!r}", f"use --format with one of {', '.join(rp.FORMATS)}", exit_code=2
        )
    if not 0.5 <= confidence < 1:
        raise EdgepackError(f"--confidence {confidence} is out of range", "use a value like 0.95", exit_code=2)
    base = rp.load_records(baseline) if baseline else None
    settings = GateSettings(
        max_p50_ms=max_p50_ms,
        max_p90_ms=max_p90_ms,
        max_p99_ms=max_p99_ms,
        min_accuracy=min_accuracy,
        confidence=confidence,
        strict_device=strict_device,
        max_cpu_fallback_ops=max_cpu_fallback_ops,
        min_accelerated_share=parse_fraction(min_accelerated_share, "--min-accelerated-share"),
    )
    # unset keeps the documented default; "off" switches the check off
    if max_latency_regression is not None:
        settings.max_latency_regression = parse_fraction(max_latency_regression, "--max-latency-regression")
    if max_size_growth is not None:
        settings.max_size_growth = parse_fraction(max_size_growth, "--max-size-growth")
    if max_accuracy_drop is not None:
        settings.max_accuracy_drop = parse_points(max_accuracy_drop, "--max-accuracy-drop")
    records, failures = rp.merge_results(results)  # shards' files as one set (see merge_results)
    rep = rp.make_report(records, base, settings, failures)
    text = rp.render(rep, fmt, top)
    if save_baseline:
        _write_atomic(save_baseline, rp.to_json(rp.make_report(rep.records)))
    if output:
        _write_atomic(output, text)
        console = _console(stderr=True)
        console.print(rp.table(rep))
        console.print(rp.checks_table(rep))
        from edgepack.placement_view import print_result
        from edgepack.sustained import print_tables

        print_tables(rep.records, console)
        for r in rep.records:
            print_result(r, console, top, title=r.key)
        from edgepack.report_rows import run_warnings

        for w in run_warnings(rep.records):
            console.print(w, style="yellow", markup=False)
    else:
        typer.echo(text, nl=False)
    if rep.failed:
        raise typer.Exit(1)


def doctor(
    device: str = _DEVICE,
    as_json: bool = typer.Option(False, "--json", help="print the facts as JSON"),
    **ssh: Any,
) -> None:
    """Probe a device: arch, OS, Python, runtimes, CPU, memory, NPUs; and what to install for each format."""
    import json

    from edgepack import doctor as doc

    devices, parallel = _devices(device, ssh)
    opts = _ssh_options(ssh)
    if len(devices) > 1:
        from edgepack import fleet_cli

        raise typer.Exit(fleet_cli.doctor(devices, opts, parallel, as_json))
    name = devices[0].name
    facts = doc.probe(devices[0], opts)
    adv = doc.advice(facts)
    if as_json:
        typer.echo(json.dumps({"device": name, "facts": facts, "formats": adv}, indent=2, sort_keys=True))
    else:
        typer.echo(doc.render(name, facts, adv), nl=False)


app.command()(_declared(doctor, _ssh_params()))


def devices(
    selection: str = typer.Argument("@all", help="@group, @label=value, names (comma-separated); default @all"),
    check: bool = typer.Option(True, "--check/--no-check", help="probe each device (doctor), --parallel at a time"),
    as_json: bool = typer.Option(False, "--json", help="print the devices as JSON"),
    **ssh: Any,
) -> None:
    """List the inventory's devices (edgepack.toml or --inventory) and whether each is reachable and ready."""
    from edgepack import fleet_cli

    selected, parallel = _devices(selection, ssh)
    raise typer.Exit(fleet_cli.devices(selected, _ssh_options(ssh), parallel, check, as_json))


app.command()(_declared(devices, _ssh_params()))


@app.command()
def schema(which: str = typer.Argument("manifest", help="manifest | result")) -> None:
    """Print a published JSON schema: manifest.json in a bundle, or the result JSON a device runner prints."""
    if which == "manifest":
        from edgepack.bundle import manifest_json_schema

        typer.echo(manifest_json_schema(), nl=False)
    elif which == "result":
        from edgepack.types import RunResult

        typer.echo(RunResult.json_schema_text(), nl=False)
    else:
        raise EdgepackError(f"unknown schema {which!r}", "use: edgepack schema manifest|result", exit_code=2)


_signalled: list[int] = []


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM/SIGHUP all become KeyboardInterrupt, so every cleanup path runs (temp bundle and temp
    dirs of a build, the runner on the device); the exit status is then 128 + the signal number."""
    if _signalled:  # the cleanup of the first one is running: let it finish
        return
    _signalled.append(signum)
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            try:
                signal.signal(sig, signal.SIG_IGN)
            except ValueError:
                return


def main(argv: Optional[list[str]] = None) -> int:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            try:
                signal.signal(sig, _on_signal)
            except ValueError:  # not the main thread (embedded use): leave signals alone
                break
    _signalled.clear()
    try:
        try:
            app(args=argv, prog_name="edgepack")  # standalone: typer reports usage errors itself
        except KeyboardInterrupt:  # raised outside click's own handling
            if not _signalled:
                _signalled.append(signal.SIGINT)
        if _signalled:
            raise SystemExit(128 + _signalled[0])
    except (SystemExit, EdgepackError) as e:
        if _signalled:  # whatever the interrupted command raised on its way out
            _ignore_signals()  # nothing may interrupt the exit itself (a late KeyboardInterrupt exits as SIGINT)
            print(
                f"edgepack: error: stopped by signal {_signalled[0]} ({signal.Signals(_signalled[0]).name}); "
                "temporary files and the device's runner were cleaned up",
                file=sys.stderr,
            )
            return 128 + _signalled[0]
        if isinstance(e, SystemExit):
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if os.environ.get("EDGEPACK_DEBUG"):
            import traceback

            traceback.print_exc()
        print(f"edgepack: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
