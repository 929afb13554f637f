"""edgepack device runner for ONNX bundles (onnxruntime).

Usage on a device:  python3 onnx_runner.py BUNDLE.edgepack [--runs N] [--warmup K] [--threads T]
Needs only numpy and onnxruntime next to the standard library.
"""

import os
import sys

try:  # imported as edgepack.device_runners.onnx_runner
    from . import runner_common as common
except ImportError:  # run as a script on the device (also under python -I / -P)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import runner_common as common


class OnnxRuntimeBackend(object):
    runtime = "onnxruntime"

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

    def version(self):
        import onnxruntime

        return onnxruntime.__version__

    def load(self, model_path, manifest, args):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if args.threads:
            so.intra_op_num_threads = args.threads
        so.log_severity_level = 3
        try:
            return ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise common.RunnerError("onnxruntime could not load the model: %s" % str(e).splitlines()[0],
                                     "check that the device's onnxruntime supports the model's opset")

    def predict(self, session, feeds):
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def details(self, session):
        return {"providers": session.get_providers()}


def main(argv=None):
    return common.main(OnnxRuntimeBackend(), argv)


if __name__ == "__main__":
    sys.exit(main())
