"""Torch sources → ExecuTorch bundles (.pte, XNNPACK delegate) in fp32, fp16 and int8, validated against torch at
build time and on the device with the real executorch runtime: op placement (XNNPACK nodes vs portable kernels),
ops XNNPACK cannot take, programs that do not load, and one bench over real SSH."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

import edgepack
from conftest import needs_torch
from edgepack.errors import DeviceError, UsageError
from helpers import cli, dataset, one_line_error, torch_model_py

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "samples" / "digits"
MODELS = REPO / "tests" / "models"

pytestmark = [
    pytest.mark.torch,
    needs_torch,
    pytest.mark.skipif(
        importlib.util.find_spec("executorch") is None,
        reason="needs the executorch extra (pip install 'edgepack[executorch]')",
    ),
]

FALLBACK_PY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, image):
        x = torch.cumsum(torch.relu(self.conv(image)), dim=-1)  # XNNPACK has no cumsum: a portable kernel runs it
        return self.fc(x.flatten(1))


def build_model():
    torch.manual_seed(0)
    return Net().eval()
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("etdata")
    return {  # keyed "input": nn.Sequential's forward argument, the .pt2's input name
        "calib": dataset(d / "calib.npz", n=120, name="input", shape=(1, 8, 8)),
        "eval": dataset(d / "eval.npz", n=20, seed=3, name="input", shape=(1, 8, 8), labels=True),
    }


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    """The small conv net of the fast tests (conv, batch norm, ReLU, pooling, linear) as a torch.export archive."""
    import importlib

    import torch

    d = tmp_path_factory.mktemp("etpt2")
    sys.path.insert(0, str(d))
    try:
        module = importlib.import_module(torch_model_py(d).stem).build_model()
    finally:
        sys.path.remove(str(d))
    path = d / "convnet.pt2"
    torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 8, 8),)), str(path))
    return path


@pytest.fixture(scope="module")
def fp32_bundle(pt2, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("etfp32") / "convnet.executorch.fp32.edgepack"
    return edgepack.build(pt2, to="executorch", eval=data["eval"], output=out)


def _placement(result) -> dict:
    p = result.placement
    assert p is not None and p.source == "executorch-pte" and p.accelerator == "XNNPACK"
    assert p.accelerator_ops == sum(o.accelerator for o in p.ops) and p.cpu_ops == sum(o.cpu for o in p.ops)
    return {o.op_type: (o.accelerator, o.cpu) for o in p.ops}


def test_fp32_pt2_build_and_bench(fp32_bundle):
    m = fp32_bundle.manifest
    assert (m.format, m.runtime, m.model.member) == ("executorch", "executorch", "model.pte")
    assert m.source.kind == "torch-export" and m.route.name == "torch-executorch"
    assert m.inputs[0].name == "input" and m.validation.status == "passed"
    assert m.validation.outputs["output"].cosine >= 0.9999
    assert m.tools["executorch"].startswith("1.4") and m.tools["torch"].startswith("2.13")
    assert m.inputs[0].shape == [1, 1, 8, 8] and m.inputs[0].dtype == "float32"
    r = edgepack.bench(fp32_bundle.path, "local", runs=5, min_seconds=0).result
    assert r.device.runtime == "executorch" and r.device.runtime_version.startswith("1.4")
    assert "XnnpackBackend" in r.runtime_details["backends"]
    assert r.validation["output"].cosine >= 0.9999 and r.accuracy.n == 20
    assert len(r.latency_ms.samples) >= 5 and r.latency_ms.p50 > 0
    ops = _placement(r)
    # every op of the convnet runs inside one XNNPACK partition; nothing is left to the portable kernels
    assert r.placement.partitions == 1 and r.placement.cpu_ops == 0
    assert ops["XNNFullyConnected"] == (1, 0) and ops.get("XNNConv2d", ops.get("XNNDepthwiseConv2d")) == (1, 0)


def test_int8_keeps_integer_index_arithmetic(tmp_path):
    """Regression (zoo: BERT, DETR): XNNPACKQuantizer turned the Python number of ``arange(n) * 1 + 0`` into a
    float32 buffer, so the index became float and int8 export failed ("tensors used as indices must be long")."""
    import numpy as np

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
    built = edgepack.build(
        f"{MODELS / 'index_arith.py'}:build_model",
        to="executorch",
        quantize="int8",
        inputs=["x:1x16"],
        calibration=calib,
        output=tmp_path / "ia.ep",
    )
    assert built.manifest.quantization.mode == "int8" and built.manifest.validation.status == "passed"
    assert built.manifest.validation.outputs["output"].cosine >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_pt2_fp16_and_int8(quantize, pt2, data, tmp_path):
    built = edgepack.build(
        pt2, to="executorch", quantize=quantize, calibration=data["calib"], eval=data["eval"], output=tmp_path / "m.ep"
    )
    m = built.manifest
    assert m.quantization.mode == quantize and m.validation.status == "passed"
    assert m.inputs[0].dtype == "float32" and m.outputs[0].dtype == "float32", "I/O stay float32"
    if quantize == "int8":
        assert m.quantization.calibration_samples == 120 and "XNNPACKQuantizer" in m.quantization.method
    r = edgepack.bench(built.path, "local", runs=3, min_seconds=0).result
    assert r.validation["output"].cosine >= m.validation.thresholds["min_cosine"]
    ops = _placement(r)
    if quantize == "fp16":
        # XNNPACK does not cast between dtypes: the float32 <-> float16 casts at the edges are portable kernels
        assert ops["dim_order_ops::_to_dim_order_copy.out"] == (0, 2)
    else:
        # int8 compute: XNNPACK converts the float input to int8 and the output back (XNNConvert), nothing portable
        assert ops["XNNConvert"][0] >= 2 and r.placement.cpu_ops == 0


@pytest.mark.slow
def test_digits_sample_fp32_fp16_int8(tmp_path):
    """The digits sample in every precision: agreement with torch, and top-1 on its 450 labelled samples."""
    src = f"{DIGITS / 'model.py'}:build_model"
    top1 = {}
    for q in ("none", "fp16", "int8"):
        built = edgepack.build(
            src,
            to="executorch",
            quantize=q,
            inputs=["image:1x1x8x8"],
            calibration=DIGITS / "calib.npz" if q == "int8" else None,
            eval=DIGITS / "eval.npz",
            output=tmp_path / f"digits.{q}.edgepack",
        )
        assert built.manifest.validation.status == "passed"
        r = edgepack.bench(built.path, "local", runs=3, min_seconds=0).result
        assert r.validation["output"].top1_agreement == 1.0
        assert r.accuracy.n == 450
        top1[q] = r.accuracy.top1
        assert r.placement.partitions == 1 and r.placement.accelerator_ops > 0
    assert top1["none"] > 0.95, top1
    assert abs(top1["fp16"] - top1["none"]) <= 0.01 and abs(top1["int8"] - top1["none"]) <= 0.02, top1


@pytest.mark.slow
def test_op_xnnpack_cannot_take_runs_on_portable_kernels(tmp_path):
    """Not an error: the build names the fallback, the bundle validates, and placement counts the portable op."""
    path = tmp_path / "fallback.py"
    path.write_text(FALLBACK_PY)
    proc = cli(
        "build", f"{path}:build_model", "--input", "image:1x1x8x8", "--to", "executorch", "-o", str(tmp_path / "f.ep")
    )
    assert proc.returncode == 0, proc.stderr
    assert "portable-op fallback" in proc.stderr and "cumsum" in proc.stderr
    r = edgepack.bench(tmp_path / "f.ep", "local", runs=3, min_seconds=0).result
    ops = _placement(r)
    assert ops["aten::cumsum.out"] == (0, 1)
    assert "not delegated to XNNPACK" in next(o for o in r.placement.ops if o.op_type == "aten::cumsum.out").reasons[0]
    assert r.placement.partitions == 2, "cumsum splits the graph into two XNNPACK partitions"
    assert r.validation["output"].cosine >= 0.9999


def _with_model(bundle: Path, model: bytes, out: Path) -> Path:
    """A copy of ``bundle`` whose model.pte is ``model``, with consistent digests (so only the runtime can tell)."""
    from edgepack.bundle import member_digests, read_manifest, write_bundle

    manifest = read_manifest(bundle)
    with zipfile.ZipFile(bundle) as z:
        members = {n: z.read(n) for n in z.namelist() if n != "manifest.json"}
    members["model.pte"] = model
    manifest.members = member_digests(members)
    manifest.model.bytes = len(model)
    write_bundle(out, manifest, members)
    return out


def test_runner_reads_the_pte_itself(fp32_bundle, tmp_path):
    """The runner's checks and placement reader work on the file alone (no runtime): what bench reports above."""
    from edgepack.device_runners.executorch_runner import load_error, pte_placement, pte_problem

    good = tmp_path / "good.pte"
    good.write_bytes(zipfile.ZipFile(fp32_bundle.path).read("model.pte"))
    assert pte_problem(str(good)) is None
    placement = pte_placement(str(good))
    assert placement["partitions"] == 1 and placement["cpu_ops"] == 0 and placement["accelerator_ops"] >= 3
    cut = tmp_path / "cut.pte"
    cut.write_bytes(good.read_bytes()[:100])
    assert pte_problem(str(cut)).startswith("truncated: 100 bytes, its header says")
    cut.write_bytes(b"PK\x03\x04" + bytes(60))
    assert pte_problem(str(cut)).startswith("not an ExecuTorch program")
    assert load_error(RuntimeError("Failed to load program, error: 0x:14")).endswith("(OperatorMissing)")


