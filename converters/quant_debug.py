"""Quantization debugger and mixed precision (``--explain-quant``, ``--keep-float N|auto``).

Per layer, on the build's validation samples (the first calibration samples), the float model and the quantized
model run side by side with every intermediate tensor kept, and each quantized layer gets:

- ``sqnr_db``: its output in the quantized model (dequantized) against the float model's, and ``cosine``;
- ``input_sqnr_db``: the worst of its activation inputs as the quantized layer consumes them (after their
  QUANTIZE/DequantizeLinear) against the float model's;
- ``loss_db`` = input SQNR − output SQNR (both capped at ``CAP_DB``): the signal-to-noise this layer itself costs.
  Errors accumulate along the graph, so every layer after a bad one shows a bad output SQNR; the loss points at the
  layer where the error appears. Layers are ranked by it.

ONNX: the models' intermediate tensors are exposed with onnxruntime's ``qdq_loss_debug``
(``modify_model_output_intermediate_tensors``); a QDQ layer's input is its DequantizeLinear's output, its output the
DequantizeLinear after its QuantizeLinear. TFLite: the interpreter with ``experimental_preserve_all_tensors``
(created by ai-edge-quantizer's ``tfl_interpreter_utils``, its per-tensor validation's set-up) on reference kernels;
ops of the two models pair by their first output tensor's name (which AEQ keeps).

Mixed precision: ``--keep-float N`` re-quantizes (same calibration) with the N top-ranked layers left in float;
``auto`` adds layers in rank order until the outputs agree with the float model at the build's min cosine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgepack.types import LayerSensitivity, QuantizationInfo

CAP_DB = 100.0


class _Energy:
    """Signal and noise energy of one tensor over the samples (SQNR, cosine)."""

    def __init__(self) -> None:
        self.signal = self.noise = self.dot = self.cand = 0.0

    def add(self, ref: Any, cand: Any) -> None:
        r = np.asarray(ref, np.float64).ravel()
        c = np.asarray(cand, np.float64).ravel()
        if r.size != c.size:
            return
        self.signal += float(r @ r)
        self.noise += float((c - r) @ (c - r))
        self.dot += float(r @ c)
        self.cand += float(c @ c)

    def sqnr(self) -> float:
        if self.noise == 0.0:
            return CAP_DB
        if self.signal == 0.0:
            return -CAP_DB
        return max(-CAP_DB, min(CAP_DB, 10.0 * math.log10(self.signal / self.noise)))

    def cosine(self) -> float:
        if self.signal == 0.0 and self.cand == 0.0:
            return 1.0
        if self.signal == 0.0 or self.cand == 0.0:
            return 0.0
        return self.dot / math.sqrt(self.signal * self.cand)


def _rows(stats: dict[str, tuple[str, _Energy, list[_Energy]]]) -> list[LayerSensitivity]:
    rows = []
    for name, (op_type, out, ins) in stats.items():
        out_db = out.sqnr()
        in_db = min((e.sqnr() for e in ins), default=CAP_DB)
        rows.append(
            LayerSensitivity(
                name=name,
                op_type=op_type,
                sqnr_db=round(out_db, 2),
                input_sqnr_db=round(in_db, 2),
                loss_db=round(max(0.0, in_db - out_db), 2),
                cosine=round(out.cosine(), 6),
            )
        )
    rows.sort(key=lambda r: (-r.loss_db, r.sqnr_db))
    return rows


# --------------------------------------------------------------------------- TFLite


def tflite_layers(fp32: Path, quant: Path, feeds: dict[str, list[dict[str, Any]]]) -> list[LayerSensitivity]:
    """Per-op errors of the quantized TFLite model against its float source (ranked)."""
    from ai_edge_quantizer.utils import tfl_interpreter_utils as tu

    models = []
    for path in (fp32, quant):
        interp = tu.create_tfl_interpreter(str(path), use_xnnpack=False, num_threads=1, preserve_all_tensors=True)
        details = {d["index"]: d for d in interp.get_tensor_details()}
        ops = interp._get_ops_details()
        models.append((interp, details, ops))
    (fi, fdet, fops), (qi, qdet, qops) = models
    # activations of the float model: graph inputs and op outputs (the rest are constants)
    f_act = {int(i) for op in fops for i in op["outputs"]} | {d["index"] for d in fi.get_input_details()}
    q_by_out = {
        qdet[int(op["outputs"][0])]["name"]: op
        for op in qops
        if len(op["outputs"]) and op["op_name"] not in ("QUANTIZE", "DEQUANTIZE", "DELEGATE")
    }
    pairs = []
    for op in fops:
        if not len(op["outputs"]):
            continue
        name = fdet[int(op["outputs"][0])]["name"]
        q = q_by_out.get(name)
        if q is None:
            continue
        if np.dtype(qdet[int(q["outputs"][0])]["dtype"]).kind not in "iu":  # left float: not a quantized layer
            continue
        ins = [(int(fj), int(qj)) for fj, qj in zip(op["inputs"], q["inputs"]) if int(fj) in f_act and int(qj) >= 0]
        pairs.append((name, op["op_name"], int(op["outputs"][0]), int(q["outputs"][0]), ins))
    stats: dict[str, tuple[str, _Energy, list[_Energy]]] = {
        name: (kind, _Energy(), [_Energy() for _ in ins]) for name, kind, _, _, ins in pairs
    }
    for key, samples in feeds.items():
        for sample in samples:
            tu.invoke_interpreter_signature(fi, sample, key)
            tu.invoke_interpreter_signature(qi, sample, key)
            for name, _, fo, qo, ins in pairs:
                _, out, in_stats = stats[name]
                out.add(tu.get_tensor_data(fi, fdet[fo]), tu.get_tensor_data(qi, qdet[qo]))
                for e, (fj, qj) in zip(in_stats, ins):
                    e.add(tu.get_tensor_data(fi, fdet[fj]), tu.get_tensor_data(qi, qdet[qj]))
    return _rows(stats)


# --------------------------------------------------------------------------- ONNX


def onnx_layers(fp32: Path, qdq: Path, batches: list[dict[str, Any]], workdir: Path) -> list[LayerSensitivity]:
    """Per-node errors of a QDQ ONNX model against the float model it was quantized from (ranked)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import qdq_loss_debug
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    postfix = getattr(qdq_loss_debug, "_TENSOR_SAVE_POSTFIX", "_ReshapedSavedOutput")

    runs = []
    for path in (fp32, qdq):
        augmented = workdir / f"{Path(path).stem}.debug.onnx"
        modify_model_output_intermediate_tensors(str(path), str(augmented), save_as_external_data=False)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor as it is
        sess = ort.InferenceSession(str(augmented), so, providers=["CPUExecutionProvider"])
        runs.append((onnx.load(str(path)), sess))
        augmented.unlink(missing_ok=True)
    (fmodel, fsess), (qmodel, qsess) = runs
    f_inits = {i.name for i in fmodel.graph.initializer}
    f_nodes = {n.name: n for n in fmodel.graph.node if n.name}
    f_tensors = {o for n in fmodel.graph.node for o in n.output} | {i.name for i in fmodel.graph.input}
    consumers: dict[str, list[Any]] = {}
    for n in qmodel.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def seen_as(tensor: str) -> Optional[str]:
        """The DequantizeLinear output consumers read for ``tensor`` (None: not quantized)."""
        for qn in consumers.get(tensor, []):
            if qn.op_type == "QuantizeLinear":
                for dn in consumers.get(qn.output[0], []):
                    if dn.op_type == "DequantizeLinear":
                        return str(dn.output[0])
        return None

    pairs = []
    for n in qmodel.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.name not in f_nodes:
            continue
        out_seen = seen_as(n.output[0])
        if out_seen is None:  # its output is not quantized: not a quantized layer
            continue
        fnode = f_nodes[n.name]
        ins = [(fi, qi) for fi, qi in zip(fnode.input, n.input) if fi and fi not in f_inits]
        # the quantizer may fuse an activation into the node (Gemm + Relu writes the Relu's tensor): compare with
        # the float tensor of the same name, else with the one its DequantizeLinear stands for (a graph output)
        fo = next((t for t in (n.output[0], out_seen) if t in f_tensors), fnode.output[0])
        pairs.append((n.name, n.op_type, fo, out_seen, ins))
    stats: dict[str, tuple[str, _Energy, list[_Energy]]] = {
        name: (kind, _Energy(), [_Energy() for _ in ins]) for name, kind, _, _, ins in pairs
    }
    f_names = [o.name for o in fsess.get_outputs()]
    q_names = [o.name for o in qsess.get_outputs()]

    def values(names: list[str], got: list[Any], feeds: dict[str, Any]) -> dict[str, Any]:
        return {**feeds, **{n[: -len(postfix)] if n.endswith(postfix) else n: v for n, v in zip(names, got)}}

    for feeds in batches:
        fvals = values(f_names, fsess.run(f_names, feeds), feeds)
        qvals = values(q_names, qsess.run(q_names, feeds), feeds)
        for name, _, fo, qo, ins in pairs:
            _, out, in_stats = stats[name]
            if fo in fvals and qo in qvals:
                out.add(fvals[fo], qvals[qo])
            for e, (fi, qi) in zip(in_stats, ins):
                if fi in fvals and qi in qvals:
                    e.add(fvals[fi], qvals[qi])
    return _rows(stats)


