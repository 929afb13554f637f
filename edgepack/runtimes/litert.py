"""TFLite bundles run with LiteRT (``device_runners/tflite_runner.py``: ai-edge-litert, else tflite-runtime, else
tensorflow.lite)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgepack.errors import UsageError
from edgepack.registry import Flag, Runtime

if TYPE_CHECKING:
    from edgepack.types import Manifest


def advice(facts: dict[str, Any], pip: str) -> dict[str, Any]:
    pk, arch = facts["packages"], facts["machine"]
    numpy_major = int(pk["numpy"].split(".")[0]) if pk.get("numpy") else None
    if pk.get("ai-edge-litert") and pk.get("numpy"):
        return {"ready": True, "runtime": f"ai-edge-litert {pk['ai-edge-litert']}"}
    if pk.get("tflite-runtime") and numpy_major == 1:
        return {"ready": True, "runtime": f"tflite-runtime {pk['tflite-runtime']}"}
    if pk.get("tflite-runtime") and numpy_major and numpy_major >= 2:
        return {
            "ready": False,
            "install": f"{pip} 'numpy<2'",
            "note": "tflite-runtime is built for numpy 1.x and fails under numpy 2",
        }
    if pk.get("tensorflow") or pk.get("tensorflow-cpu"):
        return {"ready": True, "runtime": "tensorflow.lite"}
    if arch in ("armv7l", "armv6l"):
        return {
            "ready": False,
            "install": f"{pip} tflite-runtime 'numpy<2'",
            "note": "tflite-runtime is the only TFLite wheel for 32-bit ARM",
        }
    return {"ready": False, "install": f"{pip} numpy ai-edge-litert"}


def check(manifest: Manifest, values: dict[str, Any]) -> None:
    if values.get("npu_model") and manifest.npu is None:
        raise UsageError(
            "--npu-model: this bundle has no NPU model",
            "build it with --npu ethos-u55-128 (or your board's accelerator)",
        )


RUNTIME = Runtime(
    format="tflite",
    name="litert",
    runner="tflite_runner.py",
    device_packages=("numpy", "ai-edge-litert"),
    probe_packages=("numpy", "ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu"),
    advice=advice,
    flags=(
        Flag("delegate", "TFLite: delegate library on the device", str),
        Flag("delegate_option", "TFLite: KEY=VALUE for the delegate; repeatable", list),
        Flag("no_xnnpack", "TFLite: without the default XNNPACK delegate", bool),
        Flag("npu_model", "TFLite: run the bundle's NPU model (vela's; needs the board's delegate)", bool),
    ),
    check=check,
)
