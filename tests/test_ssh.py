"""edgepack over real SSH: a real sshd on 127.0.0.1 started and stopped by the fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgepack
from edgepack.errors import DeviceError
from helpers import cli
from sshd import Sshd, why_unavailable

_reason = why_unavailable()
if _reason and os.environ.get("EDGEPACK_REQUIRE_SSHD"):
    raise RuntimeError(f"EDGEPACK_REQUIRE_SSHD is set but: {_reason}")
pytestmark = [pytest.mark.ssh, pytest.mark.skipif(bool(_reason), reason=_reason or "")]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def home(tmp_path, sshd) -> Path:
    """A HOME with ~/.ssh/config (Host alias 'edgedev') and a known_hosts holding the server's key."""
    h = tmp_path / "home"
    ssh = h / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "known_hosts").write_text(sshd.known_hosts_line())
    (ssh / "config").write_text(
        f"Host edgedev\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.user_key}\n  UserKnownHostsFile {ssh / 'known_hosts'}\n"
    )
    return h


@pytest.fixture
def remote_dir(tmp_path) -> Path:
    return tmp_path / "device-cache"


def _opts(home: Path, remote_dir: Path, **kw):
    base = dict(ssh_config=home / ".ssh" / "config", remote_python=sys.executable, remote_dir=str(remote_dir))
    base.update(kw)
    return base


def test_bench_over_ssh_then_cache_hit(tiny_bundle, home, remote_dir):
    first = edgepack.bench(tiny_bundle, "edgedev", runs=5, min_seconds=0, **_opts(home, remote_dir))
    assert first.uploaded is True
    r = first.result
    assert r.device.runtime == "onnxruntime"
    assert r.validation["logits"].cosine > 0.99999
    assert r.accuracy is not None and r.accuracy.n == 40
    assert len(r.latency_ms.samples) >= 5
    cached = list((remote_dir / "bundles").iterdir())
    assert [p.name for p in cached] == [f"{r.bundle_sha256}.edgepack"]

    second = edgepack.bench(tiny_bundle, "edgedev", runs=5, min_seconds=0, **_opts(home, remote_dir))
    assert second.uploaded is False, "a re-bench must not upload the bundle again"
    # nothing left behind: no partial uploads, no extracted bundles in the work dir
    leftovers = [p for p in remote_dir.rglob("*") if ".part-" in p.name]
    assert leftovers == []
    assert list((remote_dir / "work").iterdir()) == []


def test_cli_bench_with_alias_from_ssh_config(tiny_bundle, home, remote_dir, tmp_path):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    proc = cli(
        "bench",
        str(tiny_bundle),
        "--device",
        "edgedev",
        "--runs",
        "3",
        "--min-seconds",
        "0",
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(remote_dir),
        "--json",
        str(out_json),
        "--markdown",
        str(out_md),
        env={"HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out_json.read_text())
    assert data["results"][0]["device_spec"] == "edgedev"
    assert data["results"][0]["result"]["accuracy"]["n"] == 40
    assert "| tiny.fp32.edgepack |" in out_md.read_text()


def test_deploy_uploads_into_content_addressed_cache(tiny_bundle, home, remote_dir):
    remote = edgepack.deploy(tiny_bundle, "edgedev", **_opts(home, remote_dir))
    from edgepack.bundle import sha256_file

    assert remote.endswith(f"{sha256_file(tiny_bundle)}.edgepack")
    assert Path(remote).read_bytes() == tiny_bundle.read_bytes()


def test_unknown_host_key_is_refused(tiny_bundle, home, remote_dir):
    (home / ".ssh" / "known_hosts").write_text("")
    with pytest.raises(DeviceError, match="unknown"):
        edgepack.bench(tiny_bundle, "edgedev", runs=1, min_seconds=0, **_opts(home, remote_dir))
    assert not remote_dir.exists(), "nothing may be uploaded to an unverified host"


def test_accept_new_host_key_adds_it(tiny_bundle, home, remote_dir, sshd):
    kh = home / ".ssh" / "known_hosts"
    kh.write_text("")
    res = edgepack.bench(
        tiny_bundle, "edgedev", runs=1, min_seconds=0, accept_new_host_key=True, **_opts(home, remote_dir)
    )
    assert res.result.latency_ms.p50 > 0
    assert f"[127.0.0.1]:{sshd.port}" in kh.read_text()
    # the key is now known: strict checking passes without the flag
    edgepack.bench(tiny_bundle, "edgedev", runs=1, min_seconds=0, **_opts(home, remote_dir))


def test_changed_host_key_is_refused_even_with_accept_new(tiny_bundle, home, remote_dir, sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "fake")], check=True)
    kind, b64 = (tmp_path / "fake.pub").read_text().split()[:2]
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {kind} {b64}\n")
    with pytest.raises(DeviceError, match="CHANGED"):
        edgepack.bench(
            tiny_bundle, "edgedev", runs=1, min_seconds=0, accept_new_host_key=True, **_opts(home, remote_dir)
        )


def test_wrong_key_fails_authentication(tiny_bundle, home, remote_dir, sshd):
    with pytest.raises(DeviceError, match="authentication failed"):
        edgepack.bench(
            tiny_bundle,
            f"{sshd.user}@127.0.0.1:{sshd.port}",
            runs=1,
            min_seconds=0,
            identity=sshd.other_key,
            known_hosts=home / ".ssh" / "known_hosts",
            remote_python=sys.executable,
            remote_dir=str(remote_dir),
            ssh_config=home / "no-config",
        )


