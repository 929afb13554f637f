"""NPU targets: real vela compiles (Ethos-U), op placement from TFLite delegates and onnxruntime profiling.

No mocks: vela runs on real int8 TFLite models, the runners run the real interpreters/sessions.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgepack
from conftest import REPO, have_tensorflow
from edgepack.errors import EdgepackError, UsageError
from helpers import KERAS_MODEL_PY, cli, one_line_error


def have_vela() -> bool:
    try:
        import ethosu.vela  # noqa: F401

        return True
    except ImportError:
        return False


needs_vela = pytest.mark.skipif(not have_vela(), reason="needs the npu extra (pip install 'edgepack[npu]')")
needs_tf = pytest.mark.skipif(
    not have_tensorflow(), reason="needs the tensorflow extra (pip install 'edgepack[tensorflow]')"
)

GATHER_MODEL_PY = """
import keras
import tensorflow as tf


def build_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), batch_size=1, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Lambda(lambda t: tf.gather(t, [3, 1, 0, 2], axis=-1))(x)  # GATHER: no Ethos-U55 kernel
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))
"""


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory):
    """Full-integer TFLite files made with the TFLite converter: the tiny Keras CNN and one with a GATHER."""
    if not have_tensorflow():
        pytest.skip("needs the tensorflow extra (pip install 'edgepack[tensorflow]')")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import contextlib
    import io

    import tensorflow as tf

    d = tmp_path_factory.mktemp("npu")
    rng = np.random.default_rng(0)
    out = {}
    for name, code in (("tiny", KERAS_MODEL_PY), ("gather", GATHER_MODEL_PY)):
        ns: dict = {}
        exec(compile(code, name, "exec"), ns)
        model = ns["build_model"]()
        for io_dtype in ("int8", "float32"):
            conv = tf.lite.TFLiteConverter.from_keras_model(model)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: (
                [rng.standard_normal((1, 8, 8, 1)).astype(np.float32)] for _ in range(32)
            )
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io_dtype == "int8":
                conv.inference_input_type = conv.inference_output_type = tf.int8
            with contextlib.redirect_stdout(io.StringIO()):
                data = conv.convert()
            path = d / f"{name}.{io_dtype}io.tflite"
            path.write_bytes(data)
            out[f"{name}-{io_dtype}"] = path
    (d / "tiny_keras.py").write_text(KERAS_MODEL_PY)
    out["tiny-py"] = d / "tiny_keras.py"
    np.savez(d / "calib.npz", image=rng.standard_normal((100, 8, 8, 1)).astype(np.float32))
    out["calib"] = d / "calib.npz"
    return out


def _manifest(bundle: Path) -> dict:
    with zipfile.ZipFile(bundle) as zf:
        return json.loads(zf.read("manifest.json"))


# --------------------------------------------------------------------------- Ethos-U through vela


@pytest.mark.npu
@pytest.mark.tensorflow
@needs_vela
@needs_tf
@pytest.mark.slow
def test_keras_int8_build_maps_fully_to_ethos_u55(tflite_models, tmp_path):
    """build → int8 TFLite (int8 I/O by default with --npu) → validate → vela → bundle with both models."""
    out = tmp_path / "tiny.npu.edgepack"
    proc = cli(
        "build",
        f"{tflite_models['tiny-py']}:build_model",
        "--to",
        "tflite",
        "--quantize",
        "int8",
        "--calibration",
        str(tflite_models["calib"]),
        "--npu",
        "ethos-u55-128",
        "-o",
        str(out),
        check=True,
    )
    assert "ethos-u55-128: all 3 ops on the NPU" in proc.stderr
    m = _manifest(out)
    npu = m["npu"]
    assert m["model"]["member"] == "model.tflite" and npu["model"]["member"] == "model_vela.tflite"
    assert set(m["members"]) >= {"model.tflite", "model_vela.tflite", "golden.npz"}
    assert [t["dtype"] for t in m["inputs"] + m["outputs"]] == ["int8", "int8"]
    assert npu["accelerator"] == "ethos-u55-128" and npu["npu_percent"] == 100.0
    assert npu["placement"]["cpu_ops"] == 0 and npu["placement"]["partitions"] == 1
    assert npu["macs"] > 0 and npu["total_cycles"] >= npu["npu_cycles"] > 0 and npu["est_inference_ms"] > 0
    assert npu["sram_bytes"] > 0 and npu["layers"] and m["validation"]["status"] == "passed"
    assert "device only" in npu["numerics"]
    import jsonschema

    jsonschema.validate(m, json.loads((REPO / "edgepack" / "schemas" / "manifest.schema.json").read_text()))


@pytest.mark.npu
@needs_vela
def test_int8_tflite_is_100_percent_npu(tflite_models, tmp_path):
    out = tmp_path / "tiny.edgepack"
    res = edgepack.build(tflite_models["tiny-int8"], to="tflite", npu="ethos-u55-128", output=out)
    npu = res.manifest.npu
    assert npu.npu_percent == 100.0 and npu.placement.cpu_ops == 0 and npu.placement.accelerator_ops == 3
    assert {o.op_type for o in npu.placement.ops} == {"CONV_2D", "MEAN", "FULLY_CONNECTED"}
    assert npu.est_inference_ms > 0 and npu.est_inferences_per_s > 0 and npu.clock_hz == 500e6
    assert npu.system_config and npu.memory_mode and not npu.hints
    manifest, problems = edgepack.verify(out)
    assert not problems and manifest.npu.model.member == "model_vela.tflite"
    from edgepack.placement_view import placement_markdown

    md = placement_markdown(manifest)  # the report's entry point takes a Manifest (its npu) as well as results
    assert "ethos-u55-128: 3/3 ops (100.0%)" in md and "| CONV_2D | 1 | 0 | – |" in md
    shown = cli("inspect", str(out), env={"COLUMNS": "200"}, check=True).stdout
    assert "NPU build (ethos-u55-128)" in shown and "100.0% NPU" in shown and "vela's estimate" in shown


@pytest.mark.npu
@needs_vela
def test_unmappable_op_falls_back_with_reason_and_fix(tflite_models, tmp_path):
    out = tmp_path / "gather.edgepack"
    proc = cli(
        "build",
        str(tflite_models["gather-int8"]),
        "--to",
        "tflite",
        "--npu",
        "ethos-u55-128",
        "-o",
        str(out),
        env={"COLUMNS": "300"},
        check=True,
    )
    assert "1 of 4 ops fall back to the CPU" in proc.stderr
    assert "CPU: GATHER ×1 — Unsupported opType" in proc.stderr and "fix: GATHER" in proc.stderr
    npu = _manifest(out)["npu"]
    gather = next(o for o in npu["placement"]["ops"] if o["op_type"] == "GATHER")
    assert gather == {"op_type": "GATHER", "accelerator": 0, "cpu": 1, "reasons": ["Unsupported opType"]}
    assert npu["npu_percent"] == 75.0 and npu["placement"]["partitions"] == 2  # the GATHER splits the NPU graph
    assert any(h.startswith("GATHER:") for h in npu["hints"])


@pytest.mark.npu
@needs_vela
@pytest.mark.slow
def test_placement_gate_fails_ci_on_a_real_vela_build_naming_the_cpu_ops(tflite_models, tmp_path):
    """edgepack build --npu (vela) of a model with a forced CPU op (GATHER), bench, then report's placement gate."""
    from xml.etree import ElementTree as ET

    from edgepack.report import bench_json

    gather = edgepack.build(
        tflite_models["gather-int8"], to="tflite", npu="ethos-u55-128", output=tmp_path / "gather.edgepack"
    ).path
    full = edgepack.build(
        tflite_models["tiny-int8"], to="tflite", npu="ethos-u55-128", output=tmp_path / "full.edgepack"
    ).path
    records = [edgepack.bench(b, runs=3, warmup=0, min_seconds=0) for b in (gather, full)]
    assert records[0].npu_placement.accelerator == "ethos-u55-128" and records[0].npu_placement.cpu_ops == 1
    results = tmp_path / "bench.json"
    results.write_text(bench_json(records))
    assert json.loads(results.read_text())["results"][0]["npu_placement"]["cpu_ops"] == 1, "the record carries it"

    junit = tmp_path / "r.xml"
    proc = cli("report", str(results), "--max-cpu-fallback-ops", "0", "--format", "junit", "-o", str(junit))
    assert proc.returncode == 1, proc.stderr
    cases = {
        (s.get("name"), c.get("name")): c.find("failure") is not None
        for s in ET.parse(junit).getroot()
        for c in s.iter("testcase")
    }
    g, f = "gather.edgepack @ local", "full.edgepack @ local"
    assert cases[(g, "cpu-fallback-ops (ethos-u55-128, vela)")] is True
    assert cases[(g, "cpu-fallback GATHER (ethos-u55-128, vela)")] is True, "each CPU op type is a failing case"
    assert cases[(f, "cpu-fallback-ops (ethos-u55-128, vela)")] is False
    assert not any(name.startswith("cpu-fallback") and "XNNPACK" in name for _, name in cases), (
        "an NPU bundle benched on its CPU model is gated on its NPU compile, not on XNNPACK"
    )
    failure = ET.parse(junit).getroot().find(".//testcase[@name='cpu-fallback GATHER (ethos-u55-128, vela)']/failure")
    assert failure.get("message") == "GATHER ×1 ran on the CPU, not on ethos-u55-128: Unsupported opType"

    md = cli("report", str(results), "--min-accelerated-share", "0.9")
    assert md.returncode == 1 and "3/4 ops (75.0%) on ethos-u55-128 (required 90.0%)" in md.stdout
    from edgepack.gate import GateSettings
    from edgepack.report import make_report

    assert not make_report(records, settings=GateSettings(min_accelerated_share=0.7)).failed  # 75% >= 70%

    bare = edgepack.build(tflite_models["gather-int8"], to="tflite", output=tmp_path / "bare.edgepack").path
    xnn = [edgepack.bench(bare, runs=3, warmup=0, min_seconds=0)]  # no NPU: the runtime's delegate is gated
    failed = make_report(xnn, settings=GateSettings(max_cpu_fallback_ops=0)).failed
    assert [c.message for c in failed if c.name == "cpu-fallback GATHER (XNNPACK, tflite-delegate)"] == [
        "GATHER ×1 ran on the CPU, not on XNNPACK: not claimed by XNNPACK (op or its types unsupported there)"
    ]
    assert not [c for c in make_report(xnn).checks if "placement" in c.name or "fallback" in c.name], (
        "no placement limits, no placement checks"
    )


