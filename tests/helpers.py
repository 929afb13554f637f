"""Small real models and data sets the tests build on the fly (no downloads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np


def tiny_onnx(path: Path, seed: int = 0, classes: int = 10) -> Path:
    """Conv(1→8, 3x3) → Relu → GlobalAveragePool → Flatten → Gemm(8→classes): input image [1,1,8,8]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b")
    fw = numpy_helper.from_array(rng.standard_normal((classes, 8)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32) * 0.1, "fb")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        [w, b, fw, fb],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgepack-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def chain_onnx(path: Path, layers: int, width: int = 256, seed: int = 0) -> Path:
    """``layers`` × (MatMul [width×width] → Tanh) on an input ``x`` [1,width]: a model whose work grows with
    ``layers`` (the same weights for the first layers whatever their count), for real slowdowns of a known size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "y" if i == layers - 1 else f"t{i}"
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgepack-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def two_io_onnx(path: Path) -> Path:
    """Inputs ``input.1`` [N,3,8,8] (dynamic batch, a name CoreML refuses) and ``bias`` [N,8]; outputs ``mask``
    [N,8,8,8] (channels-first, and square: its shape reads the same channels-last) and ``vec`` [N,8]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (8, 8, 1, 1)), ("b2", (8,)))
    ]
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    nodes = [
        helper.make_node("Conv", ["input.1", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a"]),
        helper.make_node("Conv", ["a", "w2", "b2"], ["mask"]),
        helper.make_node("ReduceMean", ["a", "axes"], ["m"], keepdims=0),
        helper.make_node("Add", ["m", "bias"], ["vec"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two-io",
        [
            helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 8, 8]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["N", 8]),
        ],
        [
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 8, 8, 8]),
            helper.make_tensor_value_info("vec", TensorProto.FLOAT, ["N", 8]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dataset(
    path: Path, n: int = 120, seed: int = 1, labels: bool = False, name: str = "image", shape=(1, 8, 8)
) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {name: rng.standard_normal((n, *shape)).astype(np.float32)}
    if labels:
        arrays["labels"] = rng.integers(0, 10, n).astype(np.int64)
    np.savez(path, **arrays)
    return path


TORCH_MODEL_PY = """
import torch
from torch import nn


def build_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()


def not_a_module():
    return 42
"""


def torch_model_py(dirpath: Path) -> Path:
    p = dirpath / "tiny_torch.py"
    p.write_text(TORCH_MODEL_PY)
    return p


JAX_MODEL_PY = """
import jax
import jax.numpy as jnp
import numpy as np


def plain():
    # a jax.numpy function and its weights: fn(params, x), NHWC 8x8x1 -> 10 logits
    rng = np.random.default_rng(0)
    params = {
        "conv": (rng.standard_normal((3, 3, 1, 8)) * 0.5).astype(np.float32),
        "bias": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "dense": (rng.standard_normal((8, 10)) * 0.5).astype(np.float32),
    }

    def fn(p, x):
        y = jax.lax.conv_general_dilated(x, p["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jax.nn.relu(y + p["bias"])
        return jnp.mean(y, axis=(1, 2)) @ p["dense"]

    return fn, params


def no_params():
    return (lambda x: jnp.tanh(x) * 2.0), None


def nnx_cnn():
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.fc = nnx.Linear(8 * 4 * 4, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn(self.conv(x)))
            x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
            return self.fc(x.reshape(x.shape[0], -1))

    return CNN(nnx.Rngs(0))


def linen_mlp():
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = x.reshape(x.shape[0], -1)
            return {"logits": nn.Dense(10)(nn.relu(nn.Dense(16)(x))), "features": x * 2.0}

    model = MLP()
    return model.apply, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
"""


def jax_model_py(dirpath: Path) -> Path:
    p = dirpath / "tiny_jax.py"
    p.write_text(JAX_MODEL_PY)
    return p


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, check: bool = False):
    """Run the real CLI in a subprocess (python -m edgepack)."""
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "edgepack", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"edgepack {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def one_line_error(proc) -> str:
    """The CLI failed with exactly one error line, no traceback; returns that line."""
    assert proc.returncode != 0, "expected a failure"
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgepack: error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


KERAS_MODEL_PY = """
import keras


def build_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out)
"""

SVD_MODEL_PY = """
import keras
import tensorflow as tf


class Svd(keras.layers.Layer):
    def call(self, x):
        return tf.linalg.svd(x, compute_uv=False)


def build_model():
    inp = keras.Input((4, 4), batch_size=1, name="m")
    return keras.Model(inp, Svd()(inp))
"""


def keras_files(dirpath: Path) -> dict:
    """The same small Keras CNN as file.py:callable, .keras, .h5 and a SavedModel directory."""
    import contextlib
    import io
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    py = dirpath / "tiny_keras.py"
    py.write_text(KERAS_MODEL_PY)
    ns: dict = {}
    exec(compile(KERAS_MODEL_PY, str(py), "exec"), ns)
    model = ns["build_model"]()
    model.save(dirpath / "tiny.keras")
    model.save(dirpath / "tiny.h5")
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(dirpath / "tiny_saved", verbose=False)
    (dirpath / "svd.py").write_text(SVD_MODEL_PY)
    return {
        "callable": f"{py}:build_model",
        "keras": str(dirpath / "tiny.keras"),
        "h5": str(dirpath / "tiny.h5"),
        "savedmodel": str(dirpath / "tiny_saved"),
        "svd": f"{dirpath / 'svd.py'}:build_model",
        "model": model,
    }
