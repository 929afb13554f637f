"""A toy vision transformer (patch embedding, pre-norm encoder layers with LayerNorm and softmax attention, class
token): static int8 with LayerNormalization quantized lost the logits (regression for the ops int8 keeps float)."""

import torch
from torch import nn


class TinyViT(nn.Module):
    def __init__(self, dim=32, depth=2, heads=4, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(
                nn.ModuleDict(
                    dict(
                        ln1=nn.LayerNorm(dim),
                        qkv=nn.Linear(dim, dim * 3),
                        proj=nn.Linear(dim, dim),
                        ln2=nn.LayerNorm(dim),
                        mlp=nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim)),
                    )
                )
            )
        self.heads, self.norm, self.head = heads, nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, pixel_values):
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        b, n, d = x.shape
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
            x = x + blk["proj"]((att @ v).transpose(1, 2).reshape(b, n, d))
            x = x + blk["mlp"](blk["ln2"](x))
        return self.head(self.norm(x)[:, 0])


def build_model():
    torch.manual_seed(0)
    return TinyViT().eval()
