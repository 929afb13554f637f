"""edgepack device runner for CoreML bundles (a Mac: coremltools' MLModel on CoreML.framework).

Usage on a Mac:  python3 coreml_runner.py BUNDLE.edgepack [--runs N] [--compute-units cpu|gpu|ane|all]
Needs only numpy and coremltools next to the standard library. CoreML prediction exists only on macOS:
anywhere else this runner stops with exit 3 and says so (it never reports a number it did not measure).
``--compute-units`` maps to coremltools.ComputeUnit (cpu = CPU_ONLY, gpu = CPU_AND_GPU, ane = CPU_AND_NE,
all = ALL) and is reported in ``runtime_details``; ``--threads`` has no CoreML equivalent and is ignored.
"""

import os
import platform
import sys

try:  # imported as edgepack.device_runners.coreml_runner
    from . import runner_common as common
except ImportError:  # run as a script on the device (also under python -I / -P)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import runner_common as common

COMPUTE_UNITS = {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "all": "ALL"}


def check_platform(system=None):
    """CoreML prediction needs macOS: a RunnerError (exit 3) anywhere else."""
    system = system or platform.system()
    if system != "Darwin":
        raise common.RunnerError(
            "CoreML prediction needs macOS; this device runs %s (%s), where coremltools can only read the model"
            % (system, platform.machine()),
            "bench CoreML bundles on a Mac: edgepack bench BUNDLE --device user@mac", common.EXIT_RUNTIME_MISSING)


class CoreMLBackend(object):
    runtime = "coreml"

    def add_arguments(self, parser):
        parser.add_argument("--compute-units", choices=sorted(COMPUTE_UNITS), default="all",
                            help="where CoreML may run the model: cpu, gpu (CPU+GPU), ane (CPU+Neural Engine), "
                                 "all (default)")

    def check(self):
        check_platform()
        try:
            import numpy  # noqa: F401
        except ImportError:
            raise common.RunnerError("numpy is not installed for %s" % sys.executable, "pip install numpy",
                                     common.EXIT_RUNTIME_MISSING)
        try:
            import coremltools  # noqa: F401
        except ImportError:
            raise common.RunnerError("coremltools is not installed for %s" % sys.executable,
                                     "pip install coremltools (or run edgepack bench with --install-runtime)",
                                     common.EXIT_RUNTIME_MISSING)

    def version(self):
        import coremltools

        return coremltools.__version__

    def load(self, model_path, manifest, args):
        import coremltools as ct

        units = getattr(ct.ComputeUnit, COMPUTE_UNITS[args.compute_units])
        try:
            model = ct.models.MLModel(model_path, compute_units=units)
        except Exception as e:  # CoreML raises plain Exceptions with the framework's message
            raise common.RunnerError("CoreML could not load the model: %s" % str(e).splitlines()[0],
                                     "check that this macOS is at least the bundle's deployment target (%s)"
                                     % ((manifest.get("validation") or {}).get("checks") or {})
                                     .get("deployment_target", "see edgepack inspect"))
        model._edgepack_units = args.compute_units
        model._edgepack_outputs = [s["name"] for s in manifest["outputs"]]
        return model

    def predict(self, model, feeds):
        res = model.predict(feeds)
        return dict((name, res[name]) for name in model._edgepack_outputs)

    def details(self, model):
        return {"compute_units": model._edgepack_units,
                "coreml_compute_unit": COMPUTE_UNITS[model._edgepack_units],
                "macos": platform.mac_ver()[0] or None}


def main(argv=None):
    return common.main(CoreMLBackend(), argv)


if __name__ == "__main__":
    sys.exit(main())
