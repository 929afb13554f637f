import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import dataset, tiny_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="session")
def tiny_model(session_dir) -> Path:
    return tiny_onnx(session_dir / "tiny.onnx")


@pytest.fixture(scope="session")
def calib(session_dir) -> Path:
    return dataset(session_dir / "calib.npz", n=120)


@pytest.fixture(scope="session")
def evalset(session_dir) -> Path:
    return dataset(session_dir / "eval.npz", n=40, seed=2, labels=True)


@pytest.fixture(scope="session")
def tiny_bundle(session_dir, tiny_model, evalset) -> Path:
    import edgepack

    return edgepack.build(tiny_model, eval=evalset, output=session_dir / "tiny.fp32.edgepack").path


def _installed(*modules: str) -> bool:
    """Found without importing: collecting the tests imports no framework (make test-fast stays fast)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def have_torch() -> bool:
    return _installed("torch")


def have_tensorflow() -> bool:
    return _installed("tensorflow", "ai_edge_litert")


def have_jax() -> bool:
    return _installed("jax", "flax", "jax2onnx")


def have_coremltools() -> bool:
    return _installed("coremltools")


needs_tensorflow = pytest.mark.skipif(
    not have_tensorflow(), reason="needs the tensorflow extra (pip install 'edgepack[tensorflow]')"
)
needs_torch = pytest.mark.skipif(not have_torch(), reason="needs the torch extra (pip install 'edgepack[torch]')")
