"""The interface between the shared runner and one runtime (onnxruntime, LiteRT, CoreML, ...).

A runtime module subclasses :class:`Backend`, sets ``runtime`` and implements ``version``, ``load`` and ``run``;
every other method has a default. One backend object runs one model: ``load`` keeps what ``run`` needs on
``self``. The shared runner (``cli.run``) calls, in order::

    add_arguments(parser)                      # this runtime's flags, before parsing
    check()                                    # numpy and the runtime importable? (else exit 3)
    version()                                  # reported as device.runtime_version
    model_member(manifest, settings)           # which bundle member is the model
    load(model_path, manifest, settings)       # timed as load_ms
    run(feeds) ...                             # first inference, warm-up, timed runs, golden, eval
    details()                                  # the result's runtime_details
    warnings(manifest)                         # the result's warnings (e.g. a runtime older than the exporter)
    analyze(feeds)                             # placement / op_timing, after (and apart from) the timed runs

``settings`` is the parsed command line (``argparse.Namespace``: the shared flags plus this runtime's). ``feeds``
are already in the model's input dtypes (quantized where the manifest says so); ``run`` returns every manifest
output by name, as the runtime gives it (the shared runner dequantizes).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Optional, TypedDict

from .errors import EXIT_RUNTIME_MISSING, RunnerError


class Analysis(TypedDict, total=False):
    """What :meth:`Backend.analyze` may report (both optional; the result carries null for a missing one)."""

    placement: Optional[dict[str, Any]]  # which ops the accelerator took, per op type (types.Placement)
    op_timing: Optional[dict[str, Any]]  # per-op times (types.OpTiming)


def require(module: str, install: str) -> None:
    """Import ``module`` or stop with exit 3 (runtime missing) and how to install it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise RunnerError("%s is not installed for %s" % (module, sys.executable), install, EXIT_RUNTIME_MISSING)


class Backend(object):
    """One runtime's part of a device runner (see the module docstring for the call order)."""

    #: the manifest's ``runtime`` this backend runs (a bundle for another runtime is refused, exit 2)
    runtime = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this runtime's flags to the shared parser. Default: none."""

    def check(self) -> None:
        """Raise :class:`RunnerError` with ``EXIT_RUNTIME_MISSING`` when something this runtime needs is missing.
        Default: numpy only; a subclass checks its runtime too (calling this first)."""
        require("numpy", "pip install numpy")

    def version(self) -> str:
        """The runtime's version (``device.runtime_version``)."""
        raise NotImplementedError

    def model_member(self, manifest: Mapping[str, Any], settings: argparse.Namespace) -> str:
        """The bundle member to load. Default: the manifest's model (e.g. LiteRT's ``--npu-model`` differs)."""
        return str(manifest["model"]["member"])

    def load(self, model_path: str, manifest: Mapping[str, Any], settings: argparse.Namespace) -> None:
        """Load the extracted model; raise :class:`RunnerError` with a hint when the runtime cannot."""
        raise NotImplementedError

    def run(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        """One inference of the loaded model: {input name: array} -> {output name: array}."""
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        """The result's ``runtime_details`` (providers, delegates, compute units, ...). Default: empty."""
        return {}

    def warnings(self, manifest: Mapping[str, Any]) -> list[str]:
        """What a reader of the result must know about this run although it succeeded (the result's
        ``warnings``; bench prints them, reports list them). Default: none."""
        return []

    def analyze(self, feeds: Mapping[str, Any]) -> Analysis:
        """Op placement and per-op timing, measured after the timed runs so they never touch the latency
        figures. Default: neither."""
        return {}
