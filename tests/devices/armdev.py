"""The emulated 64-bit ARM device (Debian bookworm arm64 under qemu-user, its own aarch64 sshd, Python, numpy,
onnxruntime and ai-edge-litert), driven by the scripts beside this file:

    sudo tests/devices/armdev/build.sh    # once, ~17 min, into /var/cache/edgepack/armdev-<recipe hash> (idempotent)
    sudo tests/devices/armdev/layer.sh executorch   # + torch/executorch (~2 min), keyed by layers/executorch.sh
    sudo tests/devices/armdev/start.sh    # aarch64 sshd on 127.0.0.1:$ARMDEV_PORT   (the fixture does this)
    sudo tests/devices/armdev/stop.sh

Latency measured here is emulated, not a Raspberry Pi's; results carry cpu.emulated = true.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent / "armdev"
REPO = HERE.parents[2]
# $ARMDEV_DIR, else a machine-wide cache keyed by the recipe's hash (where.sh), shared by every clone
DIR = Path(subprocess.run(["bash", str(HERE / "where.sh")], capture_output=True, text=True, check=True).stdout.strip())


def why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the emulated ARM device needs root (chroot, mount namespace, binfmt_misc)"
    if not (DIR / "rootfs" / "opt" / "venv" / "bin" / "python3").exists():
        return f"the emulated ARM device is not built: sudo {HERE / 'build.sh'} (~17 min)"
    if not Path("/proc/sys/fs/binfmt_misc").exists():
        return "binfmt_misc is not available on this kernel"
    return None


def why_layer_missing(name: str) -> str | None:
    """Why layer ``name`` (``armdev/layers/NAME.sh``, one more runtime) is not on the device, or None."""
    import hashlib

    key = hashlib.sha256((HERE / "layers" / f"{name}.sh").read_bytes()).hexdigest()[:16]
    if not (DIR / "layers" / f"{name}.{key}").exists():
        return f"the emulated ARM device lacks its {name} layer: sudo {HERE / 'layer.sh'} {name} (~2 min)"
    return None


@dataclass
class ArmDevice:
    port: int
    key: Path
    known_hosts: Path
    user: str = "device"

    @property
    def spec(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def ssh_options(self) -> dict:
        return dict(
            identity=self.key, known_hosts=self.known_hosts, ssh_config=DIR / "no-ssh-config", connect_timeout=30.0
        )

    def home(self) -> Path:
        """The device user's home, seen from the host (the rootfs is a directory here)."""
        return DIR / "rootfs" / "home" / self.user


def start(port: int) -> ArmDevice:
    env = {**os.environ, "ARMDEV_DIR": str(DIR), "ARMDEV_PORT": str(port)}
    proc = subprocess.run(["bash", str(HERE / "start.sh")], env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        stop()  # never leave a half-started device behind
        raise RuntimeError(f"the emulated ARM device did not start: {proc.stderr.strip()[-500:]}")
    keys = DIR / "keys"
    return ArmDevice(port=port, key=keys / "id_ed25519", known_hosts=keys / f"known_hosts.{port}")


def stop() -> None:
    subprocess.run(
        ["bash", str(HERE / "stop.sh")], env={**os.environ, "ARMDEV_DIR": str(DIR)}, capture_output=True, timeout=60
    )
