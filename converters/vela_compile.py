"""Ethos-U NPU compile: the int8 TFLite model -> vela -> the NPU model and vela's findings.

Runs after a ``--to tflite --quantize int8|int16x8`` conversion when ``--npu ethos-u…`` is given (builder.py);
the int8 model is validated against the source first, because the vela model's ``ethos-u`` custom op has no CPU
kernel: its numerics can be checked on an Ethos-U device only.

vela runs as a subprocess (``python -m ethosu.vela``) in a temp directory with ``--verbose-performance`` and
``--show-cpu-operations``. What is read from where:

- placement: the op lists of the int8 model and of vela's output model (every op not folded into an ``ethos-u``
  custom op stays on the CPU), read with the TFLite interpreter without allocating tensors;
- CPU-fallback reasons: vela's ``Warning (supported operators) operator: OP, ofm: 'NAME'`` / ``Reason: …`` lines
  (stdout is the only place vela gives them);
- memory, MACs, cycles, estimated time: ``<name>_summary_<system>.csv``; the per-layer table:
  ``<name>_per-layer.csv``.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

from edgepack.errors import EdgepackError, UsageError, require
from edgepack.types import ModelMember, NpuCompile, NpuLayer, NpuOptions, OpPlacement, Placement

MEMBER = "model_vela.tflite"
NUMERICS = (
    "checked on an Ethos-U device only (bench --npu-model with the ethos-u delegate): the ethos-u custom "
    "op has no CPU kernel; build-time validation ran on the int8 model (model.tflite) before vela"
)
_CUSTOM = "ethos-u"

# what usually fixes a CPU fallback, by op type (vela's own constraints: vela --supported-ops-report)
_OP_HINTS = {
    "GATHER": "GATHER has no Ethos-U55/U65 kernel: a fixed channel permutation can be a 1x1 Conv with a "
    "permutation matrix, a fixed slice a STRIDED_SLICE; Ethos-U85 runs GATHER only with axis == batch_dims",
    "DIV": "divide by a constant: multiply by its reciprocal (MUL runs on the NPU)",
    "CAST": "keep tensors int8 end to end (casts usually come from integer index arithmetic)",
    "SQRT": "use RSQRT (supported) or fold the square root into a constant",
    "POW": "use MUL for small integer powers",
    "SIN": "no NPU kernel: precompute with a lookup table or move it outside the model",
    "COS": "no NPU kernel: precompute with a lookup table or move it outside the model",
}


def _hint(op_type: str, reasons: list[str]) -> str:
    text = " ".join(reasons).lower()
    if "float32" in text or "float16" in text or "datatype float" in text or op_type in ("QUANTIZE", "DEQUANTIZE"):
        return (
            "float tensors: quantize fully — --quantize int8 --calibration DATA.npz with --io-dtype int8 "
            "(float I/O adds a QUANTIZE/DEQUANTIZE pair on the CPU); DEQUANTIZE → op → QUANTIZE inside the graph "
            "are ops the quantizer left in float (e.g. residual ADDs): quantize them too, e.g. through the "
            "TFLite converter's full-integer route"
        )
    if op_type in _OP_HINTS:
        return _OP_HINTS[op_type]
    return (
        "see this op's constraints in vela's SUPPORTED_OPS.md (vela --supported-ops-report) and reshape the op "
        "to meet them, or replace it"
    )


def hints(place: Placement) -> list[str]:
    """One line per distinct fix, naming the CPU op types it applies to."""
    grouped: dict[str, list[str]] = {}
    for o in place.ops:
        if o.cpu:
            grouped.setdefault(_hint(o.op_type, o.reasons), []).append(o.op_type)
    return [f"{', '.join(ops)}: {text}" for text, ops in grouped.items()]


def _ops(path: Path) -> list[tuple[str, list[str]]]:
    """(op type, output tensor names) of every op in the first subgraph; no tensors are allocated."""
    from .tflite_tools import interpreter_class

    cls = interpreter_class()
    kwargs = {"model_path": str(path)}
    try:
        from ai_edge_litert.interpreter import OpResolverType

        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    except ImportError:
        pass
    interp = cls(**kwargs)
    out = []
    for op in interp._get_ops_details():
        names = []
        for t in op["outputs"]:
            try:
                names.append(interp._get_tensor_details(int(t), 0)["name"])
            except (TypeError, ValueError):  # older interpreters take no subgraph index
                names.append(interp._get_tensor_details(int(t))["name"])
        out.append((op["op_name"], names))
    return out


_WARN = re.compile(r"^Warning \(supported operators\) operator: (?P<op>[^,]+), ofm: '(?P<ofm>.*)'\s*$")


def parse_fallbacks(stdout: str) -> list[tuple[str, str, list[str]]]:
    """vela's CPU-fallback warnings: (op type, output tensor name, [reasons]).

    A reason is the ``Reason:`` line without its trailing (tensor name), plus the constraint lines under it."""
    found: list[tuple[str, str, list[str]]] = []
    in_reason = False
    for raw in stdout.splitlines():
        line = raw.strip()
        m = _WARN.match(line)
        if m:
            found.append((m["op"].strip(), m["ofm"], []))
            in_reason = False
        elif found and line.startswith("Reason:"):
            found[-1][2].append(re.sub(r"\s*\([^()]*\)$", "", line[len("Reason:") :].strip()))
            in_reason = True
        elif in_reason and line and not line.startswith(("Warning", "Info", "CPU ", "NPU ")):
            found[-1][2][-1] += f" — {line}"
        else:
            in_reason = False
    return found


def parse_summary(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[0] if rows else {}


def parse_layers(path: Path) -> list[NpuLayer]:
    if not path.is_file():
        return []
    layers = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            layers.append(
                NpuLayer(
                    original_op=row.get("Original Operator", ""),
                    npu_op=row.get("NNG Operator", ""),
                    target=row.get("Target", ""),
                    cycles=int(float(row.get("Op Cycles") or 0)),
                    macs=int(float(row.get("MAC Count") or 0)),
                    name=row.get("Name", ""),
                )
            )
    return layers


def placement(original: list, compiled: list, fallbacks: list, accelerator: str) -> Placement:
    """Per op type: ops of the int8 model folded into ethos-u custom ops (NPU) vs ops left in vela's model (CPU)."""
    totals: dict[str, int] = {}
    for op_type, _ in original:
        totals[op_type] = totals.get(op_type, 0) + 1
    cpu: dict[str, int] = {}
    reasons: dict[str, list[str]] = {}
    by_ofm = {ofm: (op, rs) for op, ofm, rs in fallbacks}
    for op_type, outs in compiled:
        if op_type == _CUSTOM:
            continue
        cpu[op_type] = cpu.get(op_type, 0) + 1
        got = next((by_ofm[o] for o in outs if o in by_ofm), None)
        for r in got[1] if got else ["left on the CPU by vela (no reason printed)"]:
            if r not in reasons.setdefault(op_type, []):
                reasons[op_type].append(r)
    ops = []
    for op_type in sorted(set(totals) | set(cpu)):
        c = cpu.get(op_type, 0)
        ops.append(
            OpPlacement(
                op_type=op_type, accelerator=max(totals.get(op_type, 0) - c, 0), cpu=c, reasons=reasons.get(op_type, [])
            )
        )
    return Placement(
        accelerator=accelerator,
        source="vela",
        accelerator_ops=sum(o.accelerator for o in ops),
        cpu_ops=sum(o.cpu for o in ops),
        partitions=sum(1 for t, _ in compiled if t == _CUSTOM),
        ops=ops,
    )


