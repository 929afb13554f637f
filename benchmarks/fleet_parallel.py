"""Wall time of one bench over a fleet of N SSH devices, one device at a time (--parallel 1) vs all at once
(--parallel N). The devices are N real OpenSSH servers on loopback (tests/sshd.py; needs root and
openssh-server), each with its own cache directory, named in an edgepack.toml. Each device runs the tiny test
model for --min-seconds S (a wall-clock window), so the sequential run takes about N x (S + connection, upload
check and runner start) and the parallel one about S + that overhead. On loopback the N "devices" share this
host's cores (each gets fewer timed samples when they run together); on a real fleet each has its own.

    python benchmarks/fleet_parallel.py [--devices 8] [--min-seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import dataset, tiny_onnx  # noqa: E402
from sshd import Sshd, why_unavailable  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    reason = why_unavailable()
    if reason:
        sys.exit(f"fleet_parallel: {reason}")
    import edgepack

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = edgepack.build(
            tiny_onnx(root / "tiny.onnx"),
            eval=dataset(root / "eval.npz", n=40, seed=2, labels=True),
            output=root / "tiny.edgepack",
        ).path
        servers = [Sshd(root / f"dev{i}").start() for i in range(1, args.devices + 1)]
        try:
            (root / "known_hosts").write_text("".join(s.known_hosts_line() for s in servers))
            (root / "edgepack.toml").write_text(
                "".join(
                    f'[devices.dev{i}]\nhost = "127.0.0.1"\nport = {s.port}\nidentity = "{s.user_key}"\n'
                    f'python = "{sys.executable}"\nremote_dir = "{root / f"cache{i}"}"\ngroups = ["lab"]\n'
                    for i, s in enumerate(servers, 1)
                )
            )

            def run(parallel: int) -> float:
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "edgepack", "-q", "bench", str(bundle), "--device", "@lab",
                     "--parallel", str(parallel), "--known-hosts", str(root / "known_hosts"), "--runs", "1",
                     "--warmup", "1", "--min-seconds", str(args.min_seconds), "--max-runs", "100000000",
                     "--json", str(root / "out.json")],
                    cwd=root, check=True, stdout=subprocess.DEVNULL,
                )  # fmt: skip
                return time.perf_counter() - t0

            run(args.devices)  # the first run uploads the runner and the bundle to every device's cache
            seq, par = [], []
            for _ in range(args.rounds):
                seq.append(run(1))
                par.append(run(args.devices))
            s, p = statistics.median(seq), statistics.median(par)
            print(f"{args.devices} devices, --min-seconds {args.min_seconds:g}, {args.rounds} rounds (cached uploads)")
            print(f"  --parallel 1:  median {s:.1f} s  ({', '.join(f'{x:.1f}' for x in seq)})")
            print(f"  --parallel {args.devices}:  median {p:.1f} s  ({', '.join(f'{x:.1f}' for x in par)})")
            print(f"  speed-up {s / p:.2f}x")
        finally:
            for srv in servers:
                srv.stop()


if __name__ == "__main__":
    main()