@pytest.mark.npu
@needs_vela
def test_float_io_falls_back_and_says_quantize_fully(tflite_models, tmp_path):
    res = edgepack.build(
        tflite_models["tiny-float32"], to="tflite", npu="ethos-u55-128", output=tmp_path / "f.edgepack"
    )
    p = res.manifest.npu.placement
    cpu = {o.op_type: o for o in p.ops if o.cpu}
    assert set(cpu) == {"QUANTIZE", "DEQUANTIZE"}
    assert "Float32" in " ".join(cpu["QUANTIZE"].reasons)
    assert any("quantize fully" in h for h in res.manifest.npu.hints)


@pytest.mark.npu
@needs_vela
def test_npu_strict_fails_and_writes_nothing(tflite_models, tmp_path):
    out = tmp_path / "strict.edgepack"
    proc = cli(
        "build",
        str(tflite_models["gather-int8"]),
        "--to",
        "tflite",
        "--npu",
        "ethos-u55-128",
        "--npu-strict",
        "-o",
        str(out),
    )
    line = one_line_error(proc)
    assert proc.returncode == 1 and "--npu-strict: 1 op(s) fall back to the CPU" in line and "GATHER" in line
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.npu
@needs_vela
def test_vela_options_pass_through(tflite_models, tmp_path):
    res = edgepack.build(
        tflite_models["gather-int8"],
        to="tflite",
        npu="ethos-u85-256",
        npu_config="Arm/vela.ini",
        npu_system_config="Ethos_U85_SYS_DRAM_Mid",
        npu_memory_mode="Dedicated_Sram_384KB",
        output=tmp_path / "u85.edgepack",
    )
    npu = res.manifest.npu
    assert (npu.accelerator, npu.system_config, npu.memory_mode) == (
        "ethos-u85-256",
        "Ethos_U85_SYS_DRAM_Mid",
        "Dedicated_Sram_384KB",
    )
    gather = next(o for o in npu.placement.ops if o.op_type == "GATHER")  # U85 has GATHER, but only on axis 0 here
    assert gather.cpu == 1 and gather.reasons == ["axis: 3 != batch_dims: 0 — axis must be equal to batch_dims"]
    with pytest.raises(UsageError, match="Section System_Config.Nope not found"):
        edgepack.build(
            tflite_models["gather-int8"],
            to="tflite",
            npu="ethos-u55-128",
            npu_system_config="Nope",
            output=tmp_path / "x.edgepack",
        )


