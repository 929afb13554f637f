"""A MobileNetV2-style network (inverted residuals, depthwise-separable convs, ReLU6), 1x3x224x224 -> 1000 logits.

Weights are generated from a fixed seed (no file): the point is realistic latency and quantization behaviour,
not ImageNet accuracy. BatchNorm running statistics are calibrated on ``calibration()`` images so activations
keep a sane scale through the depth, as a trained network's do.

    edgepack build samples/mobilenet/model.py:build_model --input image:1x3x224x224
    python samples/mobilenet/model.py calib.npz      # writes a calibration set (key "image")
"""

import sys

import numpy as np
import torch
from torch import nn

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def conv_bn(cin, cout, k, stride, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [conv_bn(cin, hidden, 1, 1)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, 1, act=False)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNetV2(nn.Module):
    # (expansion, channels, repeats, stride) as in the paper, width 1.0
    SETTINGS = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(self, classes=1000):
        super().__init__()
        layers = [conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, image):
        return self.classifier(self.pool(self.features(image)).flatten(1))


def calibration(n=32, seed=0):
    """Deterministic smooth random images, ImageNet-normalised: float32 [n, 3, 224, 224]."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 1, size=(n, 3, 14, 14)).astype(np.float32)
    img = low.repeat(16, axis=2).repeat(16, axis=3)  # blocky, image-like low-frequency content
    img += rng.normal(0, 0.05, size=img.shape).astype(np.float32)
    img = np.clip(img, 0, 1)
    return ((img - MEAN) / STD).astype(np.float32)


def build_model(seed=0):
    torch.manual_seed(seed)
    model = MobileNetV2()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    # Calibrate BatchNorm statistics on image-like data (as training would), then freeze.
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    with torch.no_grad():
        model(torch.from_numpy(calibration(8, seed=seed + 1)))
    return model.eval()


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "calib.npz"
    np.savez(out, image=calibration(int(sys.argv[2]) if len(sys.argv) > 2 else 32))
    print(f"wrote {out}")
