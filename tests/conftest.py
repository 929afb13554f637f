import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import dataset, tiny_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # Frameworks write caches and settings to $HOME on import; keep the user's home clean.
    os.environ.setdefault("EDGEPACK_TEST", "1")


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


def have_torch() -> bool:
    try:
        import torch  # noqa: F401

        return True
    except ImportError:
        return False


def have_tensorflow() -> bool:
    try:
        import tensorflow  # noqa: F401
        import ai_edge_litert  # noqa: F401

        return True
    except ImportError:
        return False


def have_coremltools() -> bool:
    try:
        import coremltools  # noqa: F401

        return True
    except ImportError:
        return False


needs_tensorflow = pytest.mark.skipif(not have_tensorflow(),
                                      reason="needs the tensorflow extra (pip install 'edgepack[tensorflow]')")
needs_torch = pytest.mark.skipif(not have_torch(), reason="needs the torch extra (pip install 'edgepack[torch]')")
