"""Build-time check: the converted model against the source framework, on the same inputs.

Per output: max/mean abs error, cosine similarity, SQNR (dB) and top-1 agreement for
classifier-shaped outputs (the same ``compare`` the device runner uses). The build fails
when any output's cosine similarity is below the threshold for its precision, or when the
converted model produces NaN/Inf, unless the user overrides (``--min-cosine`` to move the
threshold, ``--allow-mismatch`` to record the failure and bundle anyway).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from edgepack.device_runners.runner_common import compare, iter_batches
from edgepack.errors import ValidationFailed
from edgepack.registry import min_cosine as default_min_cosine
from edgepack.types import ConvertedModel, ModelSource, OutputMetrics, Predict, TensorSpec, ValidationInfo


def run_batches(
    predict: Predict, dataset: dict[str, Any], inputs: list[TensorSpec], outputs: list[str]
) -> dict[str, np.ndarray]:
    specs = [s.model_dump() for s in inputs]
    got: dict[str, list[np.ndarray]] = {}
    for feeds in iter_batches(dataset, specs):
        res = predict(feeds)
        for i, name in enumerate(outputs):
            value = res[name] if name in res else list(res.values())[i]
            got.setdefault(name, []).append(np.asarray(value))
    return {k: np.concatenate(v, axis=0) for k, v in got.items()}


def reference_outputs(source: ModelSource, dataset: dict[str, Any]) -> dict[str, np.ndarray]:
    assert source.predict is not None  # every source loader sets it
    return run_batches(source.predict, dataset, source.inputs, [s.name for s in source.outputs])


def validate(
    source: ModelSource,
    converted: ConvertedModel,
    dataset: dict[str, Any],
    reference: dict[str, Any],
    mode: str,
    inputs_from: Literal["calibration", "random", "none"],
    min_cosine: float | None,
) -> tuple[ValidationInfo, ValidationFailed | None]:
    """``dataset`` and ``reference`` are already in the converted model's names and layouts. Returns the record
    and, when an output misses the threshold or is not finite, the failure (the caller raises it, tries another
    route, or overrides it with --allow-mismatch)."""
    assert converted.predict is not None  # the caller records a model that cannot run here as pending-device
    threshold = default_min_cosine(mode) if min_cosine is None else min_cosine
    names = [s.name for s in converted.outputs]
    got = run_batches(converted.predict, dataset, converted.inputs, names)
    metrics = {}
    for name in names:
        metrics[name] = OutputMetrics(**compare(reference[name], got[name]))
    bad = [(n, m) for n, m in metrics.items() if m.nonfinite or m.cosine < threshold]
    n = len(next(iter(dataset.values())))
    info = ValidationInfo(
        status="passed",
        samples=n,
        inputs_from=inputs_from,
        reference=f"{source.framework} {source.framework_version or ''}".strip(),
        thresholds={"min_cosine": threshold},
        outputs=metrics,
        checks=converted.checks,
    )
    if not bad:
        return info, None
    name, m = bad[0]
    what = (
        "produces NaN/Inf"
        if m.nonfinite
        else (
            f"cosine {m.cosine:.5f} < {threshold} (max abs err {m.max_abs_err:.4g}, SQNR {m.sqnr_db:.1f} dB)"
            if m.sqnr_db is not None
            else f"cosine {m.cosine:.5f} < {threshold}"
        )
    )
    return info, ValidationFailed(
        f"converted model disagrees with the {source.framework} source on output {name!r}: {what}",
        "use more representative --calibration data or a higher precision; or pass --min-cosine X "
        "to accept a lower similarity, or --allow-mismatch to bundle anyway",
    )