def test_npu_option_errors(tiny_model, tmp_path):
    with pytest.raises(UsageError, match="--npu ethos-u55-128 needs --to tflite"):
        edgepack.build(tiny_model, to="onnx", npu="ethos-u55-128", output=tmp_path / "x.edgepack")
    with pytest.raises(UsageError, match="unknown --npu"):
        edgepack.build(tiny_model, to="tflite", npu="hexagon", output=tmp_path / "x.edgepack")
    with pytest.raises(UsageError, match="need --npu"):
        edgepack.build(tiny_model, to="onnx", npu_strict=True, output=tmp_path / "x.edgepack")


@pytest.mark.npu
@needs_vela
def test_npu_model_needs_the_ethos_u_delegate(tflite_models, tmp_path):
    out = edgepack.build(
        tflite_models["tiny-int8"], to="tflite", npu="ethos-u55-128", output=tmp_path / "t.edgepack"
    ).path
    with pytest.raises(EdgepackError, match="unresolved custom op: ethos-u") as info:
        edgepack.bench(out, runs=2, warmup=0, min_seconds=0, npu_model=True)
    assert "--delegate libethosu_op_delegate.so on an Ethos-U board" in info.value.hint


# --------------------------------------------------------------------------- TFLite delegates


@pytest.mark.tensorflow
@needs_tf
def test_tflite_placement_with_xnnpack(tflite_models, tmp_path):
    bundle = edgepack.build(tflite_models["gather-int8"], to="tflite", output=tmp_path / "g.edgepack").path
    res = edgepack.bench(bundle, runs=3, warmup=0, min_seconds=0).result
    p = res.placement
    assert p.accelerator == "XNNPACK" and p.source == "tflite-delegate" and p.partitions == 2
    ops = {o.op_type: (o.accelerator, o.cpu) for o in p.ops}
    assert ops == {"CONV_2D": (1, 0), "GATHER": (0, 1), "MEAN": (1, 0), "FULLY_CONNECTED": (1, 0)}
    assert "not claimed by XNNPACK" in next(o for o in p.ops if o.op_type == "GATHER").reasons[0]
    off = edgepack.bench(bundle, runs=3, warmup=0, min_seconds=0, no_xnnpack=True).result.placement
    assert off.accelerator is None and off.accelerator_ops == 0 and off.cpu_ops == 4


