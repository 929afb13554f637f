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

import os
import sys

try:  # imported as edgepack.device_runners.onnx_runner
    from . import runner_common as common
except ImportError:  # run as a script on the device (also under python -I / -P)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import runner_common as common


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


def resolve_eps(values):
    """--ep values (repeatable, comma lists, short or full names) -> full provider names, in order."""
    out = []
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


def _median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def parse_profile(events, top=TOP_NODES):
    """onnxruntime's profiling trace (a list of Chrome-trace events) -> (nodes, timing).

    nodes: {node name: (op type, provider)}; timing: per-node median ms over the runs after the first (warm-up)."""
    runs, current = [], []
    run_ms = []
    for e in events:
        cat, name = e.get("cat"), e.get("name", "")
        if cat == "Node" and name.endswith("_kernel_time"):
            args = e.get("args") or {}
            current.append((name[:-len("_kernel_time")], args.get("op_name", "?"), args.get("provider"),
                            float(e.get("dur", 0)) / 1000.0))
        elif cat == "Session" and name == "model_run":
            runs.append(current)
            run_ms.append(float(e.get("dur", 0)) / 1000.0)
            current = []
    if current:
        runs.append(current)
    if len(runs) > 1:  # the first profiled run pays one-off costs
        runs, run_ms = runs[1:], run_ms[1:]
    nodes, times = {}, {}
    for run in runs:
        for node, op, provider, ms in run:
            nodes[node] = (op, provider)
            times.setdefault(node, []).append(ms)
    median = dict((k, _median(v)) for k, v in times.items())  # median: robust to a preempted run
    node_total = sum(median.values())
    ranked = sorted(median.items(), key=lambda kv: -kv[1])
    by_type = {}
    for node, ms in median.items():
        by_type[nodes[node][0]] = by_type.get(nodes[node][0], 0.0) + ms
    timing = {
        "source": "onnxruntime-profile",
        "profiled_runs": len(runs),
        "node_total_ms": node_total,
        "profiled_run_ms": _median(run_ms) if run_ms else None,
        "top": [{"name": node, "op_type": nodes[node][0], "provider": nodes[node][1], "ms": ms,
                 "share": (ms / node_total) if node_total > 0 else 0.0} for node, ms in ranked[:top]],
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
    }
    return nodes, timing


def placement_from_nodes(nodes, requested):
    """Per op type: nodes on a requested (non-CPU) EP vs on the CPU EP."""
    accel = [ep for ep in requested if ep != "CPUExecutionProvider"]
    per = {}
    for node, (op, provider) in nodes.items():
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
    placement = {
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


class OnnxRuntimeBackend(object):
    runtime = "onnxruntime"

    def add_arguments(self, parser):
        parser.add_argument("--ep", action="append", default=[], metavar="NAME[,NAME]",
                            help="execution provider(s) to request, e.g. xnnpack, nnapi, qnn, acl, coreml, "
                                 "openvino (CPU stays as the fallback); repeatable")
        parser.add_argument("--profile", action="store_true",
                            help="per-op timing from a separate profiled session (after the timed runs)")
        parser.add_argument("--profile-runs", type=int, default=10,
                            help="profiled inferences for placement/per-op timing (default 10, +1 warm-up)")

    def check(self):
        try:
            import numpy  # noqa: F401
        except ImportError:
            raise common.RunnerError("numpy is not installed for %s" % sys.executable,
                                     "pip install numpy", common.EXIT_RUNTIME_MISSING)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise common.RunnerError("onnxruntime is not installed for %s" % sys.executable,
                                     "pip install onnxruntime (or run edgepack bench with --install-runtime)",
                                     common.EXIT_RUNTIME_MISSING)

    def providers(self, args):
        """The requested EPs (checked against this build), then CPU as the fallback."""
        import onnxruntime as ort

        requested = resolve_eps(getattr(args, "ep", None))
        available = ort.get_available_providers()
        missing = [ep for ep in requested if ep not in available]
        if missing:
            raise common.RunnerError(
                "execution provider %s is not available in this onnxruntime %s build (available: %s)"
                % (", ".join(missing), ort.__version__, ", ".join(available)),
                "install an onnxruntime build that has it (e.g. onnxruntime-qnn, onnxruntime-openvino, "
                "onnxruntime-directml, onnxruntime-gpu) or drop --ep; edgepack does not fall back to the CPU silently",
                common.EXIT_USAGE)
        return requested, [ep for ep in requested if ep != "CPUExecutionProvider"] + ["CPUExecutionProvider"]

    def session_options(self, args):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if args.threads:
            so.intra_op_num_threads = args.threads
        so.log_severity_level = 3
        return so

    def version(self):
        import onnxruntime

        return onnxruntime.__version__

    def load(self, model_path, manifest, args):
        import onnxruntime as ort

        requested, providers = self.providers(args)
        try:
            session = ort.InferenceSession(model_path, sess_options=self.session_options(args), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise common.RunnerError("onnxruntime could not load the model: %s" % str(e).splitlines()[0],
                                     "check that the device's onnxruntime supports the model's opset"
                                     + (" and that %s works on this device" % ", ".join(requested) if requested else ""))
        failed = [ep for ep in requested if ep not in session.get_providers()]
        if failed:  # onnxruntime drops an EP that fails to initialise with only a log line
            raise common.RunnerError("execution provider %s failed to initialise (session has: %s)"
                                     % (", ".join(failed), ", ".join(session.get_providers())),
                                     "check the EP's driver/SDK on the device; edgepack does not fall back to the "
                                     "CPU silently")
        return session

    def predict(self, session, feeds):
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def details(self, session):
        return {"providers": session.get_providers()}

    def analyze(self, session, model_path, feeds, args):
        """With --ep or --profile: a separate profiled session -> placement per op type and per-op timing."""
        if not (args.ep or args.profile):
            return {}
        import json
        import shutil
        import tempfile

        import onnxruntime as ort

        requested, providers = self.providers(args)
        so = self.session_options(args)
        so.enable_profiling = True
        # named like the extraction dirs, so the next run sweeps it if this one is killed (SIGKILL, power loss)
        tmp = tempfile.mkdtemp(prefix="edgepack-run-%d-profile-" % os.getpid(), dir=args.workdir or None)
        try:
            so.profile_file_prefix = tmp + "/ort"
            prof = ort.InferenceSession(model_path, sess_options=so, providers=providers)
            names = [o.name for o in prof.get_outputs()]
            for _ in range(max(args.profile_runs, 1) + 1):
                prof.run(names, feeds)
            trace = prof.end_profiling()
            with open(trace) as f:
                events = json.load(f)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        nodes, timing = parse_profile(events)
        return {"placement": placement_from_nodes(nodes, requested),
                "op_timing": timing if (args.profile or args.ep) else None}


def main(argv=None):
    return common.main(OnnxRuntimeBackend(), argv)


if __name__ == "__main__":
    sys.exit(main())