def test_unreachable_port_is_one_line_error(tiny_bundle, home, remote_dir):
    from sshd import free_port

    port = free_port()
    proc = cli(
        "bench",
        str(tiny_bundle),
        "--device",
        f"127.0.0.1:{port}",
        "--connect-timeout",
        "3",
        "--remote-dir",
        str(remote_dir),
        env={"HOME": str(home)},
    )
    assert proc.returncode == 5
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edgepack: error:") and "refused" in last and "Traceback" not in proc.stderr


def test_missing_runtime_names_the_package(tiny_bundle, home, remote_dir, tmp_path):
    """A real Python on the device with numpy but without onnxruntime."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    import numpy

    site = next((venv / "lib").glob("python3*/site-packages"))
    np_dir = Path(numpy.__file__).parent
    for p in np_dir.parent.iterdir():
        if p.name == "numpy" or p.name.startswith("numpy.libs") or p.name.startswith("numpy-"):
            (site / p.name).symlink_to(p)
    with pytest.raises(DeviceError, match="onnxruntime is not installed") as e:
        edgepack.bench(
            tiny_bundle,
            "edgedev",
            runs=1,
            min_seconds=0,
            **_opts(home, remote_dir, remote_python=str(venv / "bin" / "python")),
        )
    assert "pip install onnxruntime" in e.value.hint
    assert list((remote_dir / "work").iterdir()) == []


def test_tflite_bundle_over_ssh(home, remote_dir, tmp_path):
    from conftest import have_tensorflow
    from helpers import keras_files

    if not have_tensorflow():
        pytest.skip("needs the tensorflow extra")
    k = keras_files(tmp_path)
    built = edgepack.build(k["keras"], to="tflite", output=tmp_path / "k.edgepack")
    r = edgepack.bench(built.path, "edgedev", runs=3, min_seconds=0, **_opts(home, remote_dir)).result
    assert r.device.runtime == "litert" and r.runtime_details["package"] == "ai-edge-litert"
    assert r.validation[built.manifest.outputs[0].name].cosine > 0.9999
    assert list((remote_dir / "work").iterdir()) == []


@pytest.mark.slow
def test_install_runtime_into_a_device_venv(tiny_bundle, home, remote_dir, tmp_path):
    """A device Python without onnxruntime: --install-runtime makes a venv in the device cache and pip-installs it."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = cli(
        "bench",
        str(tiny_bundle),
        "--device",
        "edgedev",
        "--runs",
        "2",
        "--min-seconds",
        "0",
        "--remote-python",
        str(venv / "bin" / "python"),
        "--remote-dir",
        str(remote_dir),
        "--install-runtime",
        "--json",
        "-",
        env={"HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)["results"][0]["result"]
    assert r["device"]["runtime"] == "onnxruntime"
    assert (remote_dir / "venv" / "bin" / "python").exists()
    # the next run finds the venv without installing again
    again = edgepack.bench(
        tiny_bundle,
        "edgedev",
        runs=1,
        min_seconds=0,
        install_runtime=True,
        **_opts(home, remote_dir, remote_python=str(venv / "bin" / "python")),
    )
    assert again.result.device.runtime == "onnxruntime"


def test_doctor_over_ssh_says_what_to_install(home, remote_dir, tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = cli(
        "doctor",
        "--device",
        "edgedev",
        "--remote-python",
        str(venv / "bin" / "python"),
        "--remote-dir",
        str(remote_dir),
        "--json",
        env={"HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    import platform

    assert data["facts"]["machine"] == platform.machine() and data["facts"]["packages"]["onnxruntime"] is None
    assert data["formats"]["onnx"]["ready"] is False
    assert data["formats"]["onnx"]["install"].startswith(f"{venv / 'bin' / 'python'} -m pip install numpy onnxruntime")
    text = cli(
        "doctor",
        "--device",
        "edgedev",
        "--remote-python",
        sys.executable,
        "--remote-dir",
        str(remote_dir),
        env={"HOME": str(home)},
    )
    assert text.returncode == 0 and "onnx       ready (onnxruntime" in text.stdout


@pytest.mark.slow
def test_until_conclusive_over_ssh_serves_both_bundles_from_one_upload(home, remote_dir, tmp_path):
    """bench --until-conclusive on an SSH device: both bundles uploaded once, served by one runner over one
    exec channel, a real 3x slowdown found regressed, nothing left in the device's work dir."""
    from helpers import chain_onnx

    small = edgepack.build(chain_onnx(tmp_path / "s.onnx", 10), output=tmp_path / "s.edgepack").path
    large = edgepack.build(chain_onnx(tmp_path / "l.onnx", 30), output=tmp_path / "l.edgepack").path
    out = tmp_path / "r.json"
    proc = cli(
        "bench", str(large), "--device", "edgedev", "--remote-python", sys.executable, "--remote-dir", str(remote_dir),
        "--until-conclusive", "--baseline-bundle", str(small), "--budget-seconds", "60",
        "--runs", "20", "--min-seconds", "0.05", "--cooldown", "0", "--threads", "1", "--json", str(out),
        env={"HOME": str(home)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    rec = json.loads(out.read_text())["results"][0]
    assert rec["device_spec"] == "edgedev" and rec["sequential"]["verdict"] == "regressed"
    assert rec["sequential"]["windows"] == rec["result"]["settings"]["repeat"] >= 2
    assert len(list((remote_dir / "bundles").iterdir())) == 2
    assert list((remote_dir / "work").iterdir()) == []
