"""Post-conversion quantization of a float TFLite model with Google's ai-edge-quantizer (AEQ).

A route converts to fp32 first, then AEQ rewrites the flatbuffer in the requested precision:

- ``int8``: ``static_wi8_ai8`` — int8 per-channel weights, int8 activations calibrated on --calibration, float
  I/O (a QUANTIZE op after each input, a DEQUANTIZE before each output). Every op AEQ supports is quantized,
  residual ADDs and MEAN included, so XNNPACK runs the graph in its int8 kernels end to end;
- ``int16x8``: ``static_wi8_ai16`` — int16 activations, int8 weights (TFLite's reference kernels: slow on CPU,
  for NPUs/DSPs that take 16-bit activations);
- ``int8-weights``: ``weight_only_wi8_afp32`` — int8 weights dequantized at load (explicit DEQUANTIZE ops),
  float compute: the size of int8 with fp32 accuracy and speed.

``keep`` names ops to leave in float (mixed precision, ``--keep-float``): an op is named by its AEQ scope, the
name of its first output tensor (what ``quant_debug.tflite_layers`` reports).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

# precision -> (AEQ recipe function, what the manifest says)
RECIPES = {
    "int8": (
        "static_wi8_ai8",
        "ai-edge-quantizer static_wi8_ai8 (int8 per-channel weights, int8 activations, float I/O)",
    ),
    "int16x8": ("static_wi8_ai16", "ai-edge-quantizer static_wi8_ai16 (int8 weights, int16 activations, float I/O)"),
    "int8-weights": (
        "weight_only_wi8_afp32",
        "ai-edge-quantizer weight_only_wi8_afp32 (int8 per-channel weights, dequantized at load; float compute)",
    ),
}


def signature_feeds(interp, batches: Iterable[list[Any]]) -> dict[str, list[dict[str, Any]]]:
    """Calibration/validation batches (one array per model input, in the model's input order) as AEQ's
    ``{signature key: [{signature input name: array}, ...]}``."""
    sigs = interp.get_signature_list()
    key = next(iter(sigs))
    runner = interp.get_signature_runner(key)
    details = runner.get_input_details()  # signature name -> detail (with the tensor index)
    by_index = {d["index"]: name for name, d in details.items()}
    names = [by_index[d["index"]] for d in interp.get_input_details()]  # signature names in input order
    dtypes = [np.dtype(details[n]["dtype"]) for n in names]

    def fit(a: Any, dtype: np.dtype) -> Any:  # litert-torch narrows int64 inputs (token ids) to int32
        a = np.asarray(a)
        return a.astype(dtype) if a.dtype.kind in "iu" and dtype.kind in "iu" and a.dtype != dtype else a

    return {key: [{n: fit(a, t) for n, a, t in zip(names, arrays, dtypes)} for arrays in batches]}


def calibrate(fp32: Path, qt, feeds: dict[str, list[dict[str, Any]]]) -> dict:
    """Activation ranges over the calibration set: the minimum and maximum over all samples, like the other int8
    routes (onnxruntime MinMax, the TFLite converter). ``Quantizer.calibrate`` keeps a moving average of each
    sample's min/max instead, which with one-sample batches clips every range to a typical sample's: measured on
    tests/models/outlier_mlp.py with its first layer kept float, output cosine 0.973 (moving average) vs 0.9999."""
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    calib = calibrator.Calibrator(fp32.read_bytes(), qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate(feeds, qt._recipe_manager)
    return calib.get_model_qsvs()


class Quantizer:
    """One float model, calibrated once; ``quantize(out, keep)`` writes it in the precision, ``keep`` ops float."""

    def __init__(self, fp32: Path, mode: str, feeds: Optional[dict[str, list[dict[str, Any]]]]):
        import logging

        from ai_edge_quantizer import quantizer, recipe

        logging.getLogger("absl").setLevel(logging.ERROR)
        self.fp32, self.mode = fp32, mode
        self._recipe = getattr(recipe, RECIPES[mode][0])()
        self._quantizer = quantizer
        qt = quantizer.Quantizer(str(fp32), self._recipe)
        self._qsvs = None
        if qt.need_calibration:
            if not feeds:
                from edgepack.errors import UsageError

                raise UsageError(f"--quantize {mode} needs calibration data", "pass --calibration DATA.npz")
            self._qsvs = calibrate(fp32, qt, feeds)

    @property
    def method(self) -> str:
        return RECIPES[self.mode][1]

    def quantize(self, out: Path, keep: Iterable[str] = (), float_io: bool = True) -> Path:
        from ai_edge_quantizer import algorithm_manager, qtyping

        qt = self._quantizer.Quantizer(str(self.fp32), self._recipe)
        # The recipes quantize the graph's INPUT/OUTPUT too (int8 I/O); float I/O leaves them float, so AEQ adds a
        # QUANTIZE after each input and a DEQUANTIZE before each output instead
        for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT) if float_io else ():
            qt.update_quantization_recipe(
                regex=".*", operation_name=io, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE
            )
        for name in keep:  # later rules win: each named op falls back to float
            qt.update_quantization_recipe(
                regex=f"^{re.escape(name)};",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE,
            )
        out.unlink(missing_ok=True)
        qt.quantize(self._qsvs, enable_progress_bar=False, enable_progress_report=False).export_model(str(out))
        return out
