"""torch -> CoreML of the model shapes that failed in issue 11: attention with shape arithmetic (coremltools 9.0's
``_cast`` with numpy >= 2.4: converters/coreml_compat.py), nn.MultiheadAttention (its inference fast path), and
forward() results that are dicts / dataclasses / nested tuples (traced through a flattening wrapper).

Real conversions with coremltools; on Linux the bundles are ``pending-device`` and the static checks hold.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import edgepack
from conftest import have_coremltools, have_torch

pytestmark = [
    pytest.mark.coreml,
    pytest.mark.torch,
    pytest.mark.skipif(not have_coremltools(), reason="needs the coreml extra (pip install 'edgepack[coreml]')"),
    pytest.mark.skipif(not have_torch(), reason="needs the torch extra"),
]

MODELS_PY = '''
import dataclasses
from typing import Optional

import torch
from torch import nn


class Attention(nn.Module):
    """ViT-style self-attention: head split from x.shape, scale from x.size(-1) ** -0.5."""

    def __init__(self, dim=16, heads=2, classes=10):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * q.size(-1) ** -0.5).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.head(y.mean(1))


class Mha(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        y, _ = self.mha(x, x, x)
        return self.head(y.mean(1))


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(16, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        features = self.body(x).relu()
        return {"logits": self.head(features.mean(1)), "features": features}


@dataclasses.dataclass
class EncoderOutput:  # what a transformers ModelOutput carries: optional fields, tuples of hidden states
    last_hidden_state: torch.Tensor
    pooler_output: Optional[torch.Tensor] = None
    attentions: Optional[tuple] = None
    hidden_states: Optional[tuple] = None


class DataclassOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 16)])

    def forward(self, x):
        states = [x]
        for layer in self.layers:
            states.append(layer(states[-1]).tanh())
        return EncoderOutput(last_hidden_state=states[-1], pooler_output=states[-1][:, 0],
                             hidden_states=tuple(states[1:]))


class TokenEncoder(nn.Module):
    """BERT-style: int64 token ids -> embedding -> attention."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.attention = Attention()

    def forward(self, ids):
        return self.attention(self.embed(ids))


