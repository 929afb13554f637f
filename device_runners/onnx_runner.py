"""edgepack device runner for ONNX bundles (onnxruntime).

Usage on a device:  python3 onnx_runner.py BUNDLE.edgepack [--runs N] [--warmup K] [--threads T]
                    [--ep NAME[,NAME]]... [--profile] [--profile-runs N]
Needs only numpy and onnxruntime next to the standard library.

``--ep`` asks for execution providers (short names: xnnpack, nnapi, qnn, acl, armnn, coreml, openvino, dml, cuda,
tensorrt, rocm, migraphx, vitisai, cpu, or the full ...ExecutionProvider name); CPU stays last as onnxruntime's
fallback for nodes the EP does not take. An EP this onnxruntime build does not offer is an error naming the ones
it does, never a silent CPU run. With ``--ep`` or ``--profile`` a second, profiling session runs
``--profile-runs`` extra inferences after the timed ones (so profiling does not touch the latency figures); its
trace gives the provider of every node (``placement``) and per-node times (``op_timing``).
"""

import argparse
import os
import sys
from typing import Any, Mapping, Optional, Sequence

try:  # imported as edgepack.device_runners.onnx_runner
    from . import runner_common as common
except ImportError:  # run as a script on the device (also under python -I / -P)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import runner_common as common  # type: ignore[no-redef]


