"""The result document: the one JSON object a device runner prints on success.

Its single definition is ``edgepack.types.RunResult`` (pydantic), published as
``edgepack/schemas/result.schema.json``; edgepack validates every runner's output against it on receipt
(``bencher._parse``). This folder runs on the device without edgepack or pydantic, so it cannot import that
definition: :func:`document` is the one place the runner spells the result's keys, one keyword argument per
top-level field, and ``tests/test_runner_common.py`` checks those keys against the published schema and
validates a real runner's output with it. A new field is added to ``RunResult`` (regenerate the schema) and
here; the test fails until both agree.
"""

from __future__ import annotations

import json
from typing import IO, Any, Optional

RESULT_SCHEMA = "edgepack.result/1"


def document(
    *,
    bundle_sha256: str,
    bundle: dict[str, Any],
    device: dict[str, Any],
    settings: dict[str, Any],
    runtime_details: dict[str, Any],
    load_ms: float,
    first_inference_ms: float,
    latency_ms: dict[str, Any],
    timed_seconds: float,
    throughput_ips: Optional[float],
    peak_rss_mb: Optional[float],
    process_threads: Optional[int],
    validation: Optional[dict[str, dict[str, Any]]],
    accuracy: Optional[dict[str, Any]],
    placement: Optional[dict[str, Any]],
    op_timing: Optional[dict[str, Any]],
    sustained: Optional[dict[str, Any]],
    warnings: list[str],
) -> dict[str, Any]:
    """The result (schema ``edgepack.result/1``); every field is required here, null where not measured."""
    return {
        "schema": RESULT_SCHEMA,
        "bundle_sha256": bundle_sha256,
        "bundle": bundle,
        "device": device,
        "settings": settings,
        "runtime_details": runtime_details,
        "load_ms": load_ms,
        "first_inference_ms": first_inference_ms,
        "latency_ms": latency_ms,
        "timed_seconds": timed_seconds,
        "throughput_ips": throughput_ips,
        "peak_rss_mb": peak_rss_mb,
        "process_threads": process_threads,
        "validation": validation,
        "accuracy": accuracy,
        "placement": placement,
        "op_timing": op_timing,
        "sustained": sustained,
        "warnings": warnings,
    }


def write(result: dict[str, Any], out: IO[str]) -> None:
    """One line of JSON (no NaN/Infinity: they are not JSON), keys sorted."""
    out.write(json.dumps(result, allow_nan=False, sort_keys=True))
    out.write("\n")
    out.flush()
