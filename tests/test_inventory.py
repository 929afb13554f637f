"""Inventories (edgepack.toml, Ansible INI and YAML), device selections, --shard, and report's merging of shards:
parsed from real files, run through the real CLI where it matters (several local devices, one unreachable)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from edgepack import fleet, inventory
from edgepack.devices import DeviceSpec, SSHOptions
from edgepack.errors import DeviceError, UsageError
from helpers import cli, one_line_error

INI = """\
# a device owner's Ansible inventory
lonely ansible_host=10.0.0.9

[pis]
pi4 ansible_host=192.168.1.20 ansible_user=pi edgepack_labels="{'soc': 'bcm2711'}"
pi5:2222 ansible_host=192.168.1.21   # host:port
node[01:03] ansible_host=10.1.0.1

[pis:vars]
ansible_user=ubuntu
ansible_python_interpreter=/usr/bin/python3.11
ansible_ssh_private_key_file=keys/pi

[jetsons]
orin ansible_host=10.0.0.5 ansible_port=2200 edgepack_remote_dir=/data/edgepack

[arm64:children]
pis
jetsons

[arm64:vars]
ansible_python_interpreter=auto_silent
ansible_user=admin

[win]
box ansible_connection=winrm
"""

YAML = """\
all:
  vars:
    ansible_user: admin
  hosts:
    me:
      ansible_connection: local
  children:
    pis:
      vars: {ansible_user: pi, ansible_ssh_private_key_file: ~/.ssh/id_pi}
      hosts:
        pi[4:5]:
          ansible_host: 192.168.1.2
        pi3: {ansible_port: 2022, edgepack_labels: {ram: 1GB}}
    arm64:
      children:
        pis:
        jetsons:
          hosts:
            orin: {ansible_ssh_host: 10.0.0.5, ansible_ssh_port: 2200}
"""

TOML = """\
[devices.pi4]
host = "192.168.1.20"
user = "pi"
port = 2222
identity = "keys/pi4"
python = "/home/pi/venv/bin/python"
remote_dir = "/data/edgepack"
groups = ["pis", "arm64"]
labels = { soc = "bcm2711", ram = "4GB" }

[devices.jetson]
groups = ["arm64"]
labels = { soc = "orin" }

[devices.here]
host = "local"
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_ansible_ini(tmp_path):
    inv = inventory.load(_write(tmp_path, "hosts", INI))
    pi4, pi5, orin = inv.devices["pi4"], inv.devices["pi5"], inv.devices["orin"]
    # host vars beat the child group's, which beat the parent's
    assert (pi4.user, pi4.host, pi4.port, pi4.labels) == ("pi", "192.168.1.20", None, {"soc": "bcm2711"})
    assert (pi5.user, pi5.port, pi5.python) == ("ubuntu", 2222, "/usr/bin/python3.11")
    assert pi5.identity == tmp_path / "keys" / "pi"  # relative to the inventory file
    assert (orin.user, orin.port, orin.python, orin.remote_dir) == ("admin", 2200, None, "/data/edgepack")
    assert [d for d in inv.groups["pis"]] == ["pi4", "pi5", "node01", "node02", "node03"]
    assert inv.groups["arm64"] == ["pi4", "pi5", "node01", "node02", "node03", "orin"]
    assert set(pi4.groups) == {"pis", "arm64"} and inv.devices["lonely"].groups == ()
    assert "winrm" in inv.refused["box"]


def test_ansible_yaml(tmp_path):
    inv = inventory.load(_write(tmp_path, "hosts.yml", YAML))
    assert inv.devices["me"].local
    pi4, pi3, orin = inv.devices["pi4"], inv.devices["pi3"], inv.devices["orin"]
    assert (pi4.user, pi4.host, inv.devices["pi5"].host) == ("pi", "192.168.1.2", "192.168.1.2")
    assert pi4.identity == Path.home() / ".ssh" / "id_pi"
    assert (pi3.host, pi3.port, pi3.labels) == ("pi3", 2022, {"ram": "1GB"})
    assert (orin.user, orin.host, orin.port) == ("admin", "10.0.0.5", 2200)  # the ansible_ssh_* spellings
    assert inv.groups["arm64"] == ["pi4", "pi5", "pi3", "orin"]


