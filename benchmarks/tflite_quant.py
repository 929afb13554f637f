"""TFLite bundles of the MobileNetV2 sample (PyTorch -> litert-torch, NHWC I/O) in each precision the route offers:
p50 ratio to fp32, model size ratio, cosine to the PyTorch source.

Targets printed next to the figures: int8 p50 <= 0.5x fp32, size <= 0.3x.
    python benchmarks/tflite_quant.py [--runs 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import build_mobilenet, calibration_npz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration-samples", type=int, default=32)
    args = ap.parse_args()

    import edgepack
    from edgepack import converters
    from edgepack.errors import ValidationFailed

    modes = converters.precisions("torch", "tflite")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = calibration_npz(tmp / "calib.npz", args.calibration_samples)
        for mode in modes:
            note = ""
            kw = dict(to="tflite", layout="nhwc")
            try:
                built = build_mobilenet(tmp / f"{mode}.edgepack", mode, calib if mode == "int8" else None, **kw)
            except ValidationFailed as e:
                note = f" (validation gate failed: {e.message}; rebuilt with allow_mismatch)"
                built = build_mobilenet(tmp / f"{mode}.edgepack", mode, calib if mode == "int8" else None,
                                        allow_mismatch=True, **kw)
            res = edgepack.bench(built.path, "local", runs=args.runs, warmup=5, min_seconds=0,
                                 max_runs=args.runs, threads=args.threads).result
            worst = min(res.validation.values(), key=lambda m: m.cosine)
            rows.append((mode, res.latency_ms.p50, built.manifest.model.bytes, worst.cosine,
                         res.runtime_details.get("ops", {}).get("TRANSPOSE", 0), note))
    p50_ref, size_ref = rows[0][1], rows[0][2]
    print(f"MobileNetV2 (PyTorch -> TFLite via litert-torch, NHWC I/O), ai-edge-litert + XNNPACK, "
          f"{args.threads} threads, {args.runs} runs each; fp16/int16x8 are not offered by this route")
    print(f"{'precision':<10} {'p50 ms':>8} {'p50/fp32':>9} {'model MB':>9} {'size/fp32':>10} {'cosine':>9} {'Transpose':>10}")
    for mode, p50, size, cos, tr, note in rows:
        print(f"{mode:<10} {p50:8.2f} {p50 / p50_ref:9.3f} {size / 1e6:9.2f} {size / size_ref:10.3f} {cos:9.5f} "
              f"{tr:>10}{note}")
    int8 = next(r for r in rows if r[0] == "int8")
    print(f"target int8 p50 <= 0.5x fp32: {int8[1] / p50_ref:.3f}x ({'met' if int8[1] / p50_ref <= 0.5 else 'NOT met'})")
    print(f"target int8 size <= 0.3x fp32: {int8[2] / size_ref:.3f}x ({'met' if int8[2] / size_ref <= 0.3 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
