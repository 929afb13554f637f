"""edgepack device runner for TFLite (LiteRT) bundles.

Usage on a device:  python3 tflite_runner.py BUNDLE.edgepack [--runs N] [--threads T]
                    [--delegate /usr/lib/libedgetpu.so.1 [--delegate-option k=v]...] [--no-xnnpack] [--npu-model]
The interpreter comes from ai_edge_litert, else tflite_runtime (armv7l, numpy-1 devices), else
tensorflow.lite; ``device.runtime_version`` and ``runtime_details.interpreter`` say which one ran.

``placement`` in the result says which ops a delegate (XNNPACK, or the ``--delegate`` library) took: every
DELEGATE node stands for the original nodes between its input and output tensors, found by walking back from
its outputs; the original nodes no DELEGATE node covers ran on the CPU kernels.
``--npu-model`` runs the bundle's NPU model (an Ethos-U build's ``model_vela.tflite``, with
``--delegate libethosu_op_delegate.so`` on the board) instead of the int8 model.
"""

import argparse
import os
import sys
from typing import Any, Mapping, Optional, Sequence

try:  # imported as edgepack.device_runners.tflite_runner
    from . import runner_common as common
except ImportError:  # run as a script on the device (also under python -I / -P)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import runner_common as common  # type: ignore[no-redef]

_CANDIDATES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)


def _find_interpreter() -> tuple[Any, Any, Optional[str], Optional[str], str]:
    import importlib

    errors = []
    for module, dist in _CANDIDATES:
        try:
            mod = importlib.import_module(module)
            if module == "tensorflow.lite":
                return mod.Interpreter, mod.experimental.load_delegate, module, dist, _dist_version(dist)
            return mod.Interpreter, mod.load_delegate, module, dist, _dist_version(dist)
        except ImportError as e:
            errors.append("%s: %s" % (module, e))
    return None, None, None, None, "; ".join(errors)


def _dist_version(dist: str) -> str:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # Python < 3.8 or no metadata: not fatal
        return "unknown"


