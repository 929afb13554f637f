"""The ``edgepack`` command: a thin layer over the Python API.

Known failures (EdgepackError) become one line on stderr and a non-zero exit code;
set EDGEPACK_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from edgepack import __version__
from edgepack.errors import EdgepackError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Convert, quantize and bundle models for edge devices; run and measure them there.")


def _version(value: bool):
    if value:
        typer.echo(f"edgepack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output")):
    from edgepack.ui import set_quiet

    set_quiet(quiet)


def _write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command()
def build(
    source: str = typer.Argument(..., help="model.onnx | model.pt2 | model.pt (TorchScript) | file.py:callable"),
    to: str = typer.Option("onnx", "--to", help="target format: onnx | tflite | coreml"),
    quantize: str = typer.Option("none", "--quantize",
                                 help="none | fp16 | dynamic | int8 | int16x8 (tflite) | palettize4 | palettize6 "
                                      "(coreml)"),
    coreml_target: Optional[str] = typer.Option(None, "--coreml-target",
                                                help="CoreML minimum deployment target: iOS15..iOS26, macOS12..macOS26 "
                                                     "(default iOS18)"),
    io_dtype: str = typer.Option("float32", "--io-dtype", help="int8 TFLite I/O: float32 | int8 | uint8"),
    layout: Optional[str] = typer.Option(None, "--layout", help="nhwc | nchw I/O (default: the source's)"),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="DATA.npz, one array per input"),
    eval_data: Optional[Path] = typer.Option(None, "--eval", help="DATA.npz with inputs and 'labels'"),
    inputs: List[str] = typer.Option([], "--input", help="NAME:1x3x224x224[:float32]; repeat per input"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="bundle path (.edgepack)"),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="override the validation threshold"),
    allow_mismatch: bool = typer.Option(False, "--allow-mismatch", help="bundle even if validation fails"),
    opset: int = typer.Option(18, "--opset", help="ONNX opset for exports"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
):
    """Convert SOURCE to a bundle, check it against the source model, and write OUT.edgepack."""
    import edgepack

    res = edgepack.build(source, to=to, quantize=quantize, calibration=calibration, eval=eval_data,
                         inputs=inputs, output=output, min_cosine=min_cosine, allow_mismatch=allow_mismatch,
                         opset=opset, io_dtype=io_dtype, layout=layout, coreml_target=coreml_target)
    if as_json:
        typer.echo(res.manifest.to_json(), nl=False)
        return
    from edgepack.inspect_view import summary

    summary(res.manifest, res.path, res.bytes)


@app.command()
def inspect(bundle: Path = typer.Argument(..., help="a .edgepack file"),
            as_json: bool = typer.Option(False, "--json", help="print manifest.json")):
    """Show what a bundle holds: model, tensors, quantization, source, validation."""
    import edgepack

    manifest = edgepack.inspect(bundle)
    if as_json:
        typer.echo(manifest.to_json(), nl=False)
        return
    from edgepack.inspect_view import summary

    summary(manifest, bundle, bundle.stat().st_size)


@app.command()
def verify(bundle: Path = typer.Argument(..., help="a .edgepack file")):
    """Check the manifest schema and every member's sha256; exit 1 on any mismatch."""
    import edgepack

    manifest, problems = edgepack.verify(bundle)
    if problems:
        for p in problems:
            typer.echo(f"FAIL {p}", err=True)
        typer.echo(f"{bundle}: INVALID ({len(problems)} problem(s))", err=True)
        raise typer.Exit(1)
    typer.echo(f"{bundle}: OK ({len(manifest.members)} members verified, {manifest.format}, "
               f"{manifest.quantization.mode})")


def _ssh(accept_new_host_key, identity, known_hosts, ssh_config, connect_timeout, remote_python, remote_dir):
    return dict(accept_new_host_key=accept_new_host_key, identity=identity, known_hosts=known_hosts,
                ssh_config=ssh_config, connect_timeout=connect_timeout, remote_python=remote_python,
                remote_dir=remote_dir)