def test_edgepack_toml(tmp_path):
    inv = inventory.load(_write(tmp_path, "edgepack.toml", TOML))
    pi4 = inv.devices["pi4"]
    assert (pi4.host, pi4.user, pi4.port, pi4.python, pi4.remote_dir) == (
        "192.168.1.20",
        "pi",
        2222,
        "/home/pi/venv/bin/python",
        "/data/edgepack",
    )
    assert pi4.identity == tmp_path / "keys" / "pi4"
    assert inv.devices["jetson"].host == "jetson"  # the name is the host (or an ssh_config alias)
    assert inv.devices["here"].local
    # the device's own settings win over the command line's; the command line fills the rest
    opts = pi4.options(SSHOptions(remote_python="python3", remote_dir=".cache/edgepack", connect_timeout=3))
    assert (opts.remote_python, opts.remote_dir, opts.identity, opts.connect_timeout) == (
        "/home/pi/venv/bin/python",
        "/data/edgepack",
        tmp_path / "keys" / "pi4",
        3,
    )


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("edgepack.toml", "[devices.pi]\nhots = 'x'\n", "unknown key 'hots'"),
        ("edgepack.toml", "[devices.pi]\nhost = 'a;b'\n", "bad host"),
        ("edgepack.toml", "[devices.pi]\nport = 70000\n", "port 70000 is out of range"),
        ("edgepack.toml", "[devices.pi\n", "not valid TOML"),
        ("hosts.yml", "all:\n  hostz: {}\n", "has 'hostz'"),
        ("hosts.yml", "all: [\n", "not valid YAML"),
        ("hosts", "[pis:varz]\n", "section"),
        ("hosts", "[pis]\npi ansible_user\n", "expected key=value"),
        ("hosts", "[a:children]\nb\n[b:children]\na\n", "its own child"),
        ("hosts", "pi$(reboot) ansible_host=1.2.3.4\n", "the name may hold only"),
    ],
)
def test_bad_inventories_are_one_line_errors(tmp_path, name, text, match):
    with pytest.raises(UsageError, match=match):
        inventory.load(_write(tmp_path, name, text))


def test_select(tmp_path):
    path = _write(tmp_path, "hosts", INI)
    names = [d.name for d in inventory.select("@pis,orin,pi4,pi@10.9.9.9:2200,local", path)]
    assert names == ["pi4", "pi5", "node01", "node02", "node03", "orin", "pi@10.9.9.9:2200", "local"]
    assert [d.name for d in inventory.select("@soc=bcm2711", path)] == ["pi4"]
    assert "box" not in [d.name for d in inventory.select("@all", path)]  # winrm: skipped with a note
    with pytest.raises(UsageError, match=r"no group 'pi' in .*groups: @arm64, @jetsons, @pis, @win"):
        inventory.select("@pi", path)
    with pytest.raises(UsageError, match="cannot be used: ansible_connection=winrm"):
        inventory.select("box", path)
    with pytest.raises(UsageError, match="empty name"):
        inventory.select("pi4,,pi5", path)
    assert inventory.expand("web[01:10:3].lan") == ["web01.lan", "web04.lan", "web07.lan", "web10.lan"]
    assert inventory.expand("n[a:c]") == ["na", "nb", "nc"]


def test_select_without_inventory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(inventory.ENV, raising=False)
    assert [d.name for d in inventory.select("pi,me@host:22")] == ["pi", "me@host:22"]  # plain specs
    with pytest.raises(UsageError, match="names a group, but there is no inventory"):
        inventory.select("@pis")
    _write(tmp_path, "edgepack.toml", TOML)  # found in the current directory
    assert inventory.select("pi4")[0].port == 2222


def _specs(*names: str) -> list[DeviceSpec]:
    return [DeviceSpec(text=n, local=False, host=n) for n in names]


def test_shard_is_deterministic_and_complete():
    bundles = [Path(f"out/m{i}.edgepack") for i in range(5)]
    devs = _specs("pi5", "pi4", "orin", "nano")
    for n in (1, 2, 3, 4, 7):
        shards = [fleet.shard(bundles, devs, i, n) for i in range(1, n + 1)]
        pairs = [(b.name, d.name) for s in shards for d, bs in s for b in bs]
        assert sorted(pairs) == sorted((b.name, d.name) for b in bundles for d in devs)  # each pair once
        again = [fleet.shard(list(reversed(bundles)), list(reversed(devs)), i, n) for i in range(1, n + 1)]
        assert [[(d.name, bs) for d, bs in s] for s in again] == [[(d.name, bs) for d, bs in s] for s in shards]
        if n <= len(devs):  # whole devices per shard: no two jobs on one device
            owners = {d.name: k for k, s in enumerate(shards) for d, _ in s}
            assert all(len(bs) == len(bundles) for s in shards for _, bs in s) and len(owners) == len(devs)
    assert [d.name for d, _ in fleet.shard(bundles, devs, 1, 2)] == ["nano", "pi4"]  # sorted, round-robin
    assert fleet.parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b"):
        with pytest.raises(UsageError, match="--shard"):
            fleet.parse_shard(bad)


