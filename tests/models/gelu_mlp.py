"""A GELU MLP (exact GELU: ONNX Erf), the pattern of ViT/BERT/ConvNeXt blocks: TFLite has no Erf builtin, so
onnx2tf must write it as TFLite-native ops (regression: ConvNeXt fp16 via ONNX failed with "cannot convert tf.Erf")."""

import torch
from torch import nn


def build_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
