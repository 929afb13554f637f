#!/bin/sh
# Layer "executorch" of the emulated arm64 device: the ExecuTorch runtime, run inside the rootfs by layer.sh.
#
# The executorch wheel's runtime links libtorch, so torch comes too. PyPI's torch for Linux aarch64 is a CPU
# build up to 2.10.0; from 2.11 it is a CUDA build that pulls cuda-toolkit, cuDNN and NCCL (several GB), which no
# Raspberry Pi wants and CI cannot afford. The CPU builds of newer torch are on download.pytorch.org, which this
# CI cannot reach. So this device gets the newest pair that PyPI has as CPU wheels: torch 2.10.0 and executorch
# 1.1.0 (the release built against it; --no-deps skips its export stack). That runtime is older than the
# exporter edgepack builds with (1.4.x): the runner reports the skew (ExecuTorch guarantees only that newer
# runtimes load older programs) and the tests check that what it runs still agrees with torch.
set -eu
PIP="/opt/venv/bin/pip install --no-cache-dir --progress-bar off"
$PIP torch==2.10.0
$PIP --no-deps executorch==1.1.0
/opt/venv/bin/python3 -c '
import torch
from executorch.extension.pybindings import _portable_lib as lib
print("layer executorch ok:", torch.__version__, lib._get_registered_backend_names())'
