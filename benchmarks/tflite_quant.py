"""TFLite bundles of the MobileNetV2 sample in every precision: from PyTorch (litert-torch, NHWC I/O: none, dynamic,
int8) and from its Keras twin with the same weights (TFLiteConverter: none, fp16, dynamic, int8, int16x8).
Per row: p50 ratio to that route's fp32, model size ratio, cosine to the source framework.

Targets printed next to the figures: int8 p50 <= 0.5x fp32, size <= 0.3x.
    python benchmarks/tflite_quant.py [--runs 50] [--threads 2]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import MOBILENET, build_mobilenet, calibration_npz, keras_twin, parser  # noqa: E402


def main() -> int:
    ap = parser(__doc__, runs=50)
    ap.add_argument("--calibration-samples", type=int, default=32)
    args = ap.parse_args()

    import edgepack
    from edgepack import registry
    from edgepack.errors import ValidationFailed

    rows = {"torch": [], "keras": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = calibration_npz(tmp / "calib.npz", args.calibration_samples)
        import numpy as np

        sys.path.insert(0, str(MOBILENET.parent))
        import model as mn

        twin = keras_twin(mn.build_model())
        twin.save(tmp / "twin.keras")
        np.savez(tmp / "calib_nhwc.npz", image=np.load(calib)["image"].transpose(0, 2, 3, 1))
        for route, modes in (
            ("torch", registry.route("torch-litert").precisions),
            ("keras", registry.route("keras-tflite").precisions),
        ):
            for mode in modes:
                note = ""
                cal = (calib if route == "torch" else tmp / "calib_nhwc.npz") if mode in ("int8", "int16x8") else None

                def make(route=route, mode=mode, cal=cal, **extra):
                    if route == "torch":
                        return build_mobilenet(
                            tmp / f"{route}.{mode}.edgepack", mode, cal, to="tflite", layout="nhwc", **extra
                        )
                    return edgepack.build(
                        tmp / "twin.keras",
                        to="tflite",
                        quantize=mode,
                        calibration=cal,
                        output=tmp / f"{route}.{mode}.edgepack",
                        **extra,
                    )

                try:
                    built = make()
                except ValidationFailed as e:
                    note = (
                        f"  gate failed (cosine < {e.message.split('< ')[-1].split(' ')[0]}), kept with allow_mismatch"
                    )
                    built = make(allow_mismatch=True)
                res = edgepack.bench(
                    built.path,
                    "local",
                    runs=args.runs,
                    warmup=5,
                    min_seconds=0,
                    max_runs=args.runs,
                    threads=args.threads,
                ).result
                worst = min(res.validation.values(), key=lambda m: m.cosine)
                rows[route].append(
                    (
                        mode,
                        res.latency_ms.p50,
                        built.manifest.model.bytes,
                        worst.cosine,
                        res.runtime_details.get("ops", {}).get("TRANSPOSE", 0),
                        note,
                    )
                )
    print(f"MobileNetV2 TFLite, ai-edge-litert + XNNPACK, {args.threads} threads, {args.runs} runs each")
    for route, title in (("torch", "PyTorch -> litert-torch (NHWC I/O)"), ("keras", "Keras twin -> TFLiteConverter")):
        r = rows[route]
        p50_ref, size_ref = r[0][1], r[0][2]
        print(title)
        print(
            f"  {'precision':<10} {'p50 ms':>8} {'p50/fp32':>9} {'model MB':>9} {'size/fp32':>10} {'cosine':>9} "
            f"{'Transpose':>10}"
        )
        for mode, p50, size, cos, tr, note in r:
            print(
                f"  {mode:<10} {p50:8.2f} {p50 / p50_ref:9.3f} {size / 1e6:9.2f} {size / size_ref:10.3f} "
                f"{cos:9.5f} {tr:>10}{note}"
            )
        int8 = next(x for x in r if x[0] == "int8")
        print(
            f"  target int8 p50 <= 0.5x fp32: {int8[1] / p50_ref:.3f}x "
            f"({'met' if int8[1] / p50_ref <= 0.5 else 'NOT met'}); size <= 0.3x: {int8[2] / size_ref:.3f}x "
            f"({'met' if int8[2] / size_ref <= 0.3 else 'NOT met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
