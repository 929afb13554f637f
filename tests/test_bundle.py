"""The .edgepack file: deterministic, atomic, verifiable, schema-checked."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

import edgepack
from edgepack.bundle import manifest_json_schema
from edgepack.errors import EdgepackError
from helpers import cli, one_line_error

REPO = Path(__file__).resolve().parents[1]


def test_same_inputs_give_byte_identical_bundles(tiny_model, calib, evalset, tmp_path):
    a = edgepack.build(tiny_model, quantize="int8", calibration=calib, eval=evalset, output=tmp_path / "a.edgepack")
    b = edgepack.build(tiny_model, quantize="int8", calibration=calib, eval=evalset, output=tmp_path / "b.edgepack")
    assert a.path.read_bytes() == b.path.read_bytes()


def test_manifest_contents(tiny_bundle, tiny_model):
    m = edgepack.inspect(tiny_bundle)
    from edgepack.bundle import sha256_file

    assert m.format == "onnx" and m.runtime == "onnxruntime"
    assert m.source.sha256 == sha256_file(tiny_model) and m.source.framework == "onnx"
    assert set(m.members) == {"model.onnx", "golden.npz", "eval.npz"}
    assert m.inputs[0].name == "image" and m.inputs[0].shape == [1, 1, 8, 8] and m.inputs[0].layout == "NCHW"
    assert m.outputs[0].dtype == "float32"
    assert m.validation.status == "passed" and m.validation.outputs["logits"].cosine > 0.9999
    assert m.tools["edgepack"] == edgepack.__version__ and "onnxruntime" in m.tools
    with zipfile.ZipFile(tiny_bundle) as zf:
        assert zf.namelist()[0] == "manifest.json"
        import numpy as np

        with zf.open("golden.npz") as f:
            g = np.load(f)
            assert g["input/image"].shape == (4, 1, 8, 8) and g["output/logits"].shape == (4, 10)


def test_published_schema_is_current_and_validates_manifests(tiny_bundle):
    import jsonschema

    committed = (REPO / "edgepack" / "schemas" / "manifest.schema.json").read_text()
    assert committed == manifest_json_schema(), "run: edgepack schema manifest > edgepack/schemas/manifest.schema.json"
    with zipfile.ZipFile(tiny_bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    jsonschema.validate(manifest, json.loads(committed))
    manifest["quantization"]["mode"] = "int3"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, json.loads(committed))


def _rewrite(src: Path, dst: Path, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info, data)
    return dst


def test_verify_cli_ok_and_tampered(tiny_bundle, tmp_path):
    ok = cli("verify", str(tiny_bundle))
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = _rewrite(
        tiny_bundle, tmp_path / "bad.edgepack", lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n == "model.onnx" else d
    )
    res = cli("verify", str(bad))
    assert res.returncode == 1 and "sha256 mismatch" in res.stderr
    missing = _rewrite(tiny_bundle, tmp_path / "missing.edgepack", lambda n, d: None if n == "golden.npz" else d)
    res = cli("verify", str(missing))
    assert res.returncode == 1 and "missing" in res.stderr


def test_verify_rejects_schema_violation(tiny_bundle, tmp_path):
    def change(name, data):
        if name == "manifest.json":
            m = json.loads(data)
            del m["inputs"]
            return json.dumps(m).encode()
        return data

    bad = _rewrite(tiny_bundle, tmp_path / "schema.edgepack", change)
    with pytest.raises(EdgepackError, match="does not match the schema at inputs"):
        edgepack.verify(bad)
    res = cli("verify", str(bad))
    assert res.returncode == 1 and "schema" in one_line_error(res)


def test_not_a_zip(tmp_path):
    p = tmp_path / "x.edgepack"
    p.write_bytes(b"not a zip")
    res = cli("inspect", str(p))
    assert res.returncode == 1 and "not a valid bundle" in res.stderr


def test_failed_build_leaves_nothing(tiny_model, tmp_path):
    out = tmp_path / "out" / "m.edgepack"
    res = cli("build", str(tiny_model), "--quantize", "dynamic", "--min-cosine", "1.01", "-o", str(out))
    assert res.returncode == 4, res.stderr
    assert "disagrees with the onnx source" in res.stderr
    one_line_error(res)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == [], "no temp files left"
