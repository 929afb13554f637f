"""The cost of bench --sustained's sampling: p50 of a sustained run vs a plain run of the same length.

Sustained mode reads the clocks, thermal zones and throttling flags after every window (never inside one), so
its p50 should equal a plain bench's. Rounds alternate the two measurements on the MobileNetV2 sample (fp32
ONNX, local device); the median ratio sustained/plain p50 is printed (target: within 2%), with the time the
sensor reads took per window. The sensors are a fake /sys tree (EDGEPACK_SYSFS_ROOT: 2 cores' cpufreq, a
thermal zone with a trip point, the Pi firmware's get_throttled), since this host exposes none; on a board
the same few small files are read from the real /sys.
    python benchmarks/sustained_overhead.py [--seconds 10] [--window 0.5] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
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


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--window", type=float, default=0.5, help="sustained window, seconds")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import edgepack

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake_sysfs(root / "sys-root")
        os.environ["EDGEPACK_SYSFS_ROOT"] = str(root / "sys-root")  # the local runner inherits it
        built = build_mobilenet(root / "mnv2.fp32.edgepack")
        common = dict(warmup=10, threads=args.threads, max_runs=100000)
        print(
            f"MobileNetV2 fp32 ONNX, {args.threads} threads, {args.seconds:g} s per measurement, "
            f"windows of {args.window:g} s, {args.rounds} rounds"
        )
        ratios, sampling, fractions = [], [], []
        for r in range(args.rounds):
            plain = edgepack.bench(built.path, runs=1, min_seconds=args.seconds, **common).result
            sus = edgepack.bench(
                built.path, sustained=args.seconds, sustained_window=args.window, drift_tolerance=1.0, **common
            ).result
            s = sus.sustained
            assert s is not None
            ratio = sus.latency_ms.p50 / plain.latency_ms.p50
            ratios.append(ratio)
            sampling.append(s.sampling_ms)
            fractions.append(s.sampling_ms / (s.window_s * 1000))
            print(
                f"  round {r + 1}: plain p50 {plain.latency_ms.p50:.2f} ms ({len(plain.latency_ms.samples)} runs) | "
                f"sustained p50 {sus.latency_ms.p50:.2f} ms ({s.runs} runs, {len(s.windows)} windows, "
                f"verdict {s.verdict}) | ratio {ratio:.3f} | sensor read {s.sampling_ms:.3f} ms/window"
            )
        med = statistics.median(ratios)
        verdict = "within" if abs(med - 1) <= 0.02 else "OUTSIDE"
        print(f"median ratio sustained/plain p50 = {med:.3f} ({verdict} the 2% target)")
        print(
            f"sensor reads: median {statistics.median(sampling):.3f} ms per window = "
            f"{statistics.median(fractions) * 100:.4f}% of the window (outside the timed runs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
