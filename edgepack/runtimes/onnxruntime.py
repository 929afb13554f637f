"""ONNX bundles run with ONNX Runtime (``device_runners/onnx_runner.py``)."""

from __future__ import annotations

from typing import Any

from edgepack.registry import Flag, Runtime


def advice(facts: dict[str, Any], pip: str) -> dict[str, Any]:
    pk, arch = facts["packages"], facts["machine"]
    if pk.get("onnxruntime") and pk.get("numpy"):
        return {"ready": True, "runtime": f"onnxruntime {pk['onnxruntime']}"}
    if arch in ("armv7l", "armv6l"):  # ONNX Runtime publishes wheels for x86_64 and aarch64, not 32-bit ARM
        return {
            "ready": False,
            "install": None,
            "note": f"PyPI has no onnxruntime wheel for {arch}; use the TFLite format on this device",
        }
    return {"ready": False, "install": f"{pip} numpy onnxruntime"}


RUNTIME = Runtime(
    format="onnx",
    name="onnxruntime",
    runner="onnx_runner.py",
    device_packages=("numpy", "onnxruntime"),
    probe_packages=("numpy", "onnxruntime"),
    advice=advice,
    flags=(
        Flag(
            "ep",
            "ONNX: execution provider(s) to request (xnnpack, nnapi, qnn, acl, coreml, openvino, …); "
            "reports which node ran where",
            list,
        ),
        Flag("profile", "ONNX: per-op timing from separate profiled runs", bool, aliases=("--op-timing",)),
    ),
)
