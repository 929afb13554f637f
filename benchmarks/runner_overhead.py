"""edgepack's reported p50 vs a bare onnxruntime session.run loop (same process settings, same threads).

Target: the ratio within ±5%. Rounds alternate the two measurements; the median ratio is printed.
    python benchmarks/runner_overhead.py [--runs 100] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import build_mobilenet, parser  # noqa: E402


def bare_p50(model_path: str, x: np.ndarray, runs: int, warmup: int, threads: int) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])
    feeds = {"image": x}
    for _ in range(warmup):
        sess.run(None, feeds)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        samples.append((time.perf_counter() - t0) * 1000)
    return float(np.median(samples))


def main() -> int:
    ap = parser(__doc__, runs=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import io
    import zipfile

    import edgepack

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        built = build_mobilenet(tmp / "mnv2.fp32.edgepack")
        with zipfile.ZipFile(built.path) as zf:
            (tmp / "model.onnx").write_bytes(zf.read("model.onnx"))
            golden = np.load(io.BytesIO(zf.read("golden.npz")))
            x = golden["input/image"][:1]
        ratios = []
        print(f"MobileNetV2 fp32 ONNX, {args.threads} threads, {args.runs} runs x {args.rounds} rounds")
        for r in range(args.rounds):
            bare = bare_p50(str(tmp / "model.onnx"), x, args.runs, args.warmup, args.threads)
            ep = edgepack.bench(
                built.path,
                "local",
                runs=args.runs,
                warmup=args.warmup,
                min_seconds=0,
                max_runs=args.runs,
                threads=args.threads,
            ).result.latency_ms.p50
            ratios.append(ep / bare)
            print(
                f"  round {r + 1}: bare session.run p50 {bare:.2f} ms | edgepack p50 {ep:.2f} ms | "
                f"ratio {ep / bare:.3f}"
            )
        med = statistics.median(ratios)
        verdict = "within" if abs(med - 1) <= 0.05 else "OUTSIDE"
        print(f"median ratio edgepack/bare = {med:.3f} ({verdict} the ±5% target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
