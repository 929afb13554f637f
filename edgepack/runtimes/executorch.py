"""ExecuTorch bundles (``.pte`` programs, XNNPACK delegate) run with the ``executorch.runtime`` Python API of the
executorch wheel (``device_runners/executorch_runner.py``). The wheel's runtime links libtorch: the device needs
torch next to it, and a torch of the release that executorch was built against.

PyPI's Linux torch is a CUDA build (x86_64 always; aarch64 from 2.11 on), several GB with its NVIDIA libraries:
the CPU build is on https://download.pytorch.org/whl/cpu. Where a device reaches PyPI only, the newest CPU pair
for aarch64 is torch 2.10.0 + executorch 1.1.0, older than the exporter: the runner then warns
(``executorch_runner.version_skew``)."""

from __future__ import annotations

from typing import Any

from edgepack.registry import Runtime

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def exporter_versions() -> tuple[str, str]:
    """The executorch and torch releases that export here (what a device's runtime should match; '' if absent)."""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist).split("+")[0]
        except metadata.PackageNotFoundError:
            return ""

    return version("executorch"), version("torch")


def pip_steps(machine: str) -> tuple[tuple[str, ...], ...]:
    """How ``bench --install-runtime`` installs the runtime (and ``doctor`` advises it): numpy; torch of the
    exporter's release, the CPU build on Linux; the exporter's executorch without its export stack."""
    et, torch = exporter_versions()
    torch_step: tuple[str, ...] = ("torch" + ("==" + torch if torch else ""),)
    if machine in ("x86_64", "aarch64"):  # Linux (macOS says arm64): PyPI's torch would be the CUDA build
        torch_step += ("--index-url", CPU_INDEX)
    return (("numpy",), torch_step, ("--no-deps", "executorch" + ("==" + et if et else "")))


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
    from edgepack.devices import pip_commands

    steps = [s for s in pip_steps(arch if system == "Linux" else "") if not (pk.get("torch") and "torch" in s[0])]
    et = exporter_versions()[0]
    # executorch's own requirements are its export stack (pandas, coremltools, ...): the runtime needs none
    note = "the executorch runtime links libtorch" + (f"; edgepack exports with executorch {et}" if et else "")
    if system == "Linux" and not pk.get("torch"):
        note += "; PyPI's Linux torch is a CUDA build (several GB; aarch64 from 2.11 on): take the CPU build"
        if arch == "aarch64":
            note += (
                "; with PyPI only, the newest CPU pair is torch==2.10.0 + executorch==1.1.0 (--no-deps), older "
                "than the exporter: bench then warns, and validation says whether it still agrees"
            )
    return {"ready": False, "install": pip_commands(pip, steps), "note": note}


RUNTIME = Runtime(
    format="executorch",
    name="executorch",
    runner="executorch_runner.py",
    device_packages=("numpy", "torch", "executorch"),
    probe_packages=("numpy", "torch", "executorch"),
    advice=advice,
    notes="XNNPACK delegate + portable kernels; the executorch wheel's runtime needs torch on the device",
    pip_steps=pip_steps,
)