# --------------------------------------------------------------------------- onnxruntime EPs and profiling


def test_onnx_profiling_gives_placement_and_op_times(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the runner's trace directory must be gone afterwards
    res = edgepack.bench(tiny_bundle, runs=20, warmup=2, min_seconds=0, profile=True).result
    p, t = res.placement, res.op_timing
    assert p.source == "onnxruntime-profile" and p.accelerator is None
    assert p.accelerator_ops == 0 and p.cpu_ops >= 4 and {"Conv", "Gemm"} <= {o.op_type for o in p.ops}
    assert t.profiled_runs == 10 and t.node_total_ms > 0 and t.profiled_run_ms > 0
    assert all(o.provider == "CPUExecutionProvider" and o.ms > 0 for o in t.top)
    assert abs(sum(o.share for o in t.top) - 1.0) < 1e-6 and set(t.by_type) == {o.op_type for o in p.ops}
    assert not list(tmp_path.glob("edgepack-run-*")) and not list(tmp_path.rglob("*.json"))
    from edgepack.placement_view import op_timing_markdown

    md = op_timing_markdown(res.model_dump(mode="json", by_alias=True), 2)  # plain dicts work too
    assert "**Per-op time** (top 2, median of 10 profiled runs" in md and md.count("| CPUExecutionProvider |") == 2
    plain = edgepack.bench(tiny_bundle, runs=5, warmup=0, min_seconds=0).result
    assert plain.placement is None and plain.op_timing is None  # no profiling unless asked


def test_ep_cpu_reports_every_node_on_cpu(tiny_bundle):
    res = edgepack.bench(tiny_bundle, runs=5, warmup=0, min_seconds=0, ep=["cpu"]).result
    assert res.runtime_details["providers"] == ["CPUExecutionProvider"]
    assert res.placement.cpu_ops == sum(o.cpu for o in res.placement.ops) and res.placement.accelerator_ops == 0


def test_absent_ep_is_a_clear_error(tiny_bundle, tmp_path):
    proc = cli(
        "bench",
        str(tiny_bundle),
        "--ep",
        "qnn",
        "--runs",
        "2",
        "--min-seconds",
        "0",
        "--json",
        str(tmp_path / "r.json"),
    )
    line = one_line_error(proc)
    assert proc.returncode == 5
    assert "execution provider QNNExecutionProvider is not available" in line and "CPUExecutionProvider" in line
    assert not (tmp_path / "r.json").exists()


def test_bench_shows_placement_and_op_timing(tiny_bundle, tmp_path):
    proc = cli(
        "bench",
        str(tiny_bundle),
        "--profile",
        "--runs",
        "5",
        "--min-seconds",
        "0",
        "--top",
        "3",
        "--markdown",
        str(tmp_path / "r.md"),
        "--json",
        str(tmp_path / "r.json"),
        env={"COLUMNS": "200"},
        check=True,
    )
    assert "op placement" in proc.stdout and "per-op time (top 3" in proc.stdout
    md = (tmp_path / "r.md").read_text()
    assert "**Op placement**" in md and "**Per-op time** (top 3" in md and "| Conv |" in md
    result = json.loads((tmp_path / "r.json").read_text())["results"][0]["result"]
    assert result["placement"]["ops"] and len(result["op_timing"]["top"]) >= 4


def test_accelerator_flags_are_checked_per_format(tiny_bundle):
    with pytest.raises(UsageError, match="--delegate do\\(es\\) not apply to a onnx bundle"):
        edgepack.bench(tiny_bundle, delegate="libedgetpu.so.1")
    with pytest.raises(UsageError, match="--npu-model"):
        edgepack.bench(tiny_bundle, npu_model=True)