@pytest.mark.slow
def test_pte_that_does_not_load_is_one_line_error(fp32_bundle, tmp_path):
    good = zipfile.ZipFile(fp32_bundle.path).read("model.pte")
    cases = {
        "not-a-program": (b"\0" * 64, "model.pte is not an ExecuTorch program"),
        "truncated": (good[: len(good) // 2], f"model.pte is truncated: {len(good) // 2} bytes, its header says"),
        # header intact, flatbuffer body destroyed: only the runtime's own verification can tell
        "garbled": (good[:64] + bytes(len(good) - 64), "the ExecuTorch runtime could not load the program"),
    }
    for name, (model, message) in cases.items():
        bad = _with_model(fp32_bundle.path, model, tmp_path / f"{name}.edgepack")
        assert edgepack.verify(bad)[1] == [], "the bundle itself is intact"
        with pytest.raises(DeviceError, match="runner failed on local") as e:
            edgepack.bench(bad, "local", runs=1, min_seconds=0)
        assert message in e.value.message, (name, e.value.message)
        assert "\n" not in e.value.message
    proc = cli("bench", str(tmp_path / "truncated.edgepack"), "--runs", "1", "--min-seconds", "0")
    assert "is truncated" in one_line_error(proc) and proc.returncode == 5


def test_build_time_loader_refuses_a_broken_pte(tmp_path):
    from edgepack.converters.torch_to_executorch import open_program

    path = tmp_path / "broken.pte"
    path.write_bytes(b"\0\0\0\0ET12" + bytes(100))
    with pytest.raises(UsageError, match="broken.pte is not a loadable ExecuTorch program") as e:
        open_program(path)
    assert "\n" not in e.value.message


def test_torchscript_and_layout_are_refused(tmp_path):
    import torch

    ts = tmp_path / "m.pt"
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(ts))
    with pytest.raises(UsageError, match="no route from torch to executorch"):
        edgepack.build(ts, to="executorch", inputs=["x:1x4"], output=tmp_path / "ts.ep")
    src = f"{torch_model_py(tmp_path)}:build_model"
    with pytest.raises(UsageError, match="--layout"):
        edgepack.build(src, to="executorch", inputs=["image:1x1x8x8"], layout="nhwc", output=tmp_path / "l.ep")
    with pytest.raises(UsageError, match="--quantize dynamic is not available for executorch"):
        edgepack.build(src, to="executorch", inputs=["image:1x1x8x8"], quantize="dynamic", output=tmp_path / "d.ep")


def test_doctor_knows_the_runtime():
    from edgepack import doctor, registry

    rt = registry.runtime("executorch")
    assert rt.runner == "executorch_runner.py" and "executorch" in rt.device_packages and "torch" in rt.device_packages
    facts = doctor.probe("local")
    adv = doctor.advice(facts)["executorch"]
    assert adv["ready"] is True and adv["runtime"].startswith("executorch 1.4"), adv
    bare = rt.advice({"packages": {"numpy": "2.4.6"}, "machine": "aarch64", "system": "Linux"}, "pip install")
    assert bare["ready"] is False and "executorch" in bare["install"] and "torch" in bare["install"]
    x86 = rt.advice({"packages": {}, "machine": "x86_64", "system": "Linux"}, "pip install")
    assert "download.pytorch.org/whl/cpu" in x86["install"], "PyPI's x86_64 torch is the CUDA build"
    # the steps --install-runtime runs: the exporter's releases, torch's CPU build on Linux, no export stack
    torch, et = rt.install_steps("aarch64")[1:]
    assert et == ("--no-deps", f"executorch=={edgepack_tools()['executorch']}"), et
    assert torch[:1] == (f"torch=={edgepack_tools()['torch'].split('+')[0]}",) and "--index-url" in torch
    assert "--index-url" not in rt.install_steps("arm64")[1], "macOS: PyPI's torch is the CPU build"
    assert "torch==2.10.0 + executorch==1.1.0" in bare["note"], "the PyPI-only aarch64 pair is named"
    have_torch = rt.advice({"packages": {"numpy": "2", "torch": "2.13.0"}, "machine": "x86_64", "system": "Linux"}, "p")
    assert have_torch["install"] == f"p numpy && p --no-deps executorch=={edgepack_tools()['executorch']}"


def edgepack_tools() -> dict[str, str]:
    from importlib import metadata

    return {d: metadata.version(d) for d in ("executorch", "torch")}


def test_version_skew_is_named():
    """ExecuTorch promises only that newer runtimes load older programs: an older runtime than the exporter is a
    warning when it runs the program, and named in the error when it cannot load it."""
    from edgepack.device_runners.executorch_runner import version_skew

    w = version_skew("1.1.0", "1.4.1")
    assert w is not None and "exported by executorch 1.4.1 and ran on executorch 1.1.0" in w and ">=1.4" in w
    assert version_skew("1.4.0", "1.4.1") is None and version_skew("1.5.0", "1.4.1") is None
    assert version_skew("unknown", "1.4.1") is None and version_skew("1.1.0", "") is None


@pytest.mark.slow
@pytest.mark.ssh
def test_bench_over_ssh(fp32_bundle, tmp_path):
    from sshd import Sshd, why_unavailable

    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    server = Sshd(tmp_path / "sshd").start()
    try:
        known = tmp_path / "known_hosts"
        known.write_text(server.known_hosts_line())
        remote = tmp_path / "device-cache"
        res = edgepack.bench(
            fp32_bundle.path,
            f"{server.user}@127.0.0.1:{server.port}",
            runs=5,
            min_seconds=0,
            identity=server.user_key,
            known_hosts=known,
            remote_python=sys.executable,
            remote_dir=str(remote),
        )
    finally:
        server.stop()
    r = res.result
    assert res.uploaded is True and r.device.runtime == "executorch"
    assert r.validation["output"].cosine >= 0.9999 and r.accuracy.n == 20
    assert _placement(r)["XNNFullyConnected"] == (1, 0)
    assert list((remote / "work").iterdir()) == [], "nothing left in the device's work dir"
    assert json.loads(res.model_dump_json())["format"] == "executorch"
    assert os.listdir(remote / "runners"), "the runner travelled to the device"


def test_runner_loads_the_runtime_without_the_export_stack():
    """On a device the runner needs torch and executorch's pybindings only: executorch.exir, torchao and pandas
    (the export side, +5 s of imports) stay unimported."""
    import subprocess

    from edgepack.devices import runner_dir

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import executorch_runner as r; b = r.ExecuTorchBackend(); "
        "b.check(); print(b.lib_name, sorted(m for m in ('executorch.exir', 'torchao', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(runner_dir())], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["executorch.extension.pybindings._portable_lib", "[]"], out.stdout


def test_int8_left_in_float_fails_the_route():
    """A quantizer that annotates nothing leaves every linear float: the int8 build must fail, not ship fp32."""
    import torch
    from edgepack.converters.torch_to_executorch import check_integer_compute
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgepack.errors import EdgepackError

    x = torch.zeros(1, 4)
    prepared = prepare_pt2e(torch.export.export(torch.nn.Linear(4, 4).eval(), (x,)).module(), XNNPACKQuantizer())
    prepared(x)
    with pytest.raises(EdgepackError, match="left 1 of 1 convolutions/linears in float"):
        check_integer_compute(convert_pt2e(prepared))