def test_classify():
    assert fleet.classify(DeviceError("connection to pi lost while running the runner")) == "lost"
    assert fleet.classify(DeviceError("connection to root@h:1 refused")) == "unreachable"
    assert fleet.classify(DeviceError("cannot reach pi: timed out after 10s")) == "unreachable"
    assert fleet.classify(DeviceError("the command on pi did not finish within 30s")) == "timeout"
    assert fleet.classify(DeviceError("runner failed on pi (exit 3): onnxruntime is not installed")) == "failed"
    assert fleet.classify(KeyboardInterrupt()) == "interrupted"


def test_run_on_devices_keeps_going_and_bounds_parallelism():
    import threading
    import time

    running, peak, lock = [0], [0], threading.Lock()

    def fn(d: DeviceSpec) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        if d.name == "b":
            raise DeviceError("connection to b lost during the upload")
        return d.name.upper()

    seen: list[str] = []
    out = fleet.run_on_devices(
        _specs("a", "b", "c", "d", "e"), fn, parallel=2, on_done=lambda o: seen.append(o.device.name)
    )
    assert [(o.device.name, o.status, o.value) for o in out] == [
        ("a", "ok", "A"),
        ("b", "lost", None),
        ("c", "ok", "C"),
        ("d", "ok", "D"),
        ("e", "ok", "E"),
    ]
    assert peak[0] == 2 and sorted(seen) == ["a", "b", "c", "d", "e"]
    with pytest.raises(UsageError, match="--parallel"):
        fleet.run_on_devices(_specs("a"), fn, parallel=0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket closes


@pytest.mark.slow
def test_cli_bench_on_several_devices(tiny_bundle, tmp_path):
    """Two local inventory devices and one whose port is closed: both measured and written, the third a clear
    failure; exit 6 (some failed). report merges the shards' files, deduplicated, and fails on the failure."""
    inv = _write(
        tmp_path,
        "edgepack.toml",
        '[devices.a]\nhost = "local"\ngroups = ["lab"]\n[devices.b]\nhost = "local"\ngroups = ["lab"]\n'
        f'[devices.gone]\nhost = "127.0.0.1"\nport = {_closed_port()}\ngroups = ["lab"]\n',
    )
    common = ["--runs", "3", "--min-seconds", "0", "--warmup", "1"]
    out = tmp_path / "all.json"
    proc = cli("bench", str(tiny_bundle), "--device", "@lab", *common, "--json", str(out), cwd=tmp_path)
    assert proc.returncode == fleet.EXIT_SOME_FAILED, proc.stderr
    doc = json.loads(out.read_text())
    assert sorted(r["device_spec"] for r in doc["results"]) == ["a", "b"] and "pending" not in doc
    assert [(f["device_spec"], f["status"]) for f in doc["failures"]] == [("gone", "unreachable")]
    assert "edgepack: error: tiny.fp32.edgepack @ gone: unreachable: connection to" in proc.stderr
    assert "1 of 3 device(s) failed (gone)" in proc.stderr

    # the same work as two shards (a CI matrix), merged back: same pairs, the duplicate file kept once
    s1, s2 = tmp_path / "s1.json", tmp_path / "s2.json"
    for i, path in ((1, s1), (2, s2)):
        cli(
            "bench",
            str(tiny_bundle),
            "--device",
            "@lab",
            "--shard",
            f"{i}/2",
            *common,
            "--json",
            str(path),
            cwd=tmp_path,
        )
    keys = [(r["bundle"], r["device_spec"]) for p in (s1, s2) for r in json.loads(p.read_text()).get("results", [])]
    assert sorted(keys) == [("tiny.fp32.edgepack", "a"), ("tiny.fp32.edgepack", "b")]
    rep = cli("report", str(s1), str(s2), str(s1), "--format", "json")
    assert rep.returncode == 1, rep.stderr  # the unreachable device fails the gate
    merged = json.loads(rep.stdout)
    assert len(merged["records"]) == 2 and [f["device_spec"] for f in merged["failures"]] == ["gone"]
    assert any(c["name"] == "run" and c["status"] == "fail" for c in merged["checks"])

    # deploy and doctor on the same selection: per device, the unreachable one named, exit 6
    dep = cli("deploy", str(tiny_bundle), "--device", "@lab", cwd=tmp_path)
    assert dep.returncode == fleet.EXIT_SOME_FAILED, dep.stderr
    assert sorted(dep.stdout.split()[2::3]) == ["a:" + str(tiny_bundle), "b:" + str(tiny_bundle)]
    assert "edgepack: error: gone: unreachable: connection to" in dep.stderr
    doc_ = cli("doctor", "--device", "a,gone", "--json", cwd=tmp_path)
    assert doc_.returncode == fleet.EXIT_SOME_FAILED
    assert [(e["device"], e["status"]) for e in json.loads(doc_.stdout)] == [("a", "ok"), ("gone", "unreachable")]

    # two different measurements of one pair are refused, not silently picked
    conflict = tmp_path / "again.json"
    cli(
        "bench",
        str(tiny_bundle),
        "--device",
        "a",
        "--inventory",
        str(inv),
        *common,
        "--json",
        str(conflict),
        check=True,
    )
    line = one_line_error(cli("report", str(out), str(conflict)))
    assert "appears twice with different results" in line


@pytest.mark.slow
def test_cli_selection_errors_are_usage_errors(tiny_bundle, tmp_path):
    proc = cli("bench", str(tiny_bundle), "--device", "@lab", cwd=tmp_path)
    assert proc.returncode == 2 and "no inventory" in one_line_error(proc)
    _write(tmp_path, "edgepack.toml", '[devices.a]\nhost = "local"\n')
    proc = cli("bench", str(tiny_bundle), "--device", "a,b", "--parallel", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--parallel 0" in one_line_error(proc)
    listing = cli("devices", "--no-check", "--json", cwd=tmp_path, check=True)
    assert [d["device"] for d in json.loads(listing.stdout)] == ["a"]


def test_the_ci_matrix_sample_is_consistent():
    """samples/ci/edgepack-fleet.yml: a real workflow file whose shard count matches its matrix, reading the
    sample inventory, which edgepack reads as an Ansible inventory."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    flow = yaml.safe_load((repo / "samples" / "ci" / "edgepack-fleet.yml").read_text())
    bench = flow["jobs"]["bench"]
    assert bench["env"]["SHARDS"] == len(bench["strategy"]["matrix"]["shard"])
    run = next(s["run"] for s in bench["steps"] if s.get("name") == "Bench this shard")
    assert '--shard "${{ matrix.shard }}/$SHARDS"' in run and "--inventory samples/ci/inventory.yml" in run
    assert flow["jobs"]["report"]["needs"] == "bench" and flow["jobs"]["report"]["if"] == "always()"
    devs = inventory.select("@lab", repo / "samples" / "ci" / "inventory.yml")
    assert [d.name for d in devs] == ["pi4", "pi5", "orin-nano", "imx93"]
    assert devs[2].port == 2222 and devs[3].remote_dir == "/data/edgepack" and devs[0].user == "ci"


@pytest.mark.slow
def test_interrupting_a_fleet_bench_stops_every_runner(tiny_bundle, tmp_path):
    """SIGINT during a bench on two devices: both runners stop, exit 130, and the JSON says what was not measured."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sshd import find_process

    _write(tmp_path, "edgepack.toml", '[devices.a]\nhost = "local"\n[devices.b]\nhost = "local"\n')
    out = tmp_path / "int.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "bench", str(tiny_bundle), "--device", "a,b", "--runs", "1",
         "--min-seconds", "60", "--max-runs", "100000000", "--json", str(out)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            runners = [p for p in _runner_pids(str(tiny_bundle))]
            if len(runners) == 2:
                break
            time.sleep(0.1)
        assert len(runners) == 2, "both runners should be running"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "stopped by signal 2 (SIGINT)" in stderr
    for pid in runners:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert find_process(f"onnx_runner.py {tiny_bundle}") is None
    doc = json.loads(out.read_text())
    assert doc["results"] == [] and sorted((f["device_spec"], f["status"]) for f in doc["failures"]) == [
        ("a", "interrupted"),
        ("b", "interrupted"),
    ]


def _runner_pids(bundle: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"onnx_runner.py {bundle}" in cmd:
                pids.append(int(d.name))
    return pids
