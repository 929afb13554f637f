"""ExecuTorch bundles (``.pte`` programs, XNNPACK delegate) run with the ``executorch.runtime`` Python API of the
executorch wheel (``device_runners/executorch_runner.py``). The wheel's runtime links libtorch: the device needs
torch next to it (pip installs it as executorch's dependency; on x86_64 PyPI's default torch is the CUDA build,
so install the CPU wheel first from https://download.pytorch.org/whl/cpu)."""

from __future__ import annotations

from typing import Any

from edgepack.registry import Runtime


def advice(facts: dict[str, Any], pip: str) -> dict[str, Any]:
    pk, arch, system = facts["packages"], facts["machine"], facts["system"]
    if pk.get("executorch") and pk.get("torch") and pk.get("numpy"):
        return {"ready": True, "runtime": f"executorch {pk['executorch']} (torch {pk['torch']})"}
    if system == "Linux" and arch not in ("x86_64", "aarch64"):
        return {
            "ready": False,
            "install": None,
            "note": f"PyPI has executorch wheels for Linux x86_64/aarch64 and macOS arm64, not {arch}",
        }
    if system == "Linux" and arch == "x86_64" and not pk.get("torch"):
        return {
            "ready": False,
            "install": f"{pip} torch --index-url https://download.pytorch.org/whl/cpu && {pip} numpy executorch",
            "note": "the executorch runtime links libtorch; PyPI's default x86_64 torch is the CUDA build",
        }
    return {"ready": False, "install": f"{pip} numpy torch executorch"}


RUNTIME = Runtime(
    format="executorch",
    name="executorch",
    runner="executorch_runner.py",
    device_packages=("numpy", "torch", "executorch"),
    probe_packages=("numpy", "torch", "executorch"),
    advice=advice,
    notes="XNNPACK delegate + portable kernels; the executorch wheel's runtime needs torch on the device",
)