class LiteRTBackend(common.Backend):
    runtime = "litert"

    def __init__(self) -> None:
        self.Interpreter: Any = None
        self.load_delegate: Any = None
        self.module: Optional[str] = None
        self.dist: Optional[str] = None
        self._version = "unknown"
        self.interp: Any = None
        self.delegate: Optional[str] = None  # the --delegate library loaded, if any
        self.settings = argparse.Namespace()
        self.inputs: dict[str, int] = {}  # manifest input name -> tensor index
        self.outputs: list[tuple[str, int]] = []  # manifest output name, tensor index (manifest order)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--delegate", default=None, help="external delegate library (e.g. libedgetpu.so.1, libarmnnDelegate.so)"
        )
        parser.add_argument(
            "--delegate-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="option passed to the external delegate; repeatable",
        )
        parser.add_argument(
            "--no-xnnpack",
            action="store_true",
            help="run the reference CPU kernels instead of the default XNNPACK delegate",
        )
        parser.add_argument(
            "--npu-model",
            action="store_true",
            help="run the bundle's NPU model (manifest npu.model, e.g. vela's ethos-u model)",
        )

    def model_member(self, manifest: Mapping[str, Any], settings: argparse.Namespace) -> str:
        if not getattr(settings, "npu_model", False):
            return str(manifest["model"]["member"])
        npu = manifest.get("npu")
        if not npu:
            raise common.RunnerError(
                "--npu-model: this bundle has no NPU model",
                "build it with edgepack build ... --npu ethos-u55-128",
                common.EXIT_USAGE,
            )
        return str(npu["model"]["member"])

    def check(self) -> None:
        common.Backend.check(self)
        found = _find_interpreter()
        if found[0] is None:
            raise common.RunnerError(
                "no TFLite interpreter is installed for %s (tried ai_edge_litert, tflite_runtime, tensorflow)"
                % sys.executable,
                "pip install ai-edge-litert (armv7l or numpy<2: pip install tflite-runtime), "
                "or run edgepack bench with --install-runtime",
                common.EXIT_RUNTIME_MISSING,
            )
        self.Interpreter, self.load_delegate, self.module, self.dist, self._version = found

    def version(self) -> str:
        return self._version

    def load(self, model_path: str, manifest: Mapping[str, Any], settings: argparse.Namespace) -> None:
        args = settings
        delegates = []
        if args.delegate:
            options = {}
            for item in args.delegate_option:
                key, sep, value = item.partition("=")
                if not sep:
                    raise common.RunnerError(
                        "bad --delegate-option %r" % item, "write it as KEY=VALUE", common.EXIT_USAGE
                    )
                options[key] = value
            try:
                delegates.append(self.load_delegate(args.delegate, options))
            except (ValueError, OSError, RuntimeError) as e:
                raise common.RunnerError(
                    "delegate %s failed to load: %s" % (args.delegate, e),
                    "check the library path and that its driver/device is present; "
                    "edgepack does not fall back to the CPU silently",
                )
        kwargs = {"model_path": model_path, "experimental_delegates": delegates or None}
        if args.threads:
            kwargs["num_threads"] = args.threads
        if args.no_xnnpack:
            try:
                from ai_edge_litert.interpreter import OpResolverType
            except ImportError:
                OpResolverType = getattr(sys.modules.get(self.module or ""), "OpResolverType", None)
            if OpResolverType is not None:
                kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interp = self.Interpreter(**kwargs)
            interp.allocate_tensors()
        except Exception as e:  # tflite_runtime built for numpy 1 fails here under numpy 2
            import numpy

            hint = "check that the interpreter supports the model's ops"
            if "ethos-u" in str(e):
                hint = (
                    "the NPU model's ethos-u op runs only through the Ethos-U delegate: "
                    "--delegate libethosu_op_delegate.so on an Ethos-U board"
                )
            if self.dist == "tflite-runtime" and numpy.__version__.split(".")[0] != "1":
                hint = (
                    "tflite-runtime is built for numpy 1.x and this device has numpy %s: "
                    "pip install ai-edge-litert, or pip install 'numpy<2'" % numpy.__version__
                )
            raise common.RunnerError(
                "the TFLite interpreter (%s) could not load the model: %s"
                % (self.dist, str(e).splitlines()[0] if str(e) else type(e).__name__),
                hint,
            )
        inputs, outputs = tensor_indices(interp, manifest)
        self.interp, self.delegate, self.settings = interp, args.delegate, settings
        self.inputs, self.outputs = inputs, [(s["name"], outputs[s["name"]]) for s in manifest["outputs"]]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        interp = self.interp
        for name, value in feeds.items():
            interp.set_tensor(self.inputs[name], value)
        interp.invoke()
        return dict((name, interp.get_tensor(index)) for name, index in self.outputs)

    def details(self) -> dict[str, Any]:
        interp = self.interp
        ops = []
        try:
            ops = interp._get_ops_details()
        except Exception:  # private API: absent in some builds
            pass
        counts: dict[str, int] = {}
        delegated_nodes = 0
        for op in ops:
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
            if op["op_name"] == "DELEGATE":
                delegated_nodes += 1

        def quantized(details: list[dict[str, Any]]) -> list[bool]:
            return [bool(d.get("quantization") and d["quantization"][0]) for d in details]

        return {
            "interpreter": self.module,
            "package": self.dist,
            "ops": counts,
            "delegate_nodes": delegated_nodes,
            "xnnpack": delegated_nodes > 0 and not self.delegate,
            "external_delegate": self.delegate,
            "inputs_quantized": quantized(interp.get_input_details()),
            "outputs_quantized": quantized(interp.get_output_details()),
        }

    def analyze(self, feeds: Mapping[str, Any]) -> common.Analysis:
        return {"placement": delegate_placement(self.interp, self.settings)}


