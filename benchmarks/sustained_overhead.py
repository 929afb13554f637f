"""The cost of bench --sustained's sampling: does reading the sensors between windows slow the timed runs?

Sustained mode reads the clocks, thermal zones and throttling flags after every window (never inside one). This
measures what that costs the p50, in two ways, on the MobileNetV2 sample (fp32 ONNX, onnxruntime, 2 threads):

1. paired windows (the figure quoted): one long sustained loop (``runner_common.sustained.measure``, in process)
   whose sensors are read after every other window only; windows alternate, so the host's drift cancels. Ratio =
   median p50 of the windows that follow a sensor read / median p50 of those that follow none (target < 1.02).
2. end to end: ``edgepack.bench --sustained`` vs a plain ``edgepack.bench`` of the same length, alternating (on a
   shared host this ratio mostly measures the host's drift between runs).

The sensors are a fake /sys tree (EDGEPACK_SYSFS_ROOT: 2 cores' cpufreq, a thermal zone with a trip point, the Pi
firmware's get_throttled), since this host exposes none; on a board the same few small files come from /sys.
    python benchmarks/sustained_overhead.py [--seconds 120] [--window 0.25] [--rounds 0] [--threads 2]
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import build_mobilenet, parser  # noqa: E402


def fake_sysfs(root: Path) -> None:
    files = {"sys/devices/system/cpu/online": "0-1"}
    for i in range(2):
        for name in ("cpuinfo_max_freq", "scaling_cur_freq"):
            files[f"sys/devices/system/cpu/cpu{i}/cpufreq/{name}"] = "1800000"
    files.update(
        {
            "sys/class/thermal/thermal_zone0/type": "cpu-thermal",
            "sys/class/thermal/thermal_zone0/temp": "52000",
            "sys/class/thermal/thermal_zone0/trip_point_0_type": "passive",
            "sys/class/thermal/thermal_zone0/trip_point_0_temp": "80000",
            "sys/devices/platform/soc/soc:firmware/get_throttled": "0",
        }
    )
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")


def paired_windows(model: Path, x, seconds: float, window: float, threads: int) -> None:
    import numpy as np
    import onnxruntime as ort
    from edgepack.device_runners.runner_common import sustained as rs

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    feeds = {"image": x}

    class EveryOther(rs.Sensors):
        """Reads the sensors after even windows only; after odd ones it hands back the last reading."""

        calls = 0
        last: dict = {}

        def read(self):
            EveryOther.calls += 1
            if EveryOther.calls % 2 or not EveryOther.last:  # the reading before window 1, then every other one
                EveryOther.last = super().read()
            return dict(EveryOther.last)

    real = rs.Sensors
    rs.Sensors = EveryOther
    try:
        doc, _, _, _ = rs.measure(lambda: sess.run(None, feeds), seconds, window, 10, 10**7, 1.0, [0, 1])
    finally:
        rs.Sensors = real
    w = doc["windows"]
    # read() call 1 is the reading before window index 0; call j + 2 follows window index j and reads for real
    # when odd. So windows 2, 4, ... run right after a real read, windows 1, 3, ... after a skipped one (window 0,
    # the cold one, is left out), and the real reads' costs are the sample_ms of windows 1, 3, ...
    after_read = [v["p50"] for v in w[2::2]]
    after_none = [v["p50"] for v in w[1::2]]
    pooled = statistics.median(after_read) / statistics.median(after_none)
    # each window after a read against its two neighbours (after none): slow drift of the host cancels
    pairs = [w[j]["p50"] / ((w[j - 1]["p50"] + w[j + 1]["p50"]) / 2) for j in range(2, len(w) - 1, 2)]
    ratio = statistics.median(pairs)
    reads = [v["sample_ms"] for v in w[1::2]]
    print(
        f"paired windows: {len(w)} windows of {doc['window_s']:.2f} s, {doc['runs']} runs; p50 of a window after a "
        f"sensor read / its neighbours' (after none): median {ratio:.4f} over {len(pairs)} windows "
        f"({'within' if abs(ratio - 1) < 0.02 else 'OUTSIDE'} the 2% target); pooled medians "
        f"{statistics.median(after_read):.2f} vs {statistics.median(after_none):.2f} ms = {pooled:.4f}"
    )
    spread = np.percentile([v["p50"] for v in w], [10, 90])
    print(
        f"  window p50s spread {spread[0]:.2f}-{spread[1]:.2f} ms (10th-90th percentile: the host's noise); "
        f"a sensor read takes {statistics.median(reads):.3f} ms = "
        f"{statistics.median(reads) / (doc['window_s'] * 1000) * 100:.3f}% of a window, between windows"
    )


def end_to_end(bundle: Path, seconds: float, window: float, threads: int, rounds: int) -> None:
    import edgepack

    common = dict(warmup=10, threads=threads, max_runs=100000)
    ratios = []
    for r in range(rounds):
        plain = edgepack.bench(bundle, runs=1, min_seconds=seconds, **common).result
        sus = edgepack.bench(bundle, sustained=seconds, sustained_window=window, drift_tolerance=1.0, **common).result
        assert sus.sustained is not None
        ratios.append(sus.latency_ms.p50 / plain.latency_ms.p50)
        print(
            f"  end to end, round {r + 1}: plain p50 {plain.latency_ms.p50:.2f} ms | sustained p50 "
            f"{sus.latency_ms.p50:.2f} ms ({len(sus.sustained.windows)} windows, {sus.sustained.verdict}) | "
            f"ratio {ratios[-1]:.3f}"
        )
    print(f"end to end: median ratio sustained/plain p50 {statistics.median(ratios):.3f} (includes the host's drift)")


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--seconds", type=float, default=120.0, help="seconds of the paired-window loop")
    ap.add_argument("--window", type=float, default=0.25, help="window, seconds")
    ap.add_argument("--rounds", type=int, default=0, help="end-to-end rounds (10 s each way); 0 = skip")
    args = ap.parse_args()
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake_sysfs(root / "sys-root")
        os.environ["EDGEPACK_SYSFS_ROOT"] = str(root / "sys-root")  # read here, and by the local runner
        built = build_mobilenet(root / "mnv2.fp32.edgepack")
        with zipfile.ZipFile(built.path) as zf:
            (root / "model.onnx").write_bytes(zf.read("model.onnx"))
            x = np.load(io.BytesIO(zf.read("golden.npz")))["input/image"][:1]
        print(f"MobileNetV2 fp32 ONNX, {args.threads} threads")
        paired_windows(root / "model.onnx", x, args.seconds, args.window, args.threads)
        if args.rounds:
            end_to_end(built.path, 10.0, args.window, args.threads, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