_DEVICE = typer.Option("local", "--device", "-d", help="local | [user@]host[:port] | ~/.ssh/config Host alias")
_ACCEPT = typer.Option(False, "--accept-new-host-key", help="trust an unknown host key and add it to known_hosts")
_IDENTITY = typer.Option(None, "--identity", "-i", help="SSH private key file")
_KNOWN = typer.Option(None, "--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
_CONFIG = typer.Option(None, "--ssh-config", help="ssh config file (default ~/.ssh/config)")
_TIMEOUT = typer.Option(10.0, "--connect-timeout", help="seconds to wait for the device")
_PYTHON = typer.Option("python3", "--remote-python", help="Python on the device")
_RDIR = typer.Option(".cache/edgepack", "--remote-dir", help="cache directory on the device (relative to ~)")


@app.command()
def deploy(bundle: Path = typer.Argument(...), device: str = _DEVICE, accept_new_host_key: bool = _ACCEPT,
           identity: Optional[Path] = _IDENTITY, known_hosts: Optional[Path] = _KNOWN,
           ssh_config: Optional[Path] = _CONFIG, connect_timeout: float = _TIMEOUT,
           remote_python: str = _PYTHON, remote_dir: str = _RDIR):
    """Upload BUNDLE and the device runner to the device's cache."""
    import edgepack

    remote = edgepack.deploy(bundle, device, **_ssh(accept_new_host_key, identity, known_hosts, ssh_config,
                                                    connect_timeout, remote_python, remote_dir))
    typer.echo(f"{bundle.name} -> {device}:{remote}")


@app.command()
def bench(bundle: List[Path] = typer.Argument(..., help="one or more .edgepack files"),
          device: str = _DEVICE,
          runs: int = typer.Option(50, "--runs", help="minimum timed runs"),
          warmup: int = typer.Option(5, "--warmup", help="untimed warm-up runs"),
          min_seconds: float = typer.Option(1.0, "--min-seconds", help="minimum timed seconds"),
          max_runs: int = typer.Option(10000, "--max-runs", help="upper bound on timed runs"),
          threads: int = typer.Option(0, "--threads", help="intra-op threads (0 = runtime default)"),
          install_runtime: bool = typer.Option(False, "--install-runtime",
                                               help="pip-install a missing runtime into a venv in the device's cache"),
          compute_units: Optional[str] = typer.Option(None, "--compute-units",
                                                      help="CoreML bundles on a Mac: cpu | gpu | ane | all (default all)"),
          json_out: Optional[Path] = typer.Option(None, "--json", help="write results as JSON here ('-' = stdout)"),
          md_out: Optional[Path] = typer.Option(None, "--markdown", help="write a Markdown table here ('-' = stdout)"),
          accept_new_host_key: bool = _ACCEPT, identity: Optional[Path] = _IDENTITY,
          known_hosts: Optional[Path] = _KNOWN, ssh_config: Optional[Path] = _CONFIG,
          connect_timeout: float = _TIMEOUT, remote_python: str = _PYTHON, remote_dir: str = _RDIR):
    """Run bundle(s) on the device: verify, time, check agreement and accuracy; print a report."""
    import edgepack
    from edgepack import report

    results = []
    for b in bundle:
        results.append(edgepack.bench(b, device, runs=runs, warmup=warmup, min_seconds=min_seconds,
                                      max_runs=max_runs, threads=threads, install_runtime=install_runtime,
                                      compute_units=compute_units,
                                      **_ssh(accept_new_host_key, identity, known_hosts, ssh_config,
                                             connect_timeout, remote_python, remote_dir)))
    from rich.console import Console

    to_stdout = str(json_out) == "-" or str(md_out) == "-"
    if not to_stdout:
        console = Console()
        if not console.is_terminal:
            console = Console(width=220)
        console.print(report.table(results))
    if json_out:
        text = report.to_json(results)
        typer.echo(text, nl=False) if str(json_out) == "-" else _write_atomic(json_out, text)
    if md_out:
        text = report.markdown(results)
        typer.echo(text, nl=False) if str(md_out) == "-" else _write_atomic(md_out, text)


@app.command()
def doctor(device: str = _DEVICE, as_json: bool = typer.Option(False, "--json", help="print the facts as JSON"),
           accept_new_host_key: bool = _ACCEPT, identity: Optional[Path] = _IDENTITY,
           known_hosts: Optional[Path] = _KNOWN, ssh_config: Optional[Path] = _CONFIG,
           connect_timeout: float = _TIMEOUT, remote_python: str = _PYTHON, remote_dir: str = _RDIR):
    """Probe a device: arch, OS, Python, runtimes, CPU, memory, NPUs; and what to install for each format."""
    import json

    from edgepack import doctor as doc
    from edgepack.devices import SSHOptions

    opts = SSHOptions(**_ssh(accept_new_host_key, identity, known_hosts, ssh_config, connect_timeout,
                             remote_python, remote_dir))
    facts = doc.probe(device, opts)
    adv = doc.advice(facts)
    if as_json:
        typer.echo(json.dumps({"device": device, "facts": facts, "formats": adv}, indent=2, sort_keys=True))
    else:
        typer.echo(doc.render(device, facts, adv), nl=False)


@app.command()
def schema(which: str = typer.Argument("manifest", help="manifest")):
    """Print the published JSON schema of manifest.json."""
    from edgepack.bundle import manifest_json_schema

    if which != "manifest":
        raise EdgepackError(f"unknown schema {which!r}", "use: edgepack schema manifest")
    typer.echo(manifest_json_schema(), nl=False)


def main(argv: Optional[list] = None) -> int:
    try:
        app(args=argv, prog_name="edgepack")  # standalone: typer reports usage errors itself
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except EdgepackError as e:
        if os.environ.get("EDGEPACK_DEBUG"):
            import traceback

            traceback.print_exc()
        print(f"edgepack: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