class NewOnes(nn.Module):
    """Masks made with Tensor.new_ones, as Hugging Face's BERT and DETR do (bool and the tensor's own dtype)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 16)

    def forward(self, tokens):
        keep = tokens.new_ones(tokens.shape[:2], dtype=torch.bool)
        scale = tokens.new_ones(tokens.shape[-1:])
        h = self.proj(tokens) * scale
        return torch.where(keep.unsqueeze(-1), h, torch.zeros_like(h)).sum(-1)


def _seeded(cls):
    torch.manual_seed(0)
    return cls().eval()


def new_ones():
    return _seeded(NewOnes)


def attention():
    return _seeded(Attention)


def mha():
    return _seeded(Mha)


def token_encoder():
    return _seeded(TokenEncoder)


def dict_out():
    return _seeded(DictOut)


def dataclass_out():
    return _seeded(DataclassOut)
'''


@pytest.fixture(scope="module")
def models_py(tmp_path_factory):
    p = tmp_path_factory.mktemp("coreml-torch") / "models.py"
    p.write_text(MODELS_PY)
    return p


def _build(models_py, fn, tmp_path, quantize="fp16"):
    return edgepack.build(
        f"{models_py}:{fn}",
        to="coreml",
        quantize=quantize,
        inputs=["tokens:1x6x16"],
        output=tmp_path / f"{fn}.edgepack",
    )


def _golden(path):
    from edgepack.bundle import read_member

    return np.load(io.BytesIO(read_member(path, "golden.npz")))


def _linux_checks(res):
    m = res.manifest
    c = m.validation.checks
    if not edgepack.converters.coreml_tools.can_predict():
        assert m.validation.status == "pending-device"
    assert c["model_type"] == "mlProgram" and c["unsupported_ops"] == []
    assert [(t["name"], t["shape"]) for t in c["inputs"]] == [("tokens", [1, 6, 16])]
    assert [(t["name"], t["shape"]) for t in c["outputs"]] == [(o.name, o.shape) for o in m.outputs]
    assert edgepack.verify(res.path)[1] == []
    return c


@pytest.mark.parametrize("fn", ["attention", "mha"])
def test_attention_converts(models_py, fn, tmp_path):
    """Failed before: ``only 0-dimensional arrays can be converted to Python scalars`` (attention, numpy 2.4) and
    ``convert function for op '_native_multi_head_attention' not implemented`` (nn.MultiheadAttention)."""
    res = _build(models_py, fn, tmp_path)
    c = _linux_checks(res)
    assert [(o.name, o.shape) for o in res.manifest.outputs] == [("output", [1, 10])]
    assert "softmax" in c["ops"] and "matmul" in c["ops"]


def test_shim_is_what_makes_attention_convert(models_py, monkeypatch):
    """coremltools 9.0 with numpy >= 2.4: the unpatched ``_cast`` fails on the traced attention, the patched one
    converts it; the shim is idempotent and only for coremltools 9.0.x."""
    import coremltools
    import torch
    from edgepack.converters import coreml_compat, coreml_tools

    assert coreml_compat.needed("9.0") and coreml_compat.needed("9.0.1")
    assert not any(coreml_compat.needed(v) for v in ("9.1", "8.3.0", "10.0", "9.01"))
    ct = coreml_tools.ct()
    if not coreml_compat.needed(coremltools.__version__):
        pytest.skip(f"coremltools {coremltools.__version__} needs no shim")
    from coremltools.converters.mil.frontend.torch import ops

    assert (
        coreml_compat.apply()
        == coreml_compat.apply()
        == [
            "coremltools.converters.mil.frontend.torch.ops._cast",
            "coremltools.converters.mil.frontend.torch.ops.new_ones (added)",
        ]
    )
    patched = ops._cast
    assert patched._edgepack_compat and not getattr(patched.__wrapped__, "_edgepack_compat", False)

    ns: dict = {}
    exec(compile(MODELS_PY, "models", "exec"), ns)
    with torch.no_grad():
        traced = torch.jit.trace(ns["attention"](), torch.zeros(1, 6, 16))

    def convert():
        return ct.convert(
            traced,
            inputs=[ct.TensorType(name="tokens", shape=(1, 6, 16))],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS18,
        )

    if tuple(int(p) for p in np.__version__.split(".")[:2]) >= (2, 4):
        monkeypatch.setattr(ops, "_cast", patched.__wrapped__)
        with pytest.raises(TypeError, match="only 0-dimensional arrays"):
            convert()
        monkeypatch.setattr(ops, "_cast", patched)
    ops_used = {op.op_type for op in convert()._mil_program.functions["main"].operations}
    assert {"softmax", "matmul", "reshape"} <= ops_used


def test_dict_and_dataclass_outputs(models_py, tmp_path):
    """A dict result and a transformers-like dataclass (None fields skipped, a tuple of hidden states nested)
    convert; outputs in the loader's order and names (made valid CoreML names), golden data = the source's."""
    import torch

    res = _build(models_py, "dict_out", tmp_path, quantize="none")
    _linux_checks(res)
    assert [(o.name, o.shape) for o in res.manifest.outputs] == [("logits", [1, 10]), ("features", [1, 6, 8])]

    res = _build(models_py, "dataclass_out", tmp_path, quantize="none")
    _linux_checks(res)
    names = [o.name for o in res.manifest.outputs]
    assert names == ["last_hidden_state", "pooler_output", "hidden_states_0", "hidden_states_1"]
    g = _golden(res.path)
    ns: dict = {}
    exec(compile(MODELS_PY, "models", "exec"), ns)
    with torch.no_grad():
        out = ns["dataclass_out"]()(torch.from_numpy(g["input/tokens"]))
    want = [out.last_hidden_state, out.pooler_output, *out.hidden_states]
    for name, w in zip(names, want):
        np.testing.assert_allclose(g[f"output/{name}"], w.numpy(), rtol=1e-5, atol=1e-6)


def test_int64_token_ids(models_py, tmp_path):
    """CoreML has no int64 features: an int64 token-id input becomes int32 in the package and the manifest (the
    runner casts the golden int64 ids to it); the golden inputs stay the source's ids."""
    res = edgepack.build(
        f"{models_py}:token_encoder",
        to="coreml",
        quantize="fp16",
        inputs=["ids:1x6:int64"],
        output=tmp_path / "ids.edgepack",
    )
    c = res.manifest.validation.checks
    assert [(t["name"], t["shape"], t["dtype"]) for t in c["inputs"]] == [("ids", [1, 6], "int32")]
    assert [(t.name, t.dtype) for t in res.manifest.inputs] == [("ids", "int32")]
    assert "gather" in c["ops"] and "softmax" in c["ops"] and c["unsupported_ops"] == []
    ids = _golden(res.path)["input/ids"]
    assert ids.dtype.kind == "i" and ids.shape[1:] == (6,) and 0 <= ids.min() and ids.max() < 100


def test_new_ones_converts(models_py, tmp_path):
    """Failed before (zoo: BERT, DETR): "PyTorch convert function for op 'new_ones' not implemented"."""
    res = _build(models_py, "new_ones", tmp_path, quantize="none")
    _linux_checks(res)
    assert [(o.name, o.shape) for o in res.manifest.outputs] == [("output", [1, 6])]
