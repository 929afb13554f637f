"""A quantization-hostile model: a sensor classifier whose first layer reads one feature in raw units.

Input ``x`` [N, 16]: feature 0 is a raw reading (~10 000 ± 2 000, e.g. a pressure in Pa), features 1..15 are
standardized (~N(0, 1)). ``fc1`` scales the raw feature down by 1e-4 (the normalization the network learned), so in
float every feature counts. In int8, ``fc1``'s input activations share one scale: their range is set by the raw
feature (~63 per step), and the 15 standardized features round to 0 or one step — the classic outlier-range
failure. Every later layer sees normal ranges. Keeping ``fc1`` in float recovers the accuracy.

Weights are fixed (seeded), not trained; the labels of ``dataset()`` are the float model's own classes, so float
top-1 is 100% by construction and int8's top-1 measures what quantization loses.
    edgepack build tests/models/outlier_mlp.py:build_model --input x:1x16 --quantize int8 --calibration C.npz
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

RAW_MEAN, RAW_STD, RAW_WEIGHT = 10_000.0, 2_000.0, 1e-4


class SensorMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def build_model() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    m = SensorMLP()
    with torch.no_grad():
        for fc in (m.fc1, m.fc2, m.fc3):
            fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) / fc.in_features**0.5)
            fc.bias.copy_(torch.randn(fc.bias.shape, generator=g) * 0.1)
        m.fc1.weight[:, 0] *= RAW_WEIGHT  # the raw feature, scaled to the others' size
        m.fc1.bias -= m.fc1.weight[:, 0] * RAW_MEAN  # and centred
    return m.eval()


def inputs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x[:, 0] = RAW_MEAN + RAW_STD * x[:, 0]
    return x


def dataset(n: int, seed: int = 0, labels: bool = False) -> dict[str, np.ndarray]:
    x = inputs(n, seed)
    out = {"x": x}
    if labels:
        with torch.no_grad():
            out["labels"] = build_model()(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    return out
