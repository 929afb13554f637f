"""A small YOLOv5-style detector whose Detect head builds its anchor grids on the first forward and caches them
(self.grid / self.anchor_grid), then multiplies with them: the pattern that broke torch -> TFLite when the
reference run happened under torch.inference_mode(). Two outputs: decoded boxes [1, N, 9] and raw map [1,3,4,4,9]."""

import torch
from torch import nn


class Detect(nn.Module):
    def __init__(self, nc=4, ch=(16, 32), anchors=((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119)), power=False):
        super().__init__()
        self.power = power
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.stride = (8.0, 16.0)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def _make_grid(self, nx, ny, i):
        y, x = torch.arange(ny, dtype=torch.float32), torch.arange(nx, dtype=torch.float32)
        yv, xv = torch.meshgrid(y, x, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).expand(1, self.na, ny, nx, 2)
        return grid, anchor_grid

    def forward(self, xs):
        z, raw = [], []
        for i in range(self.nl):
            x = self.m[i](xs[i])
            bs, _, ny, nx = x.shape
            x = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if self.grid[i].shape[2:4] != x.shape[2:4]:
                self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
            xy, wh, conf = x.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + self.grid[i]) * self.stride[i]
            # YOLOv5 writes (wh * 2) ** 2, which litert-torch 0.10 cannot lower (tfl.pow)
            wh = ((wh * 2) ** 2 if self.power else (wh * 2) * (wh * 2)) * self.anchor_grid[i]
            z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
            raw.append(x)
        return torch.cat(z, 1), raw[-1]


class TinyYolo(nn.Module):
    def __init__(self, power=False):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(16, 16, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(16, 16, 3, 2, 1),
            nn.SiLU(),
        )
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.SiLU())
        self.detect = Detect(power=power)

    def forward(self, image):
        p3 = self.stem(image)
        return self.detect([p3, self.down(p3)])


def build_model():
    """The cached-anchor head with multiplications only: litert-torch converts it (once the reference run leaves
    the module alone)."""
    torch.manual_seed(0)
    return TinyYolo().eval()


def build_model_pow():
    """The same with YOLOv5's ``** 2``: litert-torch refuses it, so a torch -> TFLite build falls back."""
    torch.manual_seed(0)
    return TinyYolo(power=True).eval()
