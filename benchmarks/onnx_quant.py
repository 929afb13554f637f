"""fp32 vs dynamic vs static-int8 ONNX bundles of the MobileNetV2 sample: latency, size, agreement.

Targets printed next to the figures: static int8 p50 <= 0.7x fp32, size <= 0.3x fp32.
    python benchmarks/onnx_quant.py [--runs 50] [--threads 2]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import build_mobilenet, calibration_npz, parser  # noqa: E402


def main() -> int:
    ap = parser(__doc__, runs=50)
    ap.add_argument("--calibration-samples", type=int, default=32)
    args = ap.parse_args()

    import edgepack
    from edgepack.errors import ValidationFailed

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = calibration_npz(tmp / "calib.npz", args.calibration_samples)
        for mode in ("none", "dynamic", "int8"):
            note = ""
            try:
                built = build_mobilenet(tmp / f"{mode}.edgepack", mode, calib if mode == "int8" else None)
            except ValidationFailed as e:
                note = f" (validation gate failed: {e.message}; rebuilt with --allow-mismatch)"
                built = build_mobilenet(
                    tmp / f"{mode}.edgepack", mode, calib if mode == "int8" else None, allow_mismatch=True
                )
            res = edgepack.bench(
                built.path, "local", runs=args.runs, warmup=5, min_seconds=0, max_runs=args.runs, threads=args.threads
            ).result
            worst = min(res.validation.values(), key=lambda m: m.cosine)
            rows.append(
                (
                    mode,
                    res.latency_ms.p50,
                    built.manifest.model.bytes,
                    built.bytes,
                    worst.cosine,
                    worst.top1_agreement,
                    note,
                )
            )
    p50_ref, size_ref = rows[0][1], rows[0][2]
    print(f"MobileNetV2 (1x3x224x224) ONNX on this machine, {args.threads} threads, {args.runs} runs each")
    print("size = the model file; the bundle adds golden inputs/outputs (~2.4 MB here) and compression")
    print(
        f"{'precision':<10} {'p50 ms':>8} {'p50/fp32':>9} {'model MB':>9} {'size/fp32':>10} {'bundle MB':>10} "
        f"{'cosine':>9} {'top-1':>6}"
    )
    for mode, p50, size, bundle, cos, top1, note in rows:
        t1 = "–" if top1 is None else f"{top1 * 100:.0f}%"
        print(
            f"{mode:<10} {p50:8.2f} {p50 / p50_ref:9.3f} {size / 1e6:9.2f} {size / size_ref:10.3f} "
            f"{bundle / 1e6:10.2f} {cos:9.5f} {t1:>6}{note}"
        )
    int8 = rows[2]
    print(
        f"target static int8 p50 <= 0.7x fp32: {int8[1] / p50_ref:.3f}x "
        f"({'met' if int8[1] / p50_ref <= 0.7 else 'NOT met'})"
    )
    print(
        f"target static int8 size <= 0.3x fp32: {int8[2] / size_ref:.3f}x "
        f"({'met' if int8[2] / size_ref <= 0.3 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
