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

Precision = Literal["none", "fp16", "dynamic", "int8", "int16x8", "int8-weights", "palettize4", "palettize6"]
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

    def static_shape(self) -> list[int]:
        """The shape with dynamic dimensions as 1 (what a converter traces or fixes them to)."""
        return [d if isinstance(d, int) else 1 for d in self.shape]


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


class LayerSensitivity(_Model):
    """One quantized layer's error against the float model on the validation samples (``--explain-quant``)."""

    name: str = Field(description="ONNX node name / TFLite op's first output tensor (what --keep-float keeps)")
    op_type: str
    sqnr_db: float = Field(description="SQNR (dB, capped at ±100) of the layer's output in the quantized model")
    input_sqnr_db: float = Field(description="lowest SQNR of its activation inputs as the quantized layer reads them")
    loss_db: float = Field(description="input SQNR - output SQNR (>= 0): what this layer costs; the ranking key")
    cosine: float = Field(description="cosine of the layer's output, quantized vs float")
    kept_float: bool = False


class QuantizationInfo(_Model):
    mode: Precision
    method: Optional[str] = None
    calibration_samples: Optional[int] = None
    calibration_sha256: Optional[str] = None
    kept_float: Optional[list[str]] = Field(
        None, description="layers left in float by --keep-float (mixed precision); null = none asked"
    )
    sensitivity: Optional[list[LayerSensitivity]] = Field(
        None, description="per-layer quantization error, most sensitive first (--explain-quant / --keep-float)"
    )


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
    pending_reason: Optional[str] = Field(
        None, description="why the converted model was not run at build time (status pending-device)"
    )
    checks: Optional[dict[str, Any]] = Field(
        None,
        description="static checks of the converted model (format specific: I/O, ops, weight precision counts, size)",
    )


class DataMember(_Model):
    member: str
    samples: int


class OpPlacement(_Model):
    """Where the ops of one type ran: on the accelerator (NPU, delegate, execution provider) or on the CPU."""

    op_type: str
    accelerator: int = 0
    cpu: int = 0
    reasons: list[str] = Field(default_factory=list, description="why ops of this type stayed on the CPU")


class Placement(_Model):
    """One op-placement schema for every accelerator: vela (Ethos-U), TFLite delegates, onnxruntime EPs."""

    accelerator: Optional[str] = Field(
        description="what took ops off the CPU (ethos-u55-128, XNNPACK, "
        "an execution provider); null = CPU only was requested"
    )
    source: str = Field(description="how placement was found: vela, tflite-delegate, onnxruntime-profile")
    accelerator_ops: int
    cpu_ops: int
    partitions: Optional[int] = Field(None, description="accelerator partitions (delegate/NPU nodes)")
    ops: list[OpPlacement]
    notes: list[str] = Field(default_factory=list)


class OpTime(_Model):
    """One node's time per inference (median over the profiled runs)."""

    name: str
    op_type: str
    provider: Optional[str] = None
    ms: float = Field(description="median ms per inference over the profiled runs")
    share: float = Field(description="fraction of the summed node time")


class OpTiming(_Model):
    source: str = Field(description="e.g. onnxruntime-profile")
    profiled_runs: int
    node_total_ms: float = Field(description="sum of node times per inference")
    profiled_run_ms: Optional[float] = Field(
        None, description="median time of one profiled run (onnxruntime's model_run event): compare with the timed p50"
    )
    top: list[OpTime] = Field(description="nodes by time, slowest first")
    by_type: dict[str, float] = Field(default_factory=dict, description="op type -> ms per inference")


class NpuLayer(_Model):
    """One row of vela's per-layer table."""

    original_op: str
    npu_op: str
    target: str
    cycles: int
    macs: int
    name: str


class NpuCompile(_Model):
    """An Ethos-U build: vela's model and findings. Cycles, time and memory are vela's estimates."""

    compiler: str = "vela"
    compiler_version: str
    accelerator: str = Field(description="vela --accelerator-config, e.g. ethos-u55-128")
    system_config: Optional[str]
    memory_mode: Optional[str]
    config_file: Optional[str] = Field(None, description="vela .ini (base name) or a built-in config")
    model: ModelMember = Field(description="the vela-optimized TFLite (ethos-u custom op + CPU ops)")
    numerics: str = Field(description="where the NPU model's numerics are checked")
    placement: Placement
    npu_percent: float = Field(description="share of the int8 model's ops placed on the NPU")
    sram_bytes: Optional[int] = None
    dram_bytes: Optional[int] = None
    on_chip_flash_bytes: Optional[int] = None
    off_chip_flash_bytes: Optional[int] = None
    macs: Optional[int] = None
    npu_cycles: Optional[int] = None
    total_cycles: Optional[int] = None
    clock_hz: Optional[float] = None
    est_inference_ms: Optional[float] = None
    est_inferences_per_s: Optional[float] = None
    hints: list[str] = Field(default_factory=list, description="what usually fixes each CPU fallback")
    layers: list[NpuLayer] = Field(default_factory=list)


