"""Layout cost: the MobileNetV2 sample converted from PyTorch (litert-torch, NHWC I/O) vs a Keras twin with the
same weights converted by the TFLite converter. Target: torch-built p50 <= 1.1x the Keras-built one.
Prints both p50s, their ratio, the outputs' agreement and each model's Transpose count.
    python benchmarks/layout.py [--runs 50] [--threads 2]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import MOBILENET, build_mobilenet, keras_twin, parser  # noqa: E402


def main() -> int:
    ap = parser(__doc__, runs=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import edgepack

    sys.path.insert(0, str(MOBILENET.parent))
    import model as mn

    torch_model = mn.build_model()
    twin = keras_twin(torch_model)
    x = mn.calibration(1, seed=7)
    import torch

    with torch.no_grad():
        want = torch_model(torch.from_numpy(x)).numpy()
    got = twin(x.transpose(0, 2, 3, 1), training=False).numpy()
    cos = float((want * got).sum() / np.linalg.norm(want) / np.linalg.norm(got))
    print(f"Keras twin vs PyTorch on one image: cosine {cos:.6f}, max abs err {np.abs(want - got).max():.2e}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        twin.save(tmp / "twin.keras")
        from edgepack.ui import set_quiet

        set_quiet(True)
        t_built = build_mobilenet(tmp / "torch.edgepack", to="tflite", layout="nhwc")
        k_built = edgepack.build(tmp / "twin.keras", to="tflite", output=tmp / "keras.edgepack")
        # the other candidate route for PyTorch models: torch -> ONNX -> onnx2tf -> TFLite
        from edgepack.bundle import read_member

        onnx_built = build_mobilenet(tmp / "mnv2.onnx.edgepack", to="onnx")
        (tmp / "mnv2.onnx").write_bytes(read_member(onnx_built.path, "model.onnx"))
        o_built = edgepack.build(tmp / "mnv2.onnx", to="tflite", layout="nhwc", output=tmp / "o2t.edgepack")
        o = edgepack.bench(
            o_built.path, "local", runs=args.runs, warmup=5, min_seconds=0, max_runs=args.runs, threads=args.threads
        ).result
        ratios, t_p50s, k_p50s = [], [], []
        for _ in range(args.rounds):
            t = edgepack.bench(
                t_built.path, "local", runs=args.runs, warmup=5, min_seconds=0, max_runs=args.runs, threads=args.threads
            ).result
            k = edgepack.bench(
                k_built.path, "local", runs=args.runs, warmup=5, min_seconds=0, max_runs=args.runs, threads=args.threads
            ).result
            t_p50s.append(t.latency_ms.p50)
            k_p50s.append(k.latency_ms.p50)
            ratios.append(t.latency_ms.p50 / k.latency_ms.p50)
        tr_t = t.runtime_details["ops"].get("TRANSPOSE", 0)
        tr_k = k.runtime_details["ops"].get("TRANSPOSE", 0)
    med = statistics.median(ratios)
    print(f"MobileNetV2 fp32 TFLite, {args.threads} threads, {args.runs} runs x {args.rounds} rounds")
    print(f"  PyTorch -> litert-torch (NHWC I/O): p50 {statistics.median(t_p50s):.2f} ms, Transpose ops {tr_t}")
    print(f"  Keras twin -> TFLiteConverter:      p50 {statistics.median(k_p50s):.2f} ms, Transpose ops {tr_k}")
    print(
        f"  PyTorch -> ONNX -> onnx2tf (NHWC):  p50 {o.latency_ms.p50:.2f} ms (one run), Transpose ops "
        f"{o.runtime_details['ops'].get('TRANSPOSE', 0)}"
    )
    print(f"median ratio torch/keras = {med:.3f} (target <= 1.1: {'met' if med <= 1.1 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
