"""A small CNN for scikit-learn's 8x8 digits: input ``image`` [N, 1, 8, 8] in [0, 1], output 10 logits.

``build_model()`` loads the committed weights from weights.npz with numpy (no pickle).
Use it as an edgepack source:  edgepack build samples/digits/model.py:build_model --input image:1x1x8x8
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS = Path(__file__).with_name("weights.npz")


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, image):
        x = self.pool(self.features(image)).flatten(1)
        return self.fc(x)


def build_model(weights: Path = WEIGHTS) -> nn.Module:
    model = DigitsCNN()
    with np.load(weights, allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    model.load_state_dict(state)
    return model.eval()
