"""Core types: one concept, one type.

Pydantic models are the ones that cross a boundary (the manifest inside a bundle,
the JSON a device runner prints); they are validated when read. Plain dataclasses
carry data between the build stages inside one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_SCHEMA = "edgepack.manifest/1"
RESULT_SCHEMA = "edgepack.result/1"

Precision = Literal["none", "fp16", "dynamic", "int8", "int16x8", "palettize4", "palettize6"]
Dim = Union[int, str, None]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantParams(_Model):
    """Affine quantization of a tensor: real = (q - zero_point) * scale."""

    scale: list[float]
    zero_point: list[int]
    axis: Optional[int] = None


class TensorSpec(_Model):
    name: str
    shape: list[Dim] = Field(description="int for static dims, a name or null for dynamic ones")
    dtype: str = Field(description="numpy dtype name, e.g. float32, int8")
    layout: Optional[str] = Field(None, description="NCHW, NHWC, NC, ... when known")
    quant: Optional[QuantParams] = None

    def shape_text(self) -> str:
        return "x".join("?" if not isinstance(d, int) else str(d) for d in self.shape)


# --------------------------------------------------------------------------- manifest


class ModelMember(_Model):
    member: str
    bytes: int


class SourceInfo(_Model):
    framework: str
    framework_version: Optional[str]
    kind: str = Field(description="onnx, torch-export, torchscript, python-callable, ...")
    file: str = Field(description="base name of the source file")
    sha256: str


class QuantizationInfo(_Model):
    mode: Precision
    method: Optional[str] = None
    calibration_samples: Optional[int] = None
    calibration_sha256: Optional[str] = None


class OutputMetrics(_Model):
    max_abs_err: Optional[float]
    mean_abs_err: Optional[float]
    cosine: float
    sqnr_db: Optional[float] = Field(description="null when identical (infinite SQNR)")
    top1_agreement: Optional[float] = Field(description="null unless the output is [N, classes]")
    nonfinite: Optional[bool] = None


class ValidationInfo(_Model):
    status: Literal["passed", "failed-overridden", "pending-device", "skipped"]
    samples: int
    inputs_from: Literal["calibration", "random", "none"]
    reference: str = Field(description="what produced the reference outputs")
    thresholds: dict[str, float]
    outputs: dict[str, OutputMetrics]
    pending_reason: Optional[str] = Field(None, description="why the converted model was not run at build time "
                                                            "(status pending-device)")
    checks: Optional[dict[str, Any]] = Field(None, description="static checks of the converted model (format "
                                                               "specific: I/O, ops, weight precision counts, size)")


class DataMember(_Model):
    member: str
    samples: int


class Manifest(_Model):
    """manifest.json inside every .edgepack bundle (schema ``edgepack.manifest/1``)."""

    schema_: str = Field(MANIFEST_SCHEMA, alias="schema")
    format: str
    runtime: str
    model: ModelMember
    members: dict[str, str] = Field(description="sha256 of every member except manifest.json")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: QuantizationInfo
    source: SourceInfo
    tools: dict[str, str]
    build_options: dict[str, Any]
    validation: ValidationInfo
    golden: Optional[DataMember]
    eval: Optional[DataMember] = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        import json

        data = self.model_dump(mode="json", by_alias=True)
        return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- runner result


class LatencyStats(BaseModel):
    samples: list[float]
    min: float
    p50: float
    p90: float
    p99: float
    mean: float
    std: float


class CpuInfo(BaseModel):
    model: Optional[str] = None
    emulated: bool = False
    governor: Optional[str] = None
    max_freq_mhz: Optional[int] = None


class DeviceInfo(BaseModel):
    machine: str
    system: str
    python: str
    runtime: str
    runtime_version: str
    cpu_count: Optional[int]
    release: Optional[str] = None
    hostname: Optional[str] = None
    numpy: Optional[str] = None
    cpu: CpuInfo = CpuInfo()


class Accuracy(BaseModel):
    top1: float
    n: int


class RunResult(BaseModel):
    """The one JSON document a device runner prints (schema ``edgepack.result/1``)."""

    schema_: str = Field(RESULT_SCHEMA, alias="schema")
    bundle_sha256: str
    bundle: dict[str, Any]
    device: DeviceInfo
    settings: dict[str, Any]
    runtime_details: dict[str, Any]
    load_ms: float
    first_inference_ms: float
    latency_ms: LatencyStats
    timed_seconds: float
    throughput_ips: Optional[float]
    peak_rss_mb: Optional[float]
    process_threads: Optional[int] = None
    validation: Optional[dict[str, OutputMetrics]]
    accuracy: Optional[Accuracy]

    model_config = ConfigDict(populate_by_name=True)


# --------------------------------------------------------------------------- in-process stages

Feeds = dict  # input name -> numpy array (one model batch)
Predict = Callable[[Feeds], dict]


@dataclass
class ModelSource:
    """A loaded source model: what it is, its tensors, and how to run it for reference outputs."""

    path: Path
    kind: str
    framework: str
    framework_version: Optional[str]
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    handle: Any = None
    predict: Optional[Predict] = None


@dataclass
class BuildOptions:
    target: str = "onnx"
    quantize: str = "none"
    io_dtype: str = "float32"
    layout: Optional[str] = None
    calibration: Optional[Path] = None
    eval: Optional[Path] = None
    inputs: list[TensorSpec] = field(default_factory=list)
    output: Optional[Path] = None
    min_cosine: Optional[float] = None
    allow_mismatch: bool = False
    opset: int = 18
    coreml_target: Optional[str] = None
    golden_samples: int = 4
    validation_samples: int = 16
    seed: int = 0

    def recorded(self) -> dict:
        """The options worth recording in the manifest (no absolute paths)."""
        return {
            "target": self.target,
            "quantize": self.quantize,
            "io_dtype": self.io_dtype,
            "layout": self.layout,
            "calibration": self.calibration.name if self.calibration else None,
            "eval": self.eval.name if self.eval else None,
            "inputs": [f"{s.name}:{s.shape_text()}:{s.dtype}" for s in self.inputs],
            "min_cosine": self.min_cosine,
            "allow_mismatch": self.allow_mismatch,
            "opset": self.opset,
            "seed": self.seed,
            **({"coreml_target": self.coreml_target} if self.target == "coreml" else {}),
        }


@dataclass
class ConvertedModel:
    """What a conversion route returns: the model file and how to run it here."""

    path: Path
    member: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tools: dict[str, str]
    predict: Optional[Predict]
    quantization: QuantizationInfo
    pending_reason: Optional[str] = None  # set when ``predict`` is None: why the model cannot run here
    checks: Optional[dict] = None  # the route's static checks of the converted model


@dataclass
class BuildResult:
    path: Path
    manifest: Manifest
    bytes: int


@dataclass
class BenchResult:
    """A runner result plus the facts of the bundle and device it came from."""

    bundle: Path
    bundle_name: str
    device: str
    manifest: Manifest
    result: RunResult
    bundle_bytes: int
    uploaded: Optional[bool] = None

    def to_dict(self) -> dict:
        return {
            "bundle": self.bundle_name,
            "bundle_path": str(self.bundle),
            "bundle_bytes": self.bundle_bytes,
            "device_spec": self.device,
            "format": self.manifest.format,
            "quantization": self.manifest.quantization.mode,
            "uploaded": self.uploaded,
            "result": self.result.model_dump(mode="json", by_alias=True),
        }
