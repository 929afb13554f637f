"""Shared set-up for the benchmark scripts: the MobileNetV2 sample as bundles."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MOBILENET = REPO / "samples" / "mobilenet" / "model.py"


def calibration_npz(path: Path, n: int = 32) -> Path:
    sys.path.insert(0, str(MOBILENET.parent))
    import model  # samples/mobilenet/model.py

    np.savez(path, image=model.calibration(n))
    return path


def build_mobilenet(out: Path, quantize: str = "none", calibration: Path | None = None, to: str = "onnx", **kw):
    import edgepack
    from edgepack.ui import set_quiet

    set_quiet(True)
    return edgepack.build(f"{MOBILENET}:build_model", to=to, quantize=quantize, calibration=calibration,
                          inputs=["image:1x3x224x224"], output=out, **kw)
