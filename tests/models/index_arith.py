"""Index arithmetic on integer tensors beside int8 layers, the pattern of Hugging Face attention masks
(``torch.arange(n) + 0`` used as an index). Regression: ExecuTorch int8 of BERT and DETR failed with "tensors
used as indices must be long, int, byte or bool tensors" because XNNPACKQuantizer turned the ``0`` into a float32
buffer, making the index float."""

import torch
from torch import nn


class IndexArith(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1]) * 1 + 0  # int64 arithmetic with Python numbers
        return self.fc2(torch.relu(self.fc1(x[:, pos.flip(0)])))


def build_model():
    torch.manual_seed(0)
    return IndexArith().eval()
