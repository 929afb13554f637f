"""The placement gate: ``edgepack report --max-cpu-fallback-ops N`` and ``--min-accelerated-share 0.9`` fail when
an accelerator took less of the graph than required, with one failing check per op type that fell back to the CPU
(so JUnit shows each as a failing test case, named after the op type and the accelerator).

What is gated, per record: the bundle's NPU compile (``BenchRecord.npu_placement``, vela's Ethos-U placement
from the manifest) and the runner's placement (``result.placement``: a TFLite delegate, an onnxruntime EP).
The one exception: an NPU bundle benched on its CPU model (no ``--npu-model``) reports XNNPACK's placement on the
CPU reference, which says nothing about the NPU, so only its NPU compile is gated.
"""

from __future__ import annotations

from typing import Optional

from edgepack.types import BenchRecord, Check, Placement


def placements(rec: BenchRecord) -> list[Placement]:
    """The placements the gate checks for one record (see the module docstring)."""
    out = []
    if rec.npu_placement is not None:
        out.append(rec.npu_placement)
    p = rec.result.placement
    if p is not None and not (rec.npu_placement is not None and p.accelerator == "XNNPACK"):
        out.append(p)
    return out


def _label(p: Placement) -> str:
    return f"{p.accelerator or 'no accelerator'}, {p.source}"


def checks(
    entry: str, rec: BenchRecord, max_cpu_fallback_ops: Optional[int], min_accelerated_share: Optional[float]
) -> list[Check]:
    """The placement checks of one record; [] when neither limit is set."""
    if max_cpu_fallback_ops is None and min_accelerated_share is None:
        return []
    found = placements(rec)
    if not found:
        return [
            Check(
                entry=entry,
                name="placement",
                status="skip",
                message="no op placement recorded: build with --npu, bench TFLite bundles (delegate placement), "
                "or ONNX with --ep/--profile",
            )
        ]
    out: list[Check] = []
    for p in found:
        total = p.accelerator_ops + p.cpu_ops
        share = p.accelerator_ops / total if total else 0.0
        label = _label(p)
        failed = False
        none = " (no accelerator was requested: every op ran on the CPU)" if p.accelerator is None else ""
        if max_cpu_fallback_ops is not None:
            bad = p.cpu_ops > max_cpu_fallback_ops
            failed |= bad
            out.append(
                Check(
                    entry=entry,
                    name=f"cpu-fallback-ops ({label})",
                    status="fail" if bad else "pass",
                    value=float(p.cpu_ops),
                    limit=float(max_cpu_fallback_ops),
                    message=f"{p.cpu_ops} of {total} ops on the CPU (allowed {max_cpu_fallback_ops}){none}",
                )
            )
        if min_accelerated_share is not None:
            bad = share < min_accelerated_share - 1e-12
            failed |= bad
            out.append(
                Check(
                    entry=entry,
                    name=f"accelerated-share ({label})",
                    status="fail" if bad else "pass",
                    value=share,
                    limit=min_accelerated_share,
                    message=f"{p.accelerator_ops}/{total} ops ({share:.1%}) on {p.accelerator or 'an accelerator'} "
                    f"(required {min_accelerated_share:.1%}){none}",
                )
            )
        if failed:
            for o in p.ops:
                if o.cpu:
                    why = "; ".join(o.reasons) or "no reason given"
                    out.append(
                        Check(
                            entry=entry,
                            name=f"cpu-fallback {o.op_type} ({label})",
                            status="fail",
                            value=float(o.cpu),
                            message=f"{o.op_type} ×{o.cpu} ran on the CPU, not on "
                            f"{p.accelerator or 'an accelerator'}: {why}",
                        )
                    )
    return out
