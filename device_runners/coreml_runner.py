"""edgepack device runner for CoreML bundles (a Mac: coremltools' MLModel on CoreML.framework).

Usage on a Mac:  python3 coreml_runner.py BUNDLE.edgepack [--runs N] [--compute-units cpu|gpu|ane|all]
Needs only numpy and coremltools next to the standard library. CoreML prediction exists only on macOS:
anywhere else this runner stops with exit 3 and says so (it never reports a number it did not measure).
``--compute-units`` maps to coremltools.ComputeUnit (cpu = CPU_ONLY, gpu = CPU_AND_GPU, ane = CPU_AND_NE,
all = ALL) and is reported in ``runtime_details``; ``--threads`` has no CoreML equivalent and is ignored.
"""

import argparse
import os
import platform
import sys
from typing import Any, Mapping, Optional, Sequence

try:  # imported as edgepack.device_runners.coreml_runner
    from . import runner_common as common
except ImportError:  # run as a script on the device (also under python -I / -P)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import runner_common as common  # type: ignore[no-redef]

COMPUTE_UNITS = {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "all": "ALL"}


def check_platform(system: Optional[str] = None) -> None:
    """CoreML prediction needs macOS: a RunnerError (exit 3) anywhere else."""
    system = system or platform.system()
    if system != "Darwin":
        raise common.RunnerError(
            "CoreML prediction needs macOS; this device runs %s (%s), where coremltools can only read the model"
            % (system, platform.machine()),
            "bench CoreML bundles on a Mac: edgepack bench BUNDLE --device user@mac",
            common.EXIT_RUNTIME_MISSING,
        )


class CoreMLBackend(common.Backend):
    runtime = "coreml"

    def __init__(self) -> None:
        self.model: Any = None
        self.units = "all"  # --compute-units
        self.outputs: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--compute-units",
            choices=sorted(COMPUTE_UNITS),
            default="all",
            help="where CoreML may run the model: cpu, gpu (CPU+GPU), ane (CPU+Neural Engine), all (default)",
        )

    def check(self) -> None:
        check_platform()
        common.Backend.check(self)
        common.require("coremltools", "pip install coremltools (or run edgepack bench with --install-runtime)")

    def version(self) -> str:
        import coremltools

        return str(coremltools.__version__)

    def load(self, model_path: str, manifest: Mapping[str, Any], settings: argparse.Namespace) -> None:
        import coremltools as ct

        units = getattr(ct.ComputeUnit, COMPUTE_UNITS[settings.compute_units])
        try:
            model = ct.models.MLModel(model_path, compute_units=units)
        except Exception as e:  # CoreML raises plain Exceptions with the framework's message
            raise common.RunnerError(
                "CoreML could not load the model: %s" % str(e).splitlines()[0],
                "check that this macOS is at least the bundle's deployment target (%s)"
                % ((manifest.get("validation") or {}).get("checks") or {}).get(
                    "deployment_target", "see edgepack inspect"
                ),
            )
        self.model, self.units = model, settings.compute_units
        self.outputs = [s["name"] for s in manifest["outputs"]]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        res = self.model.predict(dict(feeds))
        return dict((name, res[name]) for name in self.outputs)

    def details(self) -> dict[str, Any]:
        return {
            "compute_units": self.units,
            "coreml_compute_unit": COMPUTE_UNITS[self.units],
            "macos": platform.mac_ver()[0] or None,
        }


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main(CoreMLBackend(), argv)


if __name__ == "__main__":
    sys.exit(main())
