"""edgepack device runner for ExecuTorch bundles (``model.pte``).

Usage on a device:  python3 executorch_runner.py BUNDLE.edgepack [--runs N] [--warmup K] [--threads T]
Needs numpy and the executorch wheel next to the standard library. The wheel's runtime links libtorch, so torch
must be there too; nothing else of executorch's (the export stack, torchao, pandas, ...) is imported: the runner
loads the runtime's pybindings module (what ``executorch.runtime`` wraps) after torch, which takes no time of its
own, where ``import executorch.runtime`` imports the whole export stack (measured +5 s of CPU here). So
``pip install numpy torch && pip install --no-deps executorch`` is a complete device install.

``placement`` in the result says where the program's ops run: the XNNPACK delegate's nodes (read from each
delegate blob, counted per XNNPACK node type: ``XNNConv2d``, ``XNNFullyConnected``, ...) and the kernel calls
left to ExecuTorch's portable/optimized kernels (counted per operator: ``aten::gelu.out``, ...). Both are read
from the ``.pte`` itself (its flatbuffer and the XNNPACK payloads) with the small reader below, so what is
reported is what this file runs. ``--threads`` sizes ExecuTorch's thread pool (XNNPACK runs on it).
"""

import argparse
import os
import re
import struct
import sys
from typing import Any, Mapping, Optional, Sequence

try:  # imported as edgepack.device_runners.executorch_runner
    from . import runner_common as common
except ImportError:  # run as a script on the device (also under python -I / -P)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import runner_common as common  # type: ignore[no-redef]

XNNPACK_BACKEND = "XnnpackBackend"
# executorch/runtime/core/error.h: the codes a failed load reports as "error: 0x:NN"
ERRORS = {
    0x01: "Internal",
    0x02: "InvalidState",
    0x10: "NotSupported",
    0x11: "NotImplemented",
    0x12: "InvalidArgument",
    0x13: "InvalidType",
    0x14: "OperatorMissing",
    0x20: "NotFound",
    0x21: "MemoryAllocationFailed",
    0x22: "AccessFailed",
    0x23: "InvalidProgram",
    0x24: "InvalidExternalData",
    0x25: "OutOfResources",
    0x30: "DelegateInvalidCompatibility",
    0x31: "DelegateMemoryAllocationFailed",
    0x32: "DelegateInvalidHandle",
}
INSTALL = "pip install numpy torch executorch (or run edgepack bench with --install-runtime)"
# the runtime's pybindings: the module executorch.runtime wraps (1.4: _portable_lib, 1.5: _C), then the public
# legacy module that re-exports them (it imports executorch's export stack first)
PYBINDINGS = (
    "executorch.extension.pybindings._portable_lib",
    "executorch.extension.pybindings._C",
    "executorch.extension.pybindings.portable_lib",
)


# --------------------------------------------------------------------------- a minimal flatbuffer reader


