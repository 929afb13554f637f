"""Shared set-up for the benchmark scripts: the MobileNetV2 sample as bundles."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MOBILENET = REPO / "samples" / "mobilenet" / "model.py"


def parser(doc: str, runs: int = 50):
    """The options every benchmark script shares."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=runs, help="timed runs per measurement")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads")
    return ap


def calibration_npz(path: Path, n: int = 32) -> Path:
    sys.path.insert(0, str(MOBILENET.parent))
    import model  # samples/mobilenet/model.py

    np.savez(path, image=model.calibration(n))
    return path


def build_mobilenet(out: Path, quantize: str = "none", calibration: Path | None = None, to: str = "onnx", **kw):
    import edgepack
    from edgepack.ui import set_quiet

    set_quiet(True)
    return edgepack.build(
        f"{MOBILENET}:build_model",
        to=to,
        quantize=quantize,
        calibration=calibration,
        inputs=["image:1x3x224x224"],
        output=out,
        **kw,
    )


def keras_twin(torch_model):
    """The same network in Keras (channels-last), weights copied from the PyTorch model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras
    from torch import nn

    def bn(t_bn):
        layer = keras.layers.BatchNormalization(epsilon=t_bn.eps, momentum=0.9)
        return layer, [
            t_bn.weight.detach().numpy(),
            t_bn.bias.detach().numpy(),
            t_bn.running_mean.numpy(),
            t_bn.running_var.numpy(),
        ]

    assigns = []

    def conv_bn(x, seq):
        conv, norm = seq[0], seq[1]
        k, s, groups = conv.kernel_size[0], conv.stride[0], conv.groups
        if s == 2:
            x = keras.layers.ZeroPadding2D(k // 2)(x)
        pad = "valid" if s == 2 or k == 1 else "same"
        w = conv.weight.detach().numpy()
        if groups > 1:
            layer = keras.layers.DepthwiseConv2D(k, s, padding=pad, use_bias=False)
            assigns.append((layer, [w.transpose(2, 3, 0, 1)]))
        else:
            layer = keras.layers.Conv2D(conv.out_channels, k, s, padding=pad, use_bias=False)
            assigns.append((layer, [w.transpose(2, 3, 1, 0)]))
        x = layer(x)
        b, weights = bn(norm)
        assigns.append((b, weights))
        x = b(x)
        if len(seq) > 2:
            x = keras.layers.ReLU(6.0)(x)
        return x

    inp = keras.Input((224, 224, 3), batch_size=1, name="image")
    x = inp
    for block in torch_model.features:
        if isinstance(block, nn.Sequential):
            x = conv_bn(x, block)
        else:
            y = x
            for seq in block.block:
                y = conv_bn(y, seq)
            x = keras.layers.Add()([x, y]) if block.use_res else y
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(torch_model.classifier.out_features)
    out = dense(x)
    assigns.append(
        (dense, [torch_model.classifier.weight.detach().numpy().T, torch_model.classifier.bias.detach().numpy()])
    )
    model = keras.Model(inp, out)
    for layer, weights in assigns:
        layer.set_weights(weights)
    return model


def interleaved(bundles: dict, args) -> tuple[dict, dict]:
    """Bench ``bundles`` (key -> bundle path) on the local device in ``args.rounds`` interleaved rounds (a shared
    machine's drift hits them alike): key -> median of the per-round p50s, and key -> the last round's RunResult."""
    import statistics

    import edgepack

    p50s: dict = {k: [] for k in bundles}
    last = {}
    for _ in range(args.rounds):
        for key, path in bundles.items():
            r = edgepack.bench(
                path, "local", runs=args.runs, warmup=5, min_seconds=0, max_runs=args.runs, threads=args.threads
            ).result
            p50s[key].append(r.latency_ms.p50)
            last[key] = r
    return {k: statistics.median(v) for k, v in p50s.items()}, last