# --------------------------------------------------------------------------- mixed precision


def mixed_precision(
    info: QuantizationInfo,
    quantized: Path,
    layers: Callable[[Path], list[LayerSensitivity]],
    requantize: Callable[[list[str]], Path],
    agreement: Callable[[Path], float],
    options: Any,
) -> QuantizationInfo:
    """Rank the layers of ``quantized``; with ``--keep-float`` re-quantize with the top ones in float (``auto``: until
    the outputs agree with float to the build's min cosine), the final model replacing ``quantized``. Returns the
    quantization record (``sensitivity``, ``kept_float``)."""
    from edgepack import registry

    from . import parse_keep_float

    keep_float = options.convert.keep_float
    threshold = options.check.min_cosine
    if threshold is None:
        threshold = registry.min_cosine(options.convert.quantize)
    rows = layers(quantized)
    want = parse_keep_float(keep_float) if keep_float is not None else None
    names = [r.name for r in rows]
    keep: list[str] = []
    path = quantized
    if isinstance(want, int):
        keep = names[:want]
        if keep:
            path = requantize(keep)
    elif want == "auto":
        cos = agreement(path)
        while cos < threshold and len(keep) < len(names):
            keep = names[: len(keep) + 1]
            path = requantize(keep)
            cos = agreement(path)
    kept = set(keep)
    ranked = [r.model_copy(update={"kept_float": r.name in kept}) for r in rows]
    update: dict[str, Any] = {"sensitivity": ranked}
    if keep_float is not None:
        update["kept_float"] = keep
        update["method"] = f"{info.method}; {len(keep)} layer(s) kept in float (--keep-float {keep_float})"
    if path != quantized:
        path.replace(quantized)
    return info.model_copy(update=update)


def min_cosine(reference: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> float:
    """Lowest cosine, over the outputs, of ``outputs`` against ``reference`` (per-sample dicts, same names)."""
    from edgepack.device_runners.runner_common import compare

    return min(
        float(
            compare(
                np.concatenate([np.asarray(r[n], np.float64).ravel() for r in reference]),
                np.concatenate([np.asarray(o[n], np.float64).ravel() for o in outputs]),
            )["cosine"]
        )
        for n in reference[0]
    )
