"""Tensors: batches from sample-major arrays, (de)quantization, random inputs, and output agreement.

edgepack's converters and build-time validation use these same functions, so the device and the host agree.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence

from .errors import RunnerError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

Spec = Mapping[str, Any]  # a manifest tensor spec: name, shape, dtype, optional quant {scale, zero_point}


def batch_size(spec: Spec) -> int:
    """The model's batch: a static first dimension, or 1 when it is dynamic."""
    shape = spec.get("shape") or []
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return shape[0]
    return 1


def iter_batches(arrays: Mapping[str, Any], specs: Sequence[Spec]) -> Iterator[dict[str, Any]]:
    """Yield feed dicts of one model batch each from sample-major arrays."""
    if not specs:
        return
    b = batch_size(specs[0])
    n = len(arrays[specs[0]["name"]])
    for start in range(0, n - n % b if n >= b else 0, b):
        yield dict((s["name"], arrays[s["name"]][start : start + b]) for s in specs)


def quantize_input(x: ArrayLike, spec: Spec) -> NDArray[Any]:
    """Float sample -> the tensor's integer dtype when the model's input is quantized."""
    import numpy as np

    dtype: np.dtype[Any] = np.dtype(spec["dtype"])
    q = spec.get("quant")
    if q and dtype.kind in "iu" and np.asarray(x).dtype.kind == "f":
        info = np.iinfo(dtype)
        scaled = np.round(np.asarray(x, np.float64) / float(q["scale"][0]) + q["zero_point"][0])
        clipped: NDArray[Any] = np.clip(scaled, info.min, info.max)
        return clipped.astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def dequantize_output(y: ArrayLike, spec: Spec) -> NDArray[Any]:
    """An integer output of a quantized model -> float (other outputs unchanged)."""
    import numpy as np

    q = spec.get("quant")
    arr = np.asarray(y)
    if q and arr.dtype.kind in "iu":
        return (arr.astype(np.float64) - q["zero_point"][0]) * float(q["scale"][0])  # type: ignore[no-any-return]
    return arr


def random_inputs(specs: Sequence[Spec], seed: int = 0) -> dict[str, NDArray[Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds: dict[str, NDArray[Any]] = {}
    for s in specs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in s["shape"]]
        dtype = np.dtype(s["dtype"])
        if dtype.kind == "f":
            feeds[s["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[s["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[s["name"]] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise RunnerError("cannot make a random input of dtype %s for %s" % (dtype, s["name"]))
    return feeds


def compare(reference: ArrayLike, candidate: ArrayLike) -> dict[str, Any]:
    """Agreement of one output: max/mean abs error, cosine, SQNR (dB), top-1 agreement.

    ``sqnr_db`` is None when the two are identical (no noise: infinite SQNR).
    ``top1_agreement`` is None unless the output is classifier-shaped ([N, C], C >= 2).
    """
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(candidate, dtype=np.float64)
    if ref.shape != out.shape:
        if ref.size == out.size:
            out = out.reshape(ref.shape)
        else:
            raise RunnerError("output shape %s does not match the reference %s" % (list(out.shape), list(ref.shape)))
    diff = out - ref
    if not np.all(np.isfinite(out)):
        return {
            "max_abs_err": None,
            "mean_abs_err": None,
            "cosine": 0.0,
            "sqnr_db": -999.0,
            "top1_agreement": 0.0 if _classifier_shaped(ref) else None,
            "nonfinite": True,
        }
    a, b = ref.ravel(), out.ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        cosine = 1.0
    elif na == 0.0 or nb == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.dot(a, b) / (na * nb))
    noise = float(np.sum(diff * diff))
    signal_power = float(np.sum(ref * ref))
    sqnr: Optional[float]
    if noise == 0.0:
        sqnr = None
    elif signal_power == 0.0:
        sqnr = -999.0
    else:
        sqnr = 10.0 * math.log10(signal_power / noise)
    top1 = None
    if _classifier_shaped(ref):
        top1 = float(np.mean(np.argmax(ref, axis=-1) == np.argmax(out, axis=-1)))
    return {
        "max_abs_err": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "mean_abs_err": float(np.mean(np.abs(diff))) if diff.size else 0.0,
        "cosine": min(1.0, max(-1.0, cosine)),
        "sqnr_db": sqnr,
        "top1_agreement": top1,
    }


def _classifier_shaped(arr: NDArray[Any]) -> bool:
    return arr.ndim == 2 and arr.shape[-1] >= 2