class _Table(object):
    """One flatbuffer table: field ``i`` of the schema (in declaration order; a union takes two slots, its type
    then its value) read through the table's vtable."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, self.vt)[0]

    def _field(self, i: int) -> int:
        slot = 4 + 2 * i
        if slot >= self.vt_len:
            return 0
        off = struct.unpack_from("<H", self.buf, self.vt + slot)[0]
        return self.pos + off if off else 0

    def scalar(self, i: int, fmt: str, default: int = 0) -> int:
        at = self._field(i)
        return int(struct.unpack_from("<" + fmt, self.buf, at)[0]) if at else default

    def _ref(self, i: int) -> int:
        at = self._field(i)
        return at + struct.unpack_from("<I", self.buf, at)[0] if at else 0

    def table(self, i: int) -> "Optional[_Table]":
        at = self._ref(i)
        return _Table(self.buf, at) if at else None

    def string(self, i: int) -> str:
        at = self._ref(i)
        if not at:
            return ""
        n = struct.unpack_from("<I", self.buf, at)[0]
        return self.buf[at + 4 : at + 4 + n].decode("utf-8", "replace")

    def tables(self, i: int) -> "list[_Table]":
        at = self._ref(i)
        if not at:
            return []
        n = struct.unpack_from("<I", self.buf, at)[0]
        out = []
        for k in range(n):
            e = at + 4 + 4 * k
            out.append(_Table(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]))
        return out

    def bytes_vector(self, i: int) -> bytes:
        at = self._ref(i)
        if not at:
            return b""
        n = struct.unpack_from("<I", self.buf, at)[0]
        return self.buf[at + 4 : at + 4 + n]


def _root(buf: bytes, identifier: bytes) -> _Table:
    if len(buf) < 8 or buf[4:8] != identifier:
        raise ValueError("file identifier %r, expected %r" % (bytes(buf[4:8]), identifier))
    return _Table(buf, struct.unpack_from("<I", buf, 0)[0])


# Program schema (executorch/schema/program.fbs) field numbers
_PROGRAM_PLANS, _PROGRAM_INLINE_DELEGATES, _PROGRAM_SEGMENTS = 1, 3, 4
_PLAN_CHAINS, _PLAN_OPERATORS, _PLAN_DELEGATES = 5, 6, 7
_CHAIN_INSTRUCTIONS = 2
_INSTRUCTION_TYPE, _INSTRUCTION_ARGS = 0, 1  # union InstructionArguments: KernelCall=1, DelegateCall=2
_KERNEL_CALL, _DELEGATE_CALL = 1, 2
# XNNPACK payload (executorch/backends/xnnpack/serialization/schema.fbs): XNNGraph.xnodes, XNode.xnode_union
_XNNGRAPH_NODES, _XNODE_TYPE = 1, 0


def pte_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be an intact ExecuTorch program (its file identifier, and the size its extended header
    declares), or None."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(40)
    if len(head) < 8 or not head[4:8].startswith(b"ET"):
        return "not an ExecuTorch program (file identifier %r, expected ET..)" % bytes(head[4:8])
    if head[8:12] == b"eh00" and len(head) >= 40:
        length, program_size, base, data_size = struct.unpack_from("<IQQQ", head, 12)
        expected = max(program_size, base + (data_size if length >= 32 else 0))
        if size < expected:
            return "truncated: %d bytes, its header says %d" % (size, expected)
    return None


def load_error(e: BaseException) -> str:
    """The runtime's load error with its code named (``Failed to load program, error: 0x:23`` -> InvalidProgram)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    m = re.search(r"0x:?([0-9a-fA-F]+)", text)
    if m and int(m.group(1), 16) in ERRORS:
        text += " (%s)" % ERRORS[int(m.group(1), 16)]
    return text


