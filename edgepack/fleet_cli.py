"""The multi-device side of ``bench``, ``deploy``, ``doctor`` and the ``devices`` command (cli.py hands over
here when ``--device`` selects more than one device, or with ``--shard``)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from edgepack import fleet
from edgepack.devices import DeviceSpec, SSHOptions, check_options
from edgepack.types import BenchFailure, BenchOptions, BenchRecord
from edgepack.ui import printable, safe


def _err(text: str) -> None:
    print(f"edgepack: {printable(text)}", file=sys.stderr)


def precheck(devices: Sequence[DeviceSpec], ssh: SSHOptions) -> None:
    """Every device's own options (an inventory's identity file, ...) are checked before anything connects."""
    for d in devices:
        check_options(d.options(ssh))


def bench(
    bundles: list[Path],
    devices: list[DeviceSpec],
    shard: Optional[tuple[int, int]],
    options: BenchOptions,
    ssh: SSHOptions,
    parallel: int,
    json_out: Optional[Path],
    md_out: Optional[Path],
    top: int,
    write: Any,
) -> int:
    """Bench ``bundles`` on ``devices`` (or this job's ``shard`` of the pairs); ``--json FILE`` is rewritten
    (atomically, by ``write(path, text)``) after every bundle x device, with ``pending`` pairs listed until
    the end. Returns the exit code (0, 5 all failed, 6 some failed)."""
    from edgepack import report
    from edgepack.bencher import _checked, check_settings

    fleet.check_parallel(parallel)
    check_settings(options)
    for b in bundles:
        _checked(b)
    precheck(devices, ssh)
    if shard is not None:
        work = fleet.shard(bundles, devices, *shard)
        if len(devices) < shard[1] and len(devices) > 1:
            _err(
                f"note: {len(devices)} device(s) for {shard[1]} shards: bundles are split and a device may "
                "be used by several jobs at once (their timings then disturb each other)"
            )
    else:
        work = [(d, list(bundles)) for d in devices]
    to_file = json_out is not None and str(json_out) != "-"

    def on_change(records: list[BenchRecord], failures: list[BenchFailure], pending: list[tuple[str, str]]) -> None:
        if to_file:
            write(json_out, report.bench_json(records, failures, pending))

    if not work:
        _err(f"note: shard {shard[0]}/{shard[1]} has no bundle x device pairs" if shard else "note: nothing to do")
    if to_file:
        on_change([], [], [(b.name, d.name) for d, bs in work for b in bs])
    res = fleet.bench(work, options, ssh, parallel, on_change)
    rep = report.make_report(res.records, failures=res.failures)
    if json_out:
        text = report.bench_json(res.records, res.failures)
        print(text, end="") if not to_file else write(json_out, text)
    if md_out:
        text = report.markdown(rep, top)
        print(text, end="") if str(md_out) == "-" else write(md_out, text)
    if (res.records or res.failures) and not (str(json_out) == "-" or str(md_out) == "-"):
        from rich.console import Console

        console = Console(width=220) if not sys.stdout.isatty() else Console()
        if res.records:
            console.print(report.table(rep))
        console.print(report.checks_table(rep))
    for f in res.failures:
        _err(f"error: {f.key}: {f.status}: {f.message}" + (f" (fix: {f.hint})" if f.hint else ""))
    total = sum(len(bs) for _, bs in work)
    if res.failures:
        bad = res.failed_devices
        _err(
            f"{len(bad)} of {len(work)} device(s) failed ({', '.join(bad)}): {len(res.records)} of {total} "
            "bundle x device results measured" + (f" and written to {json_out}" if to_file and res.records else "")
        )
    return fleet.exit_code(total, len(res.failures))


def deploy(bundle: Path, devices: list[DeviceSpec], ssh: SSHOptions, parallel: int) -> int:
    from edgepack.bencher import _checked
    from edgepack.bencher import deploy as deploy_one

    _checked(bundle)
    precheck(devices, ssh)
    fields = {f.name: getattr(ssh, f.name) for f in dataclasses.fields(ssh)}
    outcomes = fleet.run_on_devices(
        devices, lambda d: deploy_one(bundle, d, **fields), parallel, title=f"deploy {bundle.name}"
    )
    for o in outcomes:
        if o.ok:
            print(f"{bundle.name} -> {printable(o.device.name)}:{printable(o.value)}")
        else:
            _err(f"error: {o.device.name}: {o.status}: {o.message()}")
    return fleet.exit_code(len(outcomes), sum(not o.ok for o in outcomes))


def _probe(device: DeviceSpec, ssh: SSHOptions) -> dict[str, Any]:
    from edgepack import doctor as doc

    facts = doc.probe(device, ssh)
    return {"facts": facts, "formats": doc.advice(facts)}


def doctor(devices: list[DeviceSpec], ssh: SSHOptions, parallel: int, as_json: bool) -> int:
    from edgepack import doctor as doc

    precheck(devices, ssh)
    outcomes = fleet.run_on_devices(devices, lambda d: _probe(d, ssh), parallel, title="doctor")
    if as_json:
        print(json.dumps([_doctor_entry(o) for o in outcomes], indent=2, sort_keys=True))
    else:
        for o in outcomes:
            if o.ok:
                assert o.value is not None
                print(doc.render(o.device.name, o.value["facts"], o.value["formats"]))
    for o in outcomes:
        if not o.ok:
            _err(f"error: {o.device.name}: {o.status}: {o.message()}")
    return fleet.exit_code(len(outcomes), sum(not o.ok for o in outcomes))


def _doctor_entry(o: fleet.Outcome[dict[str, Any]]) -> dict[str, Any]:
    if o.ok:
        assert o.value is not None
        return {"device": o.device.name, "status": "ok", **o.value}
    return {"device": o.device.name, "status": o.status, "error": o.message()}


def _address(d: DeviceSpec) -> str:
    if d.local:
        return "local"
    return f"{d.user + '@' if d.user else ''}{d.host}{':' + str(d.port) if d.port else ''}"


def _brief(value: dict[str, Any]) -> str:
    f = value["facts"]
    ready = [fmt for fmt, a in value["formats"].items() if a.get("ready")]
    cpu = " EMULATED" if f.get("cpu", {}).get("emulated") else ""
    return (
        f"{f.get('machine')}{cpu}, {f.get('cpu_count')} cores, Python {f.get('python')}, "
        f"ready: {', '.join(ready) or 'none'}"
    )


def devices(devices: list[DeviceSpec], ssh: SSHOptions, parallel: int, check: bool, as_json: bool) -> int:
    """``edgepack devices``: the selected devices with their inventory settings and, with ``check``, whether
    each is reachable and ready (doctor's probe on every device, ``parallel`` at a time)."""
    outcomes: list[Optional[fleet.Outcome[dict[str, Any]]]] = [None] * len(devices)
    if check:
        precheck(devices, ssh)
        outcomes = list(fleet.run_on_devices(devices, lambda d: _probe(d, ssh), parallel, title="reachability"))
    if as_json:
        rows = []
        for d, o in zip(devices, outcomes):
            row: dict[str, Any] = {
                "device": d.name,
                "address": _address(d),
                "groups": list(d.groups),
                "labels": d.labels,
                "python": d.python,
                "remote_dir": d.remote_dir,
                "identity": str(d.identity) if d.identity else None,
            }
            if o is not None:
                row.update(_doctor_entry(o))
            rows.append(row)
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{len(devices)} device(s)", title_justify="left")
        for c in ("device", "address", "groups", "labels") + (("status", "details") if check else ()):
            t.add_column(c)
        for d, o in zip(devices, outcomes):
            cells = [
                d.name,
                _address(d),
                " ".join(d.groups),
                " ".join(f"{k}={v}" for k, v in d.labels.items()),
            ]
            if o is not None:
                cells += [o.status, _brief(o.value) if o.ok and o.value else o.message()]
            t.add_row(*(safe(c) for c in cells))
        (Console(width=220) if not sys.stdout.isatty() else Console()).print(t)
    failed = sum(o is not None and not o.ok for o in outcomes)
    return fleet.exit_code(len(devices), failed) if check else 0