class RouteAttempt(_Model):
    """One route a build considered: used, failed (with its one-line reason) or skipped (and why)."""

    route: str
    status: Literal["used", "failed", "skipped"]
    reason: Optional[str] = None


class RouteInfo(_Model):
    """Which route produced the bundle and what happened to the routes tried before it (fallback)."""

    name: str = Field(description="the route that produced the model, e.g. torch-litert")
    pinned: bool = Field(False, description="chosen with --route (no fallback)")
    attempts: list[RouteAttempt]


class Manifest(_Model):
    """manifest.json inside every .edgepack bundle (schema ``edgepack.manifest/1``)."""

    schema_: str = Field(MANIFEST_SCHEMA, alias="schema")
    format: str
    runtime: str
    model: ModelMember
    members: dict[str, str] = Field(description="sha256 of every member except manifest.json")
    sizes: Optional[dict[str, int]] = Field(
        None,
        description="unpacked bytes of every member except "
        "manifest.json (written since edgepack 0.1: "
        "readers refuse a member whose zip header "
        "disagrees, before inflating it)",
    )
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: QuantizationInfo
    source: SourceInfo
    tools: dict[str, str]
    build_options: dict[str, Any]
    validation: ValidationInfo
    golden: Optional[DataMember]
    eval: Optional[DataMember] = None
    npu: Optional[NpuCompile] = Field(None, description="Ethos-U build (vela): NPU model and findings")
    route: Optional[RouteInfo] = Field(
        None,
        description="the conversion route used and the fallback history "
        "(absent in bundles from before routes were recorded)",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        import json

        data = self.model_dump(mode="json", by_alias=True)
        return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- runner result


class LatencyWindow(BaseModel):
    """One independent timing window of ``bench --repeat`` (its samples are the next ``n`` in ``samples``)."""

    n: int
    p50: float
    p90: float
    mean: float


class LatencyStats(BaseModel):
    samples: list[float]
    min: float
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    windows: Optional[list[LatencyWindow]] = None

    def window_samples(self) -> list[list[float]]:
        """The samples split into their timing windows (one window when not repeated)."""
        if not self.windows:
            return [list(self.samples)]
        out, start = [], 0
        for w in self.windows:
            out.append(list(self.samples[start : start + w.n]))
            start += w.n
        return out


class CpuInfo(BaseModel):
    model: Optional[str] = None
    emulated: bool = False
    governor: Optional[str] = None
    max_freq_mhz: Optional[int] = None
    cur_freq_mhz: Optional[int] = None
    temperature_c: Optional[float] = Field(None, description="hottest thermal zone before timing")
    temperature_end_c: Optional[float] = None
    temperature_max_c: Optional[float] = None


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
    placement: Optional[Placement] = None
    op_timing: Optional[OpTiming] = None

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def json_schema_text(cls) -> str:
        """The published ``edgepack/schemas/result.schema.json``. This class is the result's one definition;
        the device runner builds its document in ``runner_common/result.py`` (tests keep the two in step)."""
        import json

        schema = cls.model_json_schema(by_alias=True)
        schema["$id"] = "https://edgepack.dev/schemas/result-1.json"
        schema["title"] = "edgepack device runner result (edgepack.result/1)"
        return json.dumps(schema, indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- in-process stages

Feeds = dict[str, Any]  # input name -> numpy array (one model batch)
Predict = Callable[[Feeds], dict[str, Any]]


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
    npu: Optional[str] = None  # vela --accelerator-config, e.g. ethos-u55-128
    npu_system_config: Optional[str] = None
    npu_memory_mode: Optional[str] = None
    npu_config: Optional[str] = None  # a vela .ini file, or a built-in one such as Arm/vela.ini
    npu_strict: bool = False
    route: Optional[str] = None  # --route NAME: this route only, no fallback
    verbose: bool = False  # keep the frameworks' log beside the bundle (not recorded)
    # issue 13 (quantization debugging), route options of the int8 routes; a quantization-stage group at issue 15
    keep_float: Optional[str] = None  # --keep-float N|auto: the N most sensitive layers stay float
    explain_quant: Optional[bool] = None  # --explain-quant: per-layer sensitivity table (terminal + manifest)

    def recorded(self) -> dict[str, Any]:
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
            **({"route": self.route} if self.route else {}),
            **({"keep_float": self.keep_float} if self.keep_float is not None else {}),
            **({"explain_quant": True} if self.explain_quant else {}),
            **(
                {
                    "npu": self.npu,
                    "npu_system_config": self.npu_system_config,
                    "npu_memory_mode": self.npu_memory_mode,
                    "npu_config": Path(self.npu_config).name if self.npu_config else None,
                    "npu_strict": self.npu_strict,
                }
                if self.npu
                else {}
            ),
            **({"coreml_target": self.coreml_target} if self.target == "coreml" else {}),
        }


@dataclass
class BenchOptions:
    """How ``bench`` measures: timing settings, and the runtime's own flags (``flags``: flag name -> value, as
    declared by the format's Runtime, e.g. {"ep": ["xnnpack"], "profile": True})."""

    runs: int = 50
    warmup: int = 5
    min_seconds: float = 1.0
    max_runs: int = 10000
    threads: int = 0
    repeat: int = 1
    cooldown: float = 1.0
    install_runtime: bool = False
    timeout: Optional[float] = None  # seconds the runner may take; None = sized from the settings, 0 = no limit
    flags: dict[str, Any] = field(default_factory=dict)

    def runner_argv(self) -> list[str]:
        return [
            "--runs",
            str(self.runs),
            "--warmup",
            str(self.warmup),
            "--min-seconds",
            str(self.min_seconds),
            "--threads",
            str(self.threads),
            "--max-runs",
            str(self.max_runs),
            "--repeat",
            str(self.repeat),
            "--cooldown",
            str(self.cooldown),
        ]


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
    checks: Optional[dict[str, Any]] = None  # the route's static checks of the converted model


@dataclass
class BuildResult:
    path: Path
    manifest: Manifest
    bytes: int


class BenchRecord(BaseModel):
    """One bundle measured on one device: what ``bench`` returns, an entry of ``bench --json``
    (``edgepack.bench/1``), of a report and of a baseline. Everything a report needs, without the bundle file;
    in the process that ran the bench it also carries the bundle's manifest (never written)."""

    bundle: str = Field(description="bundle file name; with device_spec, the key a baseline is matched on")
    bundle_path: Optional[str] = None
    bundle_bytes: int
    device_spec: str
    format: str
    quantization: str
    min_cosine: Optional[float] = Field(None, description="the bundle's build-time agreement threshold")
    uploaded: Optional[bool] = None
    result: RunResult
    manifest: Optional[Manifest] = Field(None, exclude=True, description="in-process only: the bundle's manifest")

    @property
    def key(self) -> str:
        return f"{self.bundle} @ {self.device_spec}"

    def record(self) -> BenchRecord:
        """The record itself (``bench(...).record()``, from when bench returned a separate result type)."""
        return self


# --------------------------------------------------------------------------- reports and the CI gate

CheckStatus = Literal["pass", "fail", "flag", "skip"]


class Check(BaseModel):
    """One gate check of one bundle on one device. ``fail`` fails the gate; ``flag`` is shown, not gated
    (e.g. measured on a different device than its baseline); ``skip`` had nothing to compare."""

    entry: str = Field(description="'bundle @ device'")
    name: str = Field(description="latency, accuracy, size, agreement, p90-ceiling, ...")
    status: CheckStatus
    value: Optional[float] = None
    limit: Optional[float] = None
    interval: Optional[list[float]] = Field(None, description="[low, high] confidence interval of value")
    message: str


class Report(BaseModel):
    """What ``edgepack report`` produces (``edgepack.report/1``); a saved baseline is the same document."""

    schema_: str = Field("edgepack.report/1", alias="schema")
    created: str
    edgepack: str
    records: list[BenchRecord]
    baseline: Optional[list[BenchRecord]] = None
    settings: dict[str, Any] = {}
    checks: list[Check] = []

    model_config = ConfigDict(populate_by_name=True)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]
