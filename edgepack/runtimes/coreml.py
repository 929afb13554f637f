"""CoreML bundles run with Core ML on macOS (``device_runners/coreml_runner.py``, through coremltools)."""

from __future__ import annotations

from typing import Any, Optional

from edgepack.registry import Flag, Runtime


def advice(facts: dict[str, Any], pip: str) -> Optional[dict[str, Any]]:
    if facts["system"] != "Darwin":
        return None  # CoreML prediction needs macOS: not offered on this device
    pk = facts["packages"]
    if pk.get("coremltools"):
        return {"ready": True, "runtime": f"coremltools {pk['coremltools']}"}
    return {"ready": False, "install": f"{pip} numpy coremltools"}


RUNTIME = Runtime(
    format="coreml",
    name="coreml",
    runner="coreml_runner.py",
    device_packages=("numpy", "coremltools"),
    probe_packages=("numpy", "coremltools"),
    advice=advice,
    flags=(Flag("compute_units", "CoreML bundles on a Mac: cpu | gpu | ane | all (default all)", str),),
    notes="prediction needs macOS; elsewhere bundles are built and checked statically (validation pending-device)",
)