def xnnpack_node_names() -> dict[int, str]:
    """XNNPACK node type number -> name, from the ``union XNodeUnion`` of the schema installed with executorch
    (found without importing it). Empty when the schema is not there: nodes are then named by number."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("executorch")
    except (ImportError, ValueError):
        return {}
    for base in list(getattr(spec, "submodule_search_locations", None) or []):
        path = os.path.join(base, "backends", "xnnpack", "serialization", "schema.fbs")
        if os.path.isfile(path):
            with open(path) as f:
                text = re.sub(r"//[^\n]*", "", f.read())
            m = re.search(r"union\s+XNodeUnion\s*\{([^}]*)\}", text)
            if m:
                names = [item.split(":")[0].strip() for item in m.group(1).split(",") if item.strip()]
                return dict((i + 1, n) for i, n in enumerate(names))
    return {}


def _xnnpack_nodes(blob: bytes, names: Mapping[int, str]) -> list[str]:
    """The node types in one XNNPACK delegate payload (``XH00`` header, then the ``XN01`` flatbuffer)."""
    if blob[4:8] == b"XH00":
        fb_offset, fb_size = struct.unpack_from("<II", blob, 10)
        blob = blob[fb_offset : fb_offset + fb_size]
    graph = _root(blob, b"XN01")
    return [
        names.get(t, "xnnpack node type %d" % t)
        for t in (n.scalar(_XNODE_TYPE, "B") for n in graph.tables(_XNNGRAPH_NODES))
    ]


def pte_placement(path: str) -> dict[str, Any]:
    """Placement per op type of a ``.pte``'s forward plan: XNNPACK delegate nodes vs portable kernel calls."""
    with open(path, "rb") as f:
        buf = f.read()
    if not buf[4:8].startswith(b"ET"):
        raise ValueError("file identifier %r, expected ET.." % bytes(buf[4:8]))
    program = _root(buf, buf[4:8])
    base = 0
    if buf[8:12] == b"eh00":  # extended header: where the segments start
        base = struct.unpack_from("<Q", buf, 8 + 16)[0]
    segments = [(s.scalar(0, "Q"), s.scalar(1, "Q")) for s in program.tables(_PROGRAM_SEGMENTS)]
    inline = program.tables(_PROGRAM_INLINE_DELEGATES)
    names = xnnpack_node_names()
    plans = program.tables(_PROGRAM_PLANS)
    plan = next((p for p in plans if p.string(0) == "forward"), plans[0] if plans else None)
    per: dict[str, dict[str, Any]] = {}
    partitions = 0
    other_delegates: list[str] = []

    def count(op: str, where: str, reason: str = "") -> None:
        row = per.setdefault(op, {"op_type": op, "accelerator": 0, "cpu": 0, "reasons": []})
        row[where] += 1
        if reason and reason not in row["reasons"]:
            row["reasons"].append(reason)

    if plan is not None:
        operators = [o.string(0) + ("." + o.string(1) if o.string(1) else "") for o in plan.tables(_PLAN_OPERATORS)]
        delegates = plan.tables(_PLAN_DELEGATES)
        for chain in plan.tables(_PLAN_CHAINS):
            for ins in chain.tables(_CHAIN_INSTRUCTIONS):
                kind, args = ins.scalar(_INSTRUCTION_TYPE, "B"), ins.table(_INSTRUCTION_ARGS)
                if args is None:
                    continue
                if kind == _KERNEL_CALL:
                    op = operators[args.scalar(0, "i")]
                    count(op, "cpu", "portable kernel: not delegated to XNNPACK (op or dtype unsupported there)")
                elif kind == _DELEGATE_CALL:
                    d = delegates[args.scalar(0, "i")]
                    ident = d.string(0)
                    ref = d.table(1)
                    if ident != XNNPACK_BACKEND or ref is None:
                        other_delegates.append(ident)
                        count("delegate:" + ident, "accelerator")
                        continue
                    partitions += 1
                    location, index = ref.scalar(0, "b"), ref.scalar(1, "I")
                    if location == 1:  # SEGMENT
                        offset, size = segments[index]
                        blob = buf[base + offset : base + offset + size]
                    else:  # INLINE
                        blob = inline[index].bytes_vector(0)
                    for node in _xnnpack_nodes(blob, names):
                        count(node, "accelerator")
    ops = [per[k] for k in sorted(per)]
    notes = []
    if partitions == 0:
        notes.append("XNNPACK took no ops: every op runs on the portable kernels")
    if other_delegates:
        notes.append("other delegates: %s" % ", ".join(sorted(set(other_delegates))))
    if not names:
        notes.append("XNNPACK node types by number: executorch's schema.fbs was not found")
    return {
        "accelerator": "XNNPACK",
        "source": "executorch-pte",
        "accelerator_ops": sum(o["accelerator"] for o in ops),
        "cpu_ops": sum(o["cpu"] for o in ops),
        "partitions": partitions,
        "ops": ops,
        "notes": notes,
    }


# --------------------------------------------------------------------------- the backend


def _release(version: str) -> Optional[tuple[int, ...]]:
    """``1.4.1`` / ``1.5.0a0+cpu`` -> (1, 4, 1) / (1, 5, 0); None when it does not start with a number."""
    m = re.match(r"(\d+(?:\.\d+)*)", version or "")
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def version_skew(runtime: str, exporter: str) -> Optional[str]:
    """The warning for a runtime older than the executorch that exported the program, or None. ExecuTorch's
    compatibility policy (runtime/COMPATIBILITY.md) promises only the other direction: a newer runtime loads
    programs of older releases; an older runtime may or may not load a newer program."""
    have, built = _release(runtime), _release(exporter)
    if have is None or built is None or have[:2] >= built[:2]:
        return None
    return (
        "runtime older than the exporter: the program was exported by executorch %s and ran on executorch %s; "
        "ExecuTorch guarantees only that newer runtimes load older programs, so check validation and accuracy "
        "(or install executorch>=%s on the device)" % (exporter, runtime, ".".join(map(str, built[:2])))
    )


def exporter_version(manifest: Mapping[str, Any]) -> str:
    """The executorch release that exported the bundle's program (``manifest.tools``), or ''."""
    return str((manifest.get("tools") or {}).get("executorch", ""))


