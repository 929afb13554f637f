"""Input specs from the command line, user data sets (.npz), and the bundle's golden/eval files."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgepack.device_runners.runner_common import INPUT_PREFIX, LABELS_KEY, OUTPUT_PREFIX, batch_size
from edgepack.errors import UsageError
from edgepack.types import Dim, TensorSpec

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SHAPE_RE = re.compile(r"^\d+(x\d+)*$")


def guess_layout(shape: list[Any]) -> Optional[str]:
    """NCHW / NHWC / NC from a shape (channel dims are small, spatial dims are not)."""
    if len(shape) == 2:
        return "NC"
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
        c_first, c_last = shape[1], shape[3]
        if c_first <= 4 and c_last > 4:
            return "NCHW"
        if c_last <= 4 and c_first > 4:
            return "NHWC"
        return "NCHW"
    return None


def parse_input_spec(text: str) -> TensorSpec:
    """``NAME:1x3x224x224[:float32]`` -> TensorSpec. The name may itself contain ':'."""
    parts = text.split(":")
    dtype = "float32"
    if len(parts) >= 3:
        try:
            dtype = np.dtype(parts[-1]).name
            parts = parts[:-1]
        except TypeError:
            pass
    if len(parts) < 2 or not parts[0] or not _SHAPE_RE.match(parts[-1]):
        raise UsageError(f"bad --input {text!r}", "write it as NAME:1x3x224x224 or NAME:1x3x224x224:float32")
    shape: list[Dim] = [int(d) for d in parts[-1].split("x")]
    name = ":".join(parts[:-1])
    return TensorSpec(name=name, shape=shape, dtype=dtype, layout=guess_layout(shape))


def load_dataset(path: Path, inputs: list[TensorSpec], role: str, need_labels: bool = False) -> dict[str, np.ndarray]:
    """Read a user's .npz (one array per input, samples on axis 0) and check it fits the model.

    Returns ``{input name: array, ["labels": array]}``. Every problem is a UsageError naming it.
    """
    path = Path(path)
    flag = f"--{role}"
    if not path.is_file():
        raise UsageError(f"{role} data {path} does not exist", f"pass an existing .npz file to {flag}")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise UsageError(f"{role} data {path.name} cannot be read ({e.strerror or e})", "check its permissions")
    if magic == b"\x93NUMPY":
        raise UsageError(
            f"{role} data {path.name} is a .npy file (one unnamed array), not a .npz",
            "save it with numpy.savez(path, **{input_name: array}): one named array per model input",
        )
    if not magic.startswith(b"PK"):
        raise UsageError(
            f"{role} data {path.name} is not a .npz file (numpy.savez writes a zip archive)",
            "save it with numpy.savez(path, **{input_name: array})",
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as e:
        raise UsageError(
            f"{role} data {path.name} holds object arrays, which would need pickle ({e})",
            "save plain numeric arrays with numpy.savez",
        ) from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise UsageError(
            f"{role} data {path.name} is not a readable .npz file ({e})",
            "save it with numpy.savez(path, **{input_name: array})",
        ) from e
    names = [s.name for s in inputs]
    allowed = set(names) | ({LABELS_KEY} if need_labels or role == "eval" else set())
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(
            f"{role} data {path.name} has key(s) {unknown} that match no model input (inputs: {names})",
            f"rename the arrays to the model's input names in {path.name}",
        )
    missing = [n for n in names if n not in data]
    if missing:
        raise UsageError(
            f"{role} data {path.name} lacks input(s) {missing}",
            f"add one array per model input ({names}) with samples on axis 0",
        )
    n = None
    out = {}
    for spec in inputs:
        arr = np.asarray(data[spec.name])
        want = list(spec.shape[1:])
        got = list(arr.shape[1:])
        fits = arr.ndim == len(spec.shape) and all(not isinstance(w, int) or w == g for w, g in zip(want, got))
        if not fits:
            raise UsageError(
                f"{role} array {spec.name!r} has shape {list(arr.shape)}, expected "
                f"[N, {', '.join(str(d) if isinstance(d, int) else '?' for d in want)}]",
                f"store samples along axis 0 with the model's per-sample shape {spec.shape_text()}",
            )
        if arr.dtype.kind not in "biuf":
            raise UsageError(
                f"{role} array {spec.name!r} has dtype {arr.dtype}, not numeric", f"store it as {spec.dtype}"
            )
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise UsageError(
                f"{role} array {spec.name!r} contains NaN or Inf values",
                "clean the data set before calibrating or evaluating",
            )
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise UsageError(
                f"{role} arrays have different sample counts ({n} vs {len(arr)} for {spec.name!r})",
                "give every input the same number of samples",
            )
        b = batch_size(spec.model_dump())
        if len(arr) < b or len(arr) % b:
            raise UsageError(
                f"{role} array {spec.name!r} has {len(arr)} samples, not a multiple of the model's batch {b}",
                f"give a multiple of {b} samples",
            )
        cast = arr.astype(np.dtype(spec.dtype), copy=False)
        if cast.dtype.kind == "f" and not np.all(np.isfinite(cast)):  # 1e300 is finite in float64, inf in float32
            raise UsageError(
                f"{role} array {spec.name!r} has values beyond the range of {cast.dtype} "
                f"(largest magnitude {float(np.max(np.abs(arr))):.3g})",
                f"scale or clip the data set to the model's input range ({cast.dtype})",
            )
        out[spec.name] = cast
    if need_labels:
        if LABELS_KEY not in data:
            raise UsageError(
                f"eval data {path.name} has no 'labels' array",
                "add labels=np.array([...]) with one class index per sample",
            )
        labels = np.asarray(data[LABELS_KEY]).reshape(-1)
        if labels.dtype.kind not in "iu" or len(labels) != n:
            raise UsageError(
                f"eval labels in {path.name} must be {n} integer class indices, "
                f"got {len(labels)} of dtype {labels.dtype}",
                "store one int label per sample",
            )
        out[LABELS_KEY] = labels.astype(np.int64)
    return out


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """A .npz that is byte-identical for identical arrays (fixed member order and timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def golden_arrays(inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    arrays = {INPUT_PREFIX + k: v for k, v in inputs.items()}
    arrays.update({OUTPUT_PREFIX + k: v for k, v in outputs.items()})
    return arrays


def eval_arrays(dataset: dict[str, Any]) -> dict[str, Any]:
    arrays = {INPUT_PREFIX + k: v for k, v in dataset.items() if k != LABELS_KEY}
    arrays[LABELS_KEY] = dataset[LABELS_KEY]
    return arrays


def random_dataset(inputs: list[TensorSpec], samples: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded random inputs (standard normal for floats), sample-major like a user data set."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        b = batch_size(spec.model_dump())
        per = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape[1:]]
        n = max(b, samples - samples % b)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal([n] + per).astype(dtype)
        else:
            out[spec.name] = rng.integers(0, 2, size=[n] + per).astype(dtype)
    return out


def relayout(arr: np.ndarray, src: Optional[str], dst: Optional[str]) -> np.ndarray:
    """Transpose between layouts named by letters (NCHW -> NHWC ...); anything else passes through."""
    if not src or not dst or src == dst or sorted(src) != sorted(dst) or arr.ndim != len(src):
        return arr
    return np.ascontiguousarray(arr.transpose([src.index(c) for c in dst]))


def map_tensors(data: dict[str, Any], src_specs: list[TensorSpec], dst_specs: list[TensorSpec]) -> dict[str, Any]:
    """Source-named, source-layout arrays -> the converted model's names and layouts (by position)."""
    out = {k: v for k, v in data.items() if k == LABELS_KEY}
    for s, d in zip(src_specs, dst_specs):
        if s.name in data:
            out[d.name] = relayout(data[s.name], s.layout, d.layout)
    return out


def take(dataset: dict[str, Any], n: int) -> dict[str, Any]:
    return {k: v[:n] for k, v in dataset.items()}