EP_NAMES = {
    "cpu": "CPUExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}
TOP_NODES = 25


def resolve_eps(values: Optional[Sequence[str]]) -> list[str]:
    """--ep values (repeatable, comma lists, short or full names) -> full provider names, in order."""
    out: list[str] = []
    for value in values or []:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            name = EP_NAMES.get(item.lower())
            if name is None:
                full = dict((v.lower(), v) for v in EP_NAMES.values())
                name = full.get(item.lower(), full.get(item.lower() + "executionprovider", item))
            if name not in out:
                out.append(name)
    return out


def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def parse_profile(
    events: Sequence[Mapping[str, Any]], top: int = TOP_NODES
) -> tuple[dict[str, tuple[str, Optional[str]]], dict[str, Any]]:
    """onnxruntime's profiling trace (a list of Chrome-trace events) -> (nodes, timing).

    nodes: {node name: (op type, provider)}; timing: per-node median ms over the runs after the first (warm-up)."""
    runs: list[list[tuple[str, str, Optional[str], float]]] = []
    current: list[tuple[str, str, Optional[str], float]] = []
    run_ms: list[float] = []
    for e in events:
        cat, name = e.get("cat"), e.get("name", "")
        if cat == "Node" and name.endswith("_kernel_time"):
            args = e.get("args") or {}
            current.append(
                (
                    name[: -len("_kernel_time")],
                    args.get("op_name", "?"),
                    args.get("provider"),
                    float(e.get("dur", 0)) / 1000.0,
                )
            )
        elif cat == "Session" and name == "model_run":
            runs.append(current)
            run_ms.append(float(e.get("dur", 0)) / 1000.0)
            current = []
    if current:
        runs.append(current)
    if len(runs) > 1:  # the first profiled run pays one-off costs
        runs, run_ms = runs[1:], run_ms[1:]
    nodes: dict[str, tuple[str, Optional[str]]] = {}
    times: dict[str, list[float]] = {}
    for run in runs:
        for node, op, provider, ms in run:
            nodes[node] = (op, provider)
            times.setdefault(node, []).append(ms)
    median = dict((k, _median(v)) for k, v in times.items())  # median: robust to a preempted run
    node_total = sum(median.values())
    ranked = sorted(median.items(), key=lambda kv: -kv[1])
    by_type: dict[str, float] = {}
    for node, ms in median.items():
        by_type[nodes[node][0]] = by_type.get(nodes[node][0], 0.0) + ms
    timing: dict[str, Any] = {
        "source": "onnxruntime-profile",
        "profiled_runs": len(runs),
        "node_total_ms": node_total,
        "profiled_run_ms": _median(run_ms) if run_ms else None,
        "top": [
            {
                "name": node,
                "op_type": nodes[node][0],
                "provider": nodes[node][1],
                "ms": ms,
                "share": (ms / node_total) if node_total > 0 else 0.0,
            }
            for node, ms in ranked[:top]
        ],
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
    }
    return nodes, timing


def placement_from_nodes(nodes: Mapping[str, tuple[str, Optional[str]]], requested: Sequence[str]) -> dict[str, Any]:
    """Per op type: nodes on a requested (non-CPU) EP vs on the CPU EP."""
    accel = [ep for ep in requested if ep != "CPUExecutionProvider"]
    per: dict[str, dict[str, Any]] = {}
    for op, provider in nodes.values():
        row = per.setdefault(op, {"op_type": op, "accelerator": 0, "cpu": 0, "reasons": []})
        if provider and provider != "CPUExecutionProvider" and (provider in accel or not accel):
            row["accelerator"] += 1
        else:
            row["cpu"] += 1
            if accel:
                reason = "assigned to %s (not claimed by %s)" % (provider, ", ".join(accel))
                if reason not in row["reasons"]:
                    row["reasons"].append(reason)
    ops = [per[k] for k in sorted(per)]
    placement: dict[str, Any] = {
        "accelerator": ", ".join(accel) if accel else None,
        "source": "onnxruntime-profile",
        "accelerator_ops": sum(o["accelerator"] for o in ops),
        "cpu_ops": sum(o["cpu"] for o in ops),
        "partitions": None,
        "ops": ops,
        "notes": [],
    }
    if accel and placement["accelerator_ops"] == 0:
        placement["notes"].append("%s took no nodes: every node ran on CPUExecutionProvider" % ", ".join(accel))
    return placement


class OnnxRuntimeBackend(common.Backend):
    runtime = "onnxruntime"

    def __init__(self) -> None:
        self.session: Any = None
        self.model_path = ""
        self.settings = argparse.Namespace()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--ep",
            action="append",
            default=[],
            metavar="NAME[,NAME]",
            help="execution provider(s) to request, e.g. xnnpack, nnapi, qnn, acl, coreml, "
            "openvino (CPU stays as the fallback); repeatable",
        )
        parser.add_argument(
            "--profile",
            action="store_true",
            help="per-op timing from a separate profiled session (after the timed runs)",
        )
        parser.add_argument(
            "--profile-runs",
            type=int,
            default=10,
            help="profiled inferences for placement/per-op timing (default 10, +1 warm-up)",
        )

    def check(self) -> None:
        common.Backend.check(self)
        common.require("onnxruntime", "pip install onnxruntime (or run edgepack bench with --install-runtime)")

    def providers(self, settings: argparse.Namespace) -> tuple[list[str], list[str]]:
        """The requested EPs (checked against this build), then CPU as the fallback."""
        import onnxruntime as ort

        requested = resolve_eps(getattr(settings, "ep", None))
        available = ort.get_available_providers()
        missing = [ep for ep in requested if ep not in available]
        if missing:
            raise common.RunnerError(
                "execution provider %s is not available in this onnxruntime %s build (available: %s)"
                % (", ".join(missing), ort.__version__, ", ".join(available)),
                "install an onnxruntime build that has it (e.g. onnxruntime-qnn, onnxruntime-openvino, "
                "onnxruntime-directml, onnxruntime-gpu) or drop --ep; edgepack does not fall back to the CPU silently",
                common.EXIT_USAGE,
            )
        return requested, [ep for ep in requested if ep != "CPUExecutionProvider"] + ["CPUExecutionProvider"]

    def session_options(self, settings: argparse.Namespace) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if settings.threads:
            so.intra_op_num_threads = settings.threads
        so.log_severity_level = 3
        return so

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def load(self, model_path: str, manifest: Mapping[str, Any], settings: argparse.Namespace) -> None:
        import onnxruntime as ort

        requested, providers = self.providers(settings)
        try:
            session = ort.InferenceSession(model_path, sess_options=self.session_options(settings), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            also = " and that %s works on this device" % ", ".join(requested) if requested else ""
            raise common.RunnerError(
                "onnxruntime could not load the model: %s" % str(e).splitlines()[0],
                "check that the device's onnxruntime supports the model's opset" + also,
            )
        failed = [ep for ep in requested if ep not in session.get_providers()]
        if failed:  # onnxruntime drops an EP that fails to initialise with only a log line
            raise common.RunnerError(
                "execution provider %s failed to initialise (session has: %s)"
                % (", ".join(failed), ", ".join(session.get_providers())),
                "check the EP's driver/SDK on the device; edgepack does not fall back to the CPU silently",
            )
        self.session, self.model_path, self.settings = session, model_path, settings

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, dict(feeds))))

    def details(self) -> dict[str, Any]:
        return {"providers": self.session.get_providers()}

    def analyze(self, feeds: Mapping[str, Any]) -> common.Analysis:
        """With --ep or --profile: a separate profiled session -> placement per op type and per-op timing."""
        settings = self.settings
        if not (settings.ep or settings.profile):
            return {}
        import json
        import shutil
        import tempfile

        import onnxruntime as ort

        requested, providers = self.providers(settings)
        so = self.session_options(settings)
        so.enable_profiling = True
        # named like the extraction dirs, so the next run sweeps it if this one is killed (SIGKILL, power loss)
        tmp = tempfile.mkdtemp(prefix="edgepack-run-%d-profile-" % os.getpid(), dir=settings.workdir or None)
        try:
            so.profile_file_prefix = tmp + "/ort"
            prof = ort.InferenceSession(self.model_path, sess_options=so, providers=providers)
            names = [o.name for o in prof.get_outputs()]
            for _ in range(max(settings.profile_runs, 1) + 1):
                prof.run(names, dict(feeds))
            trace = prof.end_profiling()
            with open(trace) as f:
                events = json.load(f)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        nodes, timing = parse_profile(events)
        return {"placement": placement_from_nodes(nodes, requested), "op_timing": timing}


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main(OnnxRuntimeBackend(), argv)


if __name__ == "__main__":
    sys.exit(main())