def tensor_indices(interp: Any, manifest: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Manifest input/output names -> interpreter tensor indices. A name is the interpreter's tensor name (every
    bundle built before edgepack named TFLite tensors like the source, and routes whose signature lacks the
    source's names), else a key of the model's one signature: Keras/SavedModel bundles carry the source's names
    (``pixels``), which the converter keeps only there (the tensor is ``serving_default_pixels:0``)."""
    found: list[dict[str, int]] = []
    for kind, details in (("inputs", interp.get_input_details()), ("outputs", interp.get_output_details())):
        names = [s["name"] for s in manifest[kind]]
        by_name = dict((d["name"], d["index"]) for d in details)
        if any(n not in by_name for n in names):
            keys: dict[str, int] = {}
            try:
                sigs = interp.get_signature_list()
                if len(sigs) == 1:
                    runner = interp.get_signature_runner(list(sigs)[0])
                    get = runner.get_input_details if kind == "inputs" else runner.get_output_details
                    keys = dict((key, d["index"]) for key, d in get().items())
            except (AttributeError, ValueError, RuntimeError):  # an old tflite_runtime without signatures
                pass
            keys.update(by_name)
            by_name = keys
        missing = [n for n in names if n not in by_name]
        if missing:
            raise common.RunnerError(
                "the model has no %s tensor or signature key %s (tensors: %s)" % (kind[:-1], missing, sorted(by_name)),
                "rebuild the bundle with this edgepack",
                common.EXIT_BUNDLE_INVALID,
            )
        found.append(dict((n, by_name[n]) for n in names))
    return found[0], found[1]


def delegate_placement(interp: Any, args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """Per op type: original nodes a DELEGATE node took vs nodes left on the CPU kernels."""
    try:
        ops = interp._get_ops_details()
    except Exception:  # private API: absent in some builds
        return None
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer: dict[int, int] = {}
    for op in original:
        for t in op["outputs"]:
            producer[int(t)] = op["index"]
    by_index = dict((op["index"], op) for op in original)
    taken: set[int] = set()
    for d in delegates:
        stop = set(int(t) for t in d["inputs"])
        todo = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while todo:
            t = todo.pop()
            if t in seen or t in stop or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            if node in taken:
                continue
            taken.add(node)
            todo.extend(int(x) for x in by_index[node]["inputs"] if int(x) >= 0)
    if args.delegate:
        accelerator = os.path.basename(args.delegate)
    elif delegates:
        accelerator = "XNNPACK"
    else:
        accelerator = None if args.no_xnnpack else "XNNPACK"
    per: dict[str, dict[str, Any]] = {}
    for op in original:
        row = per.setdefault(op["op_name"], {"op_type": op["op_name"], "accelerator": 0, "cpu": 0, "reasons": []})
        if op["index"] in taken:
            row["accelerator"] += 1
        else:
            row["cpu"] += 1
            if accelerator and not row["reasons"]:
                row["reasons"].append("not claimed by %s (op or its types unsupported there)" % accelerator)
    notes: list[str] = []
    if args.delegate and not args.no_xnnpack:
        notes.append(
            "XNNPACK is on as well: DELEGATE nodes of both delegates are counted (--no-xnnpack to see "
            "%s alone)" % accelerator
        )
    if accelerator and not taken:
        notes.append("%s took no ops: every op ran on the CPU kernels" % accelerator)
    ops_out = [per[k] for k in sorted(per)]
    return {
        "accelerator": accelerator,
        "source": "tflite-delegate",
        "accelerator_ops": sum(o["accelerator"] for o in ops_out),
        "cpu_ops": sum(o["cpu"] for o in ops_out),
        "partitions": len(delegates),
        "ops": ops_out,
        "notes": notes,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main(LiteRTBackend(), argv)


if __name__ == "__main__":
    sys.exit(main())
