"""What a device has, for ``edgepack doctor``: arch, OS, Python, numpy, runtimes, CPU, memory, disk, NPUs.

Standard library only (numpy and runtimes are looked up, not required); prints one JSON document.
"""

import glob
import json
import os
import platform
import shutil
import sys
from typing import Any, Optional, Sequence

try:  # imported as edgepack.device_runners.probe
    from . import runner_common as common
except ImportError:  # run as a script on the device
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import runner_common as common  # type: ignore[no-redef]

# the distributions to look up come as arguments (edgepack passes each runtime's declared ones); these without
PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu", "coremltools")
NPU_NODES = (
    "/dev/apex_*",
    "/dev/ethosu*",
    "/dev/galcore",
    "/dev/rknpu*",
    "/dev/dri/renderD*",
    "/dev/accel/*",
    "/dev/vipcore",
    "/dev/neuron*",
)
DELEGATE_LIBS = (
    "libedgetpu.so*",
    "libarmnnDelegate.so*",
    "libvx_delegate.so*",
    "libethosu_op_delegate.so*",
    "libQnnTFLiteDelegate.so*",
    "libneuron_adapter*.so*",
)
LIB_DIRS = (
    "/usr/lib",
    "/usr/local/lib",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf",
    "/usr/lib/x86_64-linux-gnu",
    "/opt/*/lib",
)


def _version(dist: str) -> Optional[str]:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # not installed, or no importlib.metadata (Python < 3.8)
        return None


def _os_name() -> str:
    for line in common.read_text("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _mem_available_mb() -> Optional[int]:
    for line in common.read_text("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return None


def probe(packages: Sequence[str] = PACKAGES) -> dict[str, Any]:
    home = os.path.expanduser("~")
    disk = shutil.disk_usage(home)
    libs: list[str] = []
    for d in LIB_DIRS:
        for pattern in DELEGATE_LIBS:
            libs.extend(glob.glob(os.path.join(d, pattern)))
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "os": _os_name(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "libc": "-".join(platform.libc_ver()) or None,
        "externally_managed": (
            bool(
                glob.glob(os.path.join(sys.prefix, "lib", "python3*", "EXTERNALLY-MANAGED"))
                or glob.glob("/usr/lib/python3*/EXTERNALLY-MANAGED")
            )
            and sys.prefix == sys.base_prefix
        ),
        "packages": dict((p, _version(p)) for p in packages),
        "cpu_count": os.cpu_count(),
        "cpu": common.cpu_fingerprint(),
        "core_clusters": common.core_clusters(),
        "mem_available_mb": _mem_available_mb(),
        "disk_free_mb": disk.free // (1024 * 1024),
        "npu_device_nodes": sorted(set(n for pattern in NPU_NODES for n in glob.glob(pattern))),
        "delegate_libraries": sorted(set(libs)),
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(probe(tuple(sys.argv[1:]) or PACKAGES), sort_keys=True) + "\n")
