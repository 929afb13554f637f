"""Route onnx -> tflite: onnx2tf rewrites the ONNX graph as a TensorFlow SavedModel (NCHW -> NHWC inside), then the
TFLite converter applies the requested precision exactly as for Keras sources (tflite_tools.configure).

Layout: the default keeps the source's NCHW inputs (onnx2tf ``keep_ncw_or_nchw_or_ncdhw_input_names``, which costs
one Transpose per input); ``--layout nhwc`` gives channels-last inputs with no input Transpose.
Offline: onnx2tf downloads a calibration sample for 3-channel 4-D inputs unless the file is already in its working
directory; it runs in a scratch directory holding a placeholder (edgepack quantizes with its own --calibration).
onnx2tf pins old TensorFlow/numpy versions; install it with
``pip install --no-deps onnx2tf onnx-graphsurgeon sng4onnx psutil tf-keras`` (see README).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np

from edgepack.data import map_tensors
from edgepack.errors import EdgepackError, MissingExtraError
from edgepack.types import BuildOptions, ConvertedModel, ModelSource, TensorSpec

from . import import_tensorflow, tflite_tools

ONNX2TF_INSTALL = "pip install --no-deps onnx2tf==1.29.24 onnx-graphsurgeon sng4onnx psutil tf-keras"
_CALIB_PLACEHOLDER = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _nhwc(spec: TensorSpec) -> TensorSpec:
    if len(spec.shape) == 4 and spec.layout == "NCHW":
        n, c, h, w = spec.shape
        return spec.model_copy(update={"shape": [n, h, w, c], "layout": "NHWC"})
    return spec


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    tf = import_tensorflow()
    try:
        import onnx2tf
    except ImportError as e:
        raise MissingExtraError(f"ONNX -> TFLite needs onnx2tf, which is not installed ({e})", ONNX2TF_INSTALL)
    nhwc = options.layout == "nhwc"
    keep = [s.name for s in source.inputs if len(s.shape) == 4 and not nhwc]
    scratch = workdir / "onnx2tf"
    scratch.mkdir()
    np.save(scratch / _CALIB_PLACEHOLDER, np.zeros((20, 128, 128, 3), np.float32))
    saved = workdir / "saved_model"
    cwd = os.getcwd()
    # onnx2tf rewrites the ONNX file it is given (shape inference, renames): give it a copy, never the user's file
    model_path = str(scratch / "source.onnx")
    shutil.copyfile(source.path, model_path)
    log = io.StringIO()
    try:
        os.chdir(scratch)
        with contextlib.redirect_stdout(log):
            onnx2tf.convert(input_onnx_file_path=model_path, output_folder_path=str(saved),
                            non_verbose=True, copy_onnx_input_output_names_to_tflite=True,
                            keep_ncw_or_nchw_or_ncdhw_input_names=keep or None, not_use_onnxsim=True)
    except SystemExit as e:  # onnx2tf exits on some failures
        last = re.sub(r"\x1b\[[0-9;]*m", "", (log.getvalue().strip().splitlines() or [""])[-1])
        raise EdgepackError(f"onnx2tf could not convert {source.path.name} (exit {e.code}): {last[:300]}",
                            "try --to onnx, or simplify the model (onnxsim) and retry")
    except Exception as e:
        raise EdgepackError(f"onnx2tf could not convert {source.path.name}: {str(e).splitlines()[0][:300]}",
                            "try --to onnx, or simplify the model (onnxsim) and retry")
    finally:
        os.chdir(cwd)
    in_specs = [s if s.name in keep else _nhwc(s) for s in source.inputs]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    cal = map_tensors(calibration, source.inputs, in_specs) if calibration is not None else None
    quant = tflite_tools.configure(converter, options.quantize, options.io_dtype, cal, in_specs)
    out = workdir / "model.tflite"
    out.write_bytes(tflite_tools.convert(converter))
    # outputs: onnx2tf turns 4-D outputs channels-last; anything whose shape still matches keeps its layout
    interp = tflite_tools.open_interpreter(out)
    out_layouts = []
    details = interp.get_output_details()
    order = tflite_tools.match_order([s.name for s in source.outputs], [d["name"] for d in details])
    for s, j in zip(source.outputs, order):
        shape = [int(x) for x in details[j]["shape"]]
        out_layouts.append(s.layout if shape == list(s.shape) else _nhwc(s).layout)
    from importlib import metadata

    tools = {"onnx2tf": metadata.version("onnx2tf"), "tensorflow": tf.__version__}
    return tflite_tools.finish(out, source, options, quant, [s.layout for s in in_specs], out_layouts, tools)