def _num(row: dict, key: str, cast=float):
    """A number from vela's CSV; None when absent or not finite (vela writes nan when nothing runs on the NPU)."""
    import math

    try:
        v = float(row[key])
    except (KeyError, TypeError, ValueError):
        return None
    return cast(v) if math.isfinite(v) else None


def _kib(row: dict, key: str):
    v = _num(row, key)
    return None if v is None else int(round(v * 1024))


def compile_model(model: Path, options: NpuOptions, workdir: Path) -> tuple[Path, NpuCompile]:
    """Run vela on ``model``; returns (vela model path, findings). Raises on vela errors and, with
    ``npu_strict``, on any CPU fallback."""
    require("ethosu.vela", "npu")
    from importlib import metadata

    out_dir = workdir / "vela"
    out_dir.mkdir(exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "ethosu.vela",
        str(model),
        "--accelerator-config",
        options.accelerator,
        "--output-dir",
        str(out_dir),
        "--verbose-performance",
        "--show-cpu-operations",
    ]
    if options.config:
        cfg = Path(options.config)
        argv += ["--config", str(cfg.resolve()) if cfg.is_file() else str(options.config)]  # or Arm/vela.ini
    if options.system_config:
        argv += ["--system-config", options.system_config]
    if options.memory_mode:
        argv += ["--memory-mode", options.memory_mode]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, timeout=1800)
    except subprocess.TimeoutExpired:
        raise EdgepackError("vela did not finish within 30 minutes", "check the model size and vela's options")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output")
        bad_option = proc.returncode == 2 or "usage:" in proc.stderr or "CliOptionError" in err
        raise (UsageError if bad_option else EdgepackError)(
            f"vela failed for --npu {options.accelerator}: {err[:300]}",
            "check --npu / --npu-config / --npu-system-config / --npu-memory-mode (vela --list-configs FILE)",
        )
    stem = model.stem
    vela_model = out_dir / f"{stem}_vela.tflite"
    summaries = sorted(out_dir.glob(f"{stem}_summary_*.csv"))
    if not vela_model.is_file() or not summaries:
        raise EdgepackError(
            f"vela wrote no {vela_model.name} or summary CSV",
            f"vela's output ended with: {proc.stdout.strip().splitlines()[-1:] or proc.stderr[-200:]}",
        )
    row = parse_summary(summaries[0])
    place = placement(_ops(model), _ops(vela_model), parse_fallbacks(proc.stdout), options.accelerator)
    total = place.accelerator_ops + place.cpu_ops
    fixes = hints(place)
    if options.config:
        config = Path(options.config).name
    elif "No configuration file specified" in proc.stdout + proc.stderr:
        config = "Arm/vela.ini (vela's default)"
    else:
        config = None
    time_s = _num(row, "inference_time")
    info = NpuCompile(
        compiler_version=metadata.version("ethos-u-vela"),
        accelerator=options.accelerator,
        system_config=row.get("system_config") or options.system_config,
        memory_mode=row.get("memory_mode") or options.memory_mode,
        config_file=config,
        model=ModelMember(member=MEMBER, bytes=vela_model.stat().st_size),
        numerics=NUMERICS,
        placement=place,
        npu_percent=round(100.0 * place.accelerator_ops / total, 2) if total else 0.0,
        sram_bytes=_kib(row, "sram_memory_used"),
        dram_bytes=_kib(row, "dram_memory_used"),
        on_chip_flash_bytes=_kib(row, "on_chip_flash_memory_used"),
        off_chip_flash_bytes=_kib(row, "off_chip_flash_memory_used"),
        macs=_num(row, "nn_macs", int),
        npu_cycles=_num(row, "cycles_npu", int),
        total_cycles=_num(row, "cycles_total", int),
        clock_hz=_num(row, "core_clock"),
        est_inference_ms=None if time_s is None or not place.accelerator_ops else time_s * 1000.0,
        est_inferences_per_s=_num(row, "inferences_per_second") if place.accelerator_ops else None,
        hints=fixes,
        layers=parse_layers(out_dir / f"{stem}_per-layer.csv"),
    )
    if options.strict and place.cpu_ops:
        cpu = ", ".join(f"{o.op_type}×{o.cpu} ({'; '.join(o.reasons)})" for o in place.ops if o.cpu)
        raise EdgepackError(
            f"--npu-strict: {place.cpu_ops} op(s) fall back to the CPU on {options.accelerator}: {cpu}",
            "; ".join(fixes) or "drop --npu-strict to bundle with the CPU fallback",
        )
    return vela_model, info
