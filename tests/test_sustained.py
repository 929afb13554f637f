"""bench --sustained (windows, clocks, temperature, throttling flags, verdict) and --cpus (core pinning).

The runner reads /sys through EDGEPACK_SYSFS_ROOT when it is set (test-only): a fake tree whose files the tests
write, and rewrite between windows, stands in for a Raspberry Pi's cpufreq, thermal zone and firmware
get_throttled. Everything else is real: the runner, onnxruntime, the local device, a real sshd on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgepack.device_runners.runner_common import sustained as rs

import edgepack
from edgepack.devices import runner_dir
from edgepack.errors import DeviceError, UsageError
from edgepack.types import RunResult
from helpers import cli

RUNNER = runner_dir() / "onnx_runner.py"


# --------------------------------------------------------------------------- a fake /sys


def _put(path: Path, value: object) -> None:
    """Write atomically (the runner may read the file at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


class FakeSys:
    """A Raspberry-Pi-like /sys: two cores (cpu0 little, cpu1 big), one thermal zone with a passive trip point,
    and the firmware's get_throttled word (hex, as the kernel prints it)."""

    def __init__(self, root: Path, max_khz=(1000000, 1800000), cur_khz=(1000000, 1800000), temp_mc=45000):
        self.root = root
        cpu = root / "sys/devices/system/cpu"
        _put(cpu / "online", "0-1")
        for i, (mx, cur) in enumerate(zip(max_khz, cur_khz)):
            _put(cpu / f"cpu{i}/cpufreq/cpuinfo_max_freq", mx)
            _put(cpu / f"cpu{i}/cpufreq/scaling_governor", "ondemand")
            self.freq(i, cur)
        zone = root / "sys/class/thermal/thermal_zone0"
        _put(zone / "type", "cpu-thermal")
        _put(zone / "trip_point_0_type", "passive")
        _put(zone / "trip_point_0_temp", 80000)
        self.temp(temp_mc)
        self.throttled(0)

    def freq(self, cpu: int, khz: int) -> None:
        _put(self.root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", khz)

    def temp(self, millic: int) -> None:
        _put(self.root / "sys/class/thermal/thermal_zone0/temp", millic)

    def throttled(self, bits: int) -> None:
        _put(self.root / "sys/devices/platform/soc/soc:firmware/get_throttled", f"{bits:x}")


@pytest.fixture
def fake_sys(tmp_path, monkeypatch) -> FakeSys:
    fake = FakeSys(tmp_path / "fakesys")
    monkeypatch.setenv("EDGEPACK_SYSFS_ROOT", str(fake.root))  # the local device's runner inherits it
    return fake


# --------------------------------------------------------------------------- the verdict, on known windows


def _windows(p50s, freqs=None, temps=None, throttled=None):
    out = []
    for i, p in enumerate(p50s):
        out.append(
            {
                "index": i,
                "p50": p,
                "freq_mhz": None if freqs is None else {"1": freqs[i]},
                "temperature_c": None if temps is None else temps[i],
                "temperatures": {} if temps is None else {"cpu-thermal": temps[i]},
                "throttled": None if throttled is None else throttled[i],
            }
        )
    return out


ALL = {"frequency": "cpufreq scaling_cur_freq", "temperature": "/sys/class/thermal", "throttling": "sysfs"}


def test_verdict_stable_drifting_and_throttled_on_known_windows():
    steady = rs.verdict(_windows([10, 10.2, 9.9, 10.1, 10, 10.1], [1800] * 6, [50] * 6, [0] * 6), 0, 0.05, ALL)
    assert steady["verdict"] == "stable" and steady["cold_p50"] == 10
    assert steady["sustained_p50"] == pytest.approx(10.05) and steady["ratio"] == pytest.approx(1.005)
    assert any("CPU clock held: 1800 MHz" in e for e in steady["evidence"])

    slower = rs.verdict(_windows([10, 10.5, 11, 11.5, 12, 12], [1800] * 6, [50] * 6, [0] * 6), 0, 0.05, ALL)
    assert slower["verdict"] == "drifting" and slower["ratio"] == pytest.approx(1.2)
    assert "+20.0%" in slower["evidence"][0] and "no throttling seen" in slower["evidence"][0]
    assert rs.verdict(_windows([12, 11, 10, 10, 10, 10]), None, 0.05, {})["verdict"] == "drifting"  # faster later
    assert rs.verdict(_windows([10, 10.5, 11, 11.5, 12, 12]), None, 0.25, {})["verdict"] == "stable"  # tolerance

    clock = rs.verdict(_windows([10, 10, 12, 14, 14, 14], [1800, 1800, 1500, 1200, 1200, 1200]), 0, 0.05, ALL)
    assert clock["verdict"] == "throttled"
    assert any("CPU clock fell from 1800 MHz (window 1) to 1200 MHz" in e for e in clock["evidence"])

    bits = [0, 0, 0x50005, 0x50005, 0x50000, 0x50000]
    flags = rs.verdict(_windows([10] * 6, [1800] * 6, [60] * 6, bits), 0, 0.05, ALL)
    assert flags["verdict"] == "throttled" and flags["ratio"] == 1.0  # the clocks held, the firmware did not
    text = " | ".join(flags["evidence"])
    assert "active in 2 of 6 windows (from window 3): under-voltage, currently throttled" in text
    assert "recorded during the run: under-voltage has occurred, throttling has occurred" in text

    old = rs.verdict(_windows([10] * 6, [1800] * 6, [60] * 6, [0x50000] * 6), 0x50000, 0.05, ALL)
    assert old["verdict"] == "stable", "sticky bits from before the run are not this run's throttling"
    assert any("before this run" in e for e in old["evidence"])

    blind = rs.verdict(_windows([10] * 3), None, 0.05, {})
    assert blind["verdict"] == "stable"
    assert {"no CPU frequency exposed", "no temperature exposed", "no throttling flags exposed"} <= {
        e.split(" (")[0] for e in blind["evidence"]
    }


def test_throttle_bit_names_and_window_split():
    assert rs.flag_names(0x50005) == [
        "under-voltage",
        "currently throttled",
        "under-voltage has occurred",
        "throttling has occurred",
    ]
    assert rs.flag_names(0) == [] and rs.flag_names(None) == []
    assert rs.window_seconds(120, 0) == (24, 5.0)
    assert rs.window_seconds(2, 0.25) == (8, 0.25)
    assert rs.window_seconds(3600, 0) == (360, 10.0)  # auto windows are at most 10 s


def test_duration_and_settings_are_checked_before_anything_runs(tiny_bundle):
    from edgepack.sustained import parse_duration

    assert [parse_duration(x) for x in ("2m", "30s", "1m30s", "1.5m", "500ms", "45", 12, "off")] == [
        120,
        30,
        90,
        90,
        0.5,
        45,
        12,
        0,
    ]
    for bad in ("2x", "m", "-3s", "1e9", "nan"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    with pytest.raises(UsageError, match="gives 1 window"):
        edgepack.bench(tiny_bundle, sustained="1s", sustained_window=1)
    with pytest.raises(UsageError, match="--repeat does not apply"):
        edgepack.bench(tiny_bundle, sustained="2m", repeat=3)
    proc = cli("bench", str(tiny_bundle), "--sustained", "2x")
    assert proc.returncode == 2 and "--sustained '2x' is not a duration" in proc.stderr
    with pytest.raises(UsageError, match="is not a core list"):
        edgepack.bench(tiny_bundle, cpus="4-x")


# --------------------------------------------------------------------------- on the local device


def test_sustained_on_local_device_with_steady_fake_sensors(tiny_bundle, fake_sys):
    rec = edgepack.bench(tiny_bundle, sustained="1.5s", sustained_window=0.25, cpus="1", drift_tolerance=1.0)
    s = rec.result.sustained
    assert s is not None and s.verdict == "stable", s.evidence
    assert len(s.windows) == 6 and s.window_s == 0.25 and 1.5 <= s.elapsed_s < 3
    assert s.sources == {
        "frequency": "cpufreq scaling_cur_freq",
        "temperature": "/sys/class/thermal",
        "throttling": "sysfs get_throttled",
    }
    assert all(w.freq_mhz == {"1": 1800} and w.temperatures == {"cpu-thermal": 45.0} for w in s.windows)
    assert all(w.throttled == 0 and w.runs >= 1 and w.p50 <= w.p90 <= w.max for w in s.windows)
    assert s.trip_points_c == {"cpu-thermal": 80.0} and s.cores == [1]
    assert s.cold_p50 == s.windows[0].p50 and s.runs == sum(w.runs for w in s.windows)
    assert "CPU clock held: 1800 MHz" in " ".join(s.evidence)
    lat = rec.result.latency_ms
    assert len(lat.windows) == 6 and sum(w.n for w in lat.windows) == len(lat.samples) <= 10000
    assert rec.result.device.cpu.sysfs_root == str(fake_sys.root), "a result read through a fake /sys says so"
    assert rec.result.settings["sustained"] == 1.5


def test_runner_sees_throttling_that_starts_mid_run(tiny_bundle, fake_sys):
    """The fake Pi starts throttling after the first window: flags set, clock cut to 600 MHz, past its trip."""
    fake_sys.freq(1, 1800000)
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), str(tiny_bundle), "--sustained", "2", "--window", "0.25", "--cpus", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stderr.readline()
    assert first.startswith("edgepack-runner: progress "), first
    assert json.loads(first.split(" ", 2)[2])["window"] == 1
    fake_sys.throttled(0x50005)
    fake_sys.freq(1, 600000)
    fake_sys.temp(86000)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    s = RunResult.model_validate(json.loads(out)).sustained
    assert s.verdict == "throttled"
    assert s.windows[0].throttled == 0 and s.windows[-1].throttled == 0x50005
    assert s.windows[0].freq_mhz == {"1": 1800} and s.windows[-1].freq_mhz == {"1": 600}
    text = " | ".join(s.evidence)
    assert "firmware throttling flags active" in text and "under-voltage, currently throttled" in text
    assert "CPU clock fell from 1800 MHz (window 1) to 600 MHz" in text
    assert "cpu-thermal reached its passive trip point (80.0 C)" in text and "-> 86.0 C" in text
    assert s.flags() == rs.flag_names(0x50005)
    assert err.count("edgepack-runner: progress ") == 7, "one per window (the first was read above)"


@pytest.mark.slow
def test_reports_show_ratio_verdict_and_chart(tiny_bundle, fake_sys, tmp_path):
    from edgepack import report

    stable = edgepack.bench(tiny_bundle, sustained="1s", sustained_window=0.25, drift_tolerance=1.0)
    fake_sys.throttled(0x50005)  # under-voltage from the start: every window flags it
    throttled = edgepack.bench(tiny_bundle, sustained="1s", sustained_window=0.25, drift_tolerance=1.0)
    throttled = throttled.model_copy(update={"device_spec": "pi"})
    rep = report.make_report([stable, throttled])
    assert [(c.entry, c.status) for c in rep.checks if c.name == "sustained"] == [
        ("tiny.fp32.edgepack @ local", "pass"),
        ("tiny.fp32.edgepack @ pi", "flag"),  # flagged, not failed: bench measures, the verdict informs
    ]
    md = report.render(rep, "md")
    assert "#### Sustained runs" in md and "| stable |" in md and "| throttled |" in md
    assert "under-voltage, currently throttled" in md and "⚠️ 1 flagged" in md
    junit = report.render(rep, "junit")
    assert 'name="sustained"' in junit and "flagged: cold p50" in junit
    results, html = tmp_path / "b.json", tmp_path / "r.html"
    results.write_text(report.bench_json([stable, throttled]))
    proc = cli("report", str(results), "--format", "html", "-o", str(html))
    assert proc.returncode == 0, proc.stderr
    page = html.read_text()
    assert "<h2>Sustained runs</h2>" in page and "alt='sustained latency and temperature'" in page
    assert "sustained runs" in proc.stderr and "throttled" in proc.stderr  # the terminal summary


def test_old_results_without_the_new_fields_still_load(tiny_bundle):
    data = edgepack.bench(tiny_bundle, runs=3, min_seconds=0).result.model_dump(mode="json", by_alias=True)
    assert data["sustained"] is None
    for key in ("pinned", "affinity", "cores", "sysfs_root"):
        data["device"]["cpu"].pop(key, None)
    data.pop("sustained")
    old = RunResult.model_validate(data)
    assert old.sustained is None and old.device.cpu.affinity is None


# --------------------------------------------------------------------------- core pinning


def test_pinning_to_one_core_is_what_the_runner_reports(tiny_bundle):
    r = edgepack.bench(tiny_bundle, runs=20, min_seconds=0, cpus="1").result
    assert r.device.cpu.pinned == "1" and r.device.cpu.affinity == [1]
    assert [c.cpu for c in r.device.cpu.cores] == [1]
    assert r.settings["cpus"] == "1" and r.settings["threads"] == 1, "--threads 0 = one thread per pinned core"
    unpinned = edgepack.bench(tiny_bundle, runs=5, min_seconds=0).result.device.cpu
    assert unpinned.pinned is None and unpinned.affinity == sorted(os.sched_getaffinity(0))
    with pytest.raises(DeviceError, match=r"cannot pin to core\(s\) 511 on this device"):
        edgepack.bench(tiny_bundle, runs=3, min_seconds=0, cpus="511")


def test_big_and_little_resolve_from_per_core_max_frequency(tiny_bundle, fake_sys):
    big = edgepack.bench(tiny_bundle, runs=5, min_seconds=0, cpus="big").result.device.cpu
    assert big.affinity == [1] and [(c.cpu, c.max_freq_mhz) for c in big.cores] == [(1, 1800)]
    little = edgepack.bench(tiny_bundle, runs=5, min_seconds=0, cpus="little").result.device.cpu
    assert little.affinity == [0] and little.cores[0].max_freq_mhz == 1000
    from edgepack import doctor

    facts = doctor.probe("local")
    assert [(c["cpus"], c["max_freq_mhz"]) for c in facts["core_clusters"]] == [("0", 1000), ("1", 1800)]
    assert "cores     0 @ 1000 MHz" in doctor.render("local", facts, doctor.advice(facts))


# --------------------------------------------------------------------------- over SSH (a real sshd on loopback)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    from sshd import Sshd, why_unavailable

    reason = why_unavailable()
    if reason:
        if os.environ.get("EDGEPACK_REQUIRE_SSHD"):
            raise RuntimeError(f"EDGEPACK_REQUIRE_SSHD is set but: {reason}")
        pytest.skip(reason)
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.mark.ssh
@pytest.mark.slow
def test_sustained_and_pinned_over_ssh_relays_progress(tiny_bundle, sshd, tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line())
    out = tmp_path / "r.json"
    proc = cli(
        "bench",
        str(tiny_bundle),
        "--device",
        f"{sshd.user}@127.0.0.1:{sshd.port}",
        "--identity",
        str(sshd.user_key),
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(tmp_path / "device-cache"),
        "--sustained",
        "1.5s",
        "--sustained-window",
        "0.25",
        "--cpus",
        "1",
        "--json",
        str(out),
        env={"HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    # the runner's per-window lines reach this terminal while it runs (without a tty: plain lines)
    assert "window 6/6, p50" in proc.stderr and "1.5/1.5 s" in proc.stderr
    assert "edgepack-runner: progress" not in proc.stderr, "progress is shown, not dumped raw"
    r = RunResult.model_validate(json.loads(out.read_text())["results"][0]["result"])
    assert r.sustained is not None and len(r.sustained.windows) == 6 and r.sustained.cores == [1]
    assert r.device.cpu.affinity == [1] and r.device.cpu.pinned == "1"
    assert "sustained runs" in proc.stdout and r.sustained.verdict in proc.stdout
    assert list((tmp_path / "device-cache" / "work").iterdir()) == [], "nothing left on the device"