def _dist_version(dist: str) -> str:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # no metadata: not fatal
        return "unknown"


class ExecuTorchBackend(common.Backend):
    runtime = "executorch"

    def __init__(self) -> None:
        self.torch: Any = None
        self.lib: Any = None
        self.lib_name = ""
        self.method: Any = None
        self.model_path = ""
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    def check(self) -> None:
        common.Backend.check(self)
        common.require("torch", "the executorch runtime links libtorch: " + INSTALL)
        import importlib
        import warnings

        import torch  # first: it loads the libtorch the pybindings link against

        errors = []
        for name in PYBINDINGS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "This API is experimental"
                try:
                    self.lib, self.lib_name = importlib.import_module(name), name
                    break
                except ImportError as e:
                    errors.append(str(e))
        if self.lib is None:
            raise common.RunnerError(
                "executorch is not installed for %s (%s)" % (sys.executable, errors[-1]),
                INSTALL,
                common.EXIT_RUNTIME_MISSING,
            )
        self.torch = torch

    def version(self) -> str:
        return _dist_version("executorch")

    def load(self, model_path: str, manifest: Mapping[str, Any], settings: argparse.Namespace) -> None:
        problem = pte_problem(model_path)
        if problem:
            raise common.RunnerError(
                "%s is %s" % (os.path.basename(model_path), problem),
                "rebuild the bundle with edgepack build --to executorch",
                common.EXIT_BUNDLE_INVALID,
            )
        lib = self.lib
        if settings.threads:
            lib._unsafe_reset_threadpool(int(settings.threads))
        try:
            program = lib._load_program(
                model_path,
                enable_etdump=False,
                debug_buffer_size=0,
                program_verification=lib.Verification.InternalConsistency,
            )
            method = program.load_method("forward")
        except Exception as e:  # the pybindings raise RuntimeError with an error code
            exporter = exporter_version(manifest)
            skew = version_skew(self.version(), exporter)
            raise common.RunnerError(
                "the ExecuTorch runtime could not load the program: %s%s"
                % (
                    load_error(e),
                    " (the device's executorch %s is older than the exporter's %s)" % (self.version(), exporter)
                    if skew
                    else "",
                ),
                "install executorch>=%s on the device (the bundle's exporter), or rebuild with the device's release"
                % exporter
                if skew
                else "check that the device's executorch (%s) has the program's delegates (it has: %s)"
                % (self.version(), ", ".join(lib._get_registered_backend_names()) or "none"),
            )
        meta = method.method_meta()
        self.inputs = [s["name"] for s in manifest["inputs"]]
        self.outputs = [s["name"] for s in manifest["outputs"]]
        if meta.num_inputs() != len(self.inputs) or meta.num_outputs() != len(self.outputs):
            raise common.RunnerError(
                "the program takes %d input(s) and returns %d output(s); the manifest lists %d and %d"
                % (meta.num_inputs(), meta.num_outputs(), len(self.inputs), len(self.outputs)),
                "rebuild the bundle",
                common.EXIT_BUNDLE_INVALID,
            )
        self.method, self.model_path = method, model_path

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        torch = self.torch
        got = self.method([torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.inputs])
        return dict((n, t.numpy() if hasattr(t, "numpy") else np.asarray(t)) for n, t in zip(self.outputs, got))

    def warnings(self, manifest: Mapping[str, Any]) -> list[str]:
        skew = version_skew(self.version(), exporter_version(manifest))
        return [skew] if skew else []

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "api": self.lib_name,
            "backends": list(self.lib._get_registered_backend_names()),
            "torch": str(self.torch.__version__),
        }
        try:
            details["threads"] = int(self.lib._threadpool_get_thread_count())
        except AttributeError:
            pass
        return details

    def analyze(self, feeds: Mapping[str, Any]) -> common.Analysis:
        try:
            return {"placement": pte_placement(self.model_path)}
        except (ValueError, IndexError, struct.error) as e:  # a program this reader does not understand
            return {
                "placement": {
                    "accelerator": "XNNPACK",
                    "source": "executorch-pte",
                    "accelerator_ops": 0,
                    "cpu_ops": 0,
                    "partitions": None,
                    "ops": [],
                    "notes": ["the program's ops could not be read: %s" % e],
                }
            }


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main(ExecuTorchBackend(), argv)


if __name__ == "__main__":
    sys.exit(main())
