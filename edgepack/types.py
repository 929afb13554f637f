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


class CoreInfo(BaseModel):
    """One CPU core the runner could use."""

    cpu: int
    max_freq_mhz: Optional[int] = Field(None, description="cpufreq cpuinfo_max_freq")
    capacity: Optional[int] = Field(None, description="the scheduler's cpu_capacity (1024 = the biggest core)")


class CpuInfo(BaseModel):
    model: Optional[str] = None
    emulated: bool = False
    governor: Optional[str] = None
    max_freq_mhz: Optional[int] = None
    cur_freq_mhz: Optional[int] = None
    temperature_c: Optional[float] = Field(None, description="hottest thermal zone before timing")
    temperature_end_c: Optional[float] = None
    temperature_max_c: Optional[float] = None
    pinned: Optional[str] = Field(None, description="bench --cpus as given (4-7, big, ...); null = not pinned")
    affinity: Optional[list[int]] = Field(None, description="the cores the runner's threads were allowed on")
    cores: Optional[list[CoreInfo]] = Field(None, description="those cores' max frequency and capacity")
    sysfs_root: Optional[str] = Field(
        None, description="TEST-ONLY: the fake /sys tree (EDGEPACK_SYSFS_ROOT) this result's sensors were read from"
    )


class SustainedWindow(BaseModel):
    """One window of a sustained run: latency over every run in it, then the sensors read right after it."""

    index: int
    t_s: float = Field(description="seconds since the sustained run started, at the window's end")
    seconds: float
    runs: int
    p50: float
    p90: float
    mean: float
    min: float
    max: float
    sample_ms: float = Field(description="time taken to read the sensors after this window")
    freq_mhz: Optional[dict[str, int]] = Field(None, description="core -> scaling_cur_freq, MHz (cores in use)")
    temperatures: dict[str, float] = Field(default_factory=dict, description="thermal zone type -> C")
    temperature_c: Optional[float] = Field(None, description="the hottest zone")
    throttled: Optional[int] = Field(None, description="Raspberry Pi get_throttled bits; null = not exposed")


class Sustained(BaseModel):
    """``bench --sustained``: back-to-back windows, cold vs sustained p50, and whether the device throttled."""

    duration_s: float
    window_s: float
    elapsed_s: float
    runs: int
    sampling_ms: float = Field(description="median time to read the sensors after a window (outside the timing)")
    throttled_before: Optional[int] = Field(None, description="get_throttled bits before the first window")
    temperature_before_c: Optional[float] = None
    sources: dict[str, Optional[str]] = Field(description="where frequency, temperature and throttling were read")
    trip_points_c: dict[str, float] = Field(default_factory=dict, description="zone -> passive trip point, C")
    cores: list[int] = Field(description="the cores whose clocks were read")
    windows: list[SustainedWindow]
    cold_p50: float = Field(description="p50 of the first window")
    sustained_p50: float = Field(description="median of the window p50s over the last third of the run")
    ratio: float = Field(description="sustained_p50 / cold_p50")
    tolerance: float = Field(description="|ratio - 1| up to this is stable")
    verdict: Literal["stable", "throttled", "drifting"]
    evidence: list[str]

    def flags(self) -> list[str]:
        """The names of every get_throttled bit seen during the run."""
        from edgepack.device_runners.runner_common.sustained import flag_names

        bits = 0
        for w in self.windows:
            bits |= w.throttled or 0
        return [str(n) for n in flag_names(bits)]


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
    sustained: Optional[Sustained] = Field(None, description="bench --sustained: windows, ratio, verdict")
    warnings: list[str] = Field(
        default_factory=list,
        description="what the runner wants the reader to know about a successful run (e.g. a runtime older than "
        "the bundle's exporter)",
    )

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


@dataclass(frozen=True)
class DataOptions:
    """Stage ``load_data``: the data sets, and how the validation inputs are drawn without calibration data."""

    calibration: Optional[Path] = None  # DATA.npz, one array per input (int8 ranges; validation inputs)
    eval: Optional[Path] = None  # DATA.npz with inputs and "labels" (accuracy, on the device)
    validation_samples: int = 16
    seed: int = 0  # random validation inputs when there is no calibration data


@dataclass(frozen=True)
class ConvertOptions:
    """Stage ``convert``: what the routes read. ``target``/``quantize``/``route`` choose the routes; the rest are the
    route options, each declared once as a ``registry.Option`` of the same name by the routes that read it."""

    target: str = "onnx"
    quantize: str = "none"
    route: Optional[str] = None  # --route NAME: this route only, no fallback
    io_dtype: str = "float32"
    layout: Optional[str] = None
    opset: int = 18
    coreml_target: Optional[str] = None
    keep_float: Optional[str] = None  # --keep-float N|auto: the N most sensitive layers stay float (int8 routes)
    explain_quant: Optional[bool] = None  # --explain-quant: per-layer sensitivity table (terminal + manifest)


@dataclass(frozen=True)
class CheckOptions:
    """Stage ``validate`` (and a route's own check of an intermediate model, e.g. onnx2tf's SavedModel)."""

    min_cosine: Optional[float] = None  # None: the precision's threshold (registry.PRECISIONS)
    allow_mismatch: bool = False


@dataclass(frozen=True)
class NpuOptions:
    """Stage ``compile``: vela for an Arm Ethos-U NPU, after validation."""

    accelerator: str  # vela --accelerator-config, e.g. ethos-u55-128
    config: Optional[str] = None  # a vela .ini file, or a built-in one such as Arm/vela.ini
    system_config: Optional[str] = None
    memory_mode: Optional[str] = None
    strict: bool = False  # any CPU fallback is an error


@dataclass(frozen=True)
class BuildOptions:
    """The options of one build, grouped by the stage that reads them: load (``inputs``) → load_data (``data``) →
    convert (``convert``) → validate (``check``) → compile (``npu``) → bundle (``output``, ``golden_samples``)."""

    convert: ConvertOptions = field(default_factory=ConvertOptions)
    inputs: tuple[TensorSpec, ...] = ()  # --input specs (file.py:callable sources need them)
    data: DataOptions = field(default_factory=DataOptions)
    check: CheckOptions = field(default_factory=CheckOptions)
    npu: Optional[NpuOptions] = None
    output: Optional[Path] = None
    golden_samples: int = 4
    verbose: bool = False  # keep the frameworks' log beside the bundle (not recorded)

    def recorded(self) -> dict[str, Any]:
        """The options worth recording in the manifest (no absolute paths)."""
        c, d, npu = self.convert, self.data, self.npu
        return {
            "target": c.target,
            "quantize": c.quantize,
            "io_dtype": c.io_dtype,
            "layout": c.layout,
            "calibration": d.calibration.name if d.calibration else None,
            "eval": d.eval.name if d.eval else None,
            "inputs": [f"{s.name}:{s.shape_text()}:{s.dtype}" for s in self.inputs],
            "min_cosine": self.check.min_cosine,
            "allow_mismatch": self.check.allow_mismatch,
            "opset": c.opset,
            "seed": d.seed,
            **({"route": c.route} if c.route else {}),
            **({"keep_float": c.keep_float} if c.keep_float is not None else {}),
            **({"explain_quant": True} if c.explain_quant else {}),
            **(
                {
                    "npu": npu.accelerator,
                    "npu_system_config": npu.system_config,
                    "npu_memory_mode": npu.memory_mode,
                    "npu_config": Path(npu.config).name if npu.config else None,
                    "npu_strict": npu.strict,
                }
                if npu
                else {}
            ),
            **({"coreml_target": c.coreml_target} if c.target == "coreml" else {}),
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
    sustained: Union[float, str] = 0.0  # seconds, or "2m"/"30s" (bench --sustained); 0 = off
    sustained_window: float = 0.0  # seconds per sustained window; 0 = about 1/24 of the duration
    drift_tolerance: float = 0.05  # sustained p50 within this fraction of the cold p50 is "stable"
    cpus: Optional[str] = None  # pin the runner: "4-7", "0,2", "big", "little", "all"

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
            *(
                ["--sustained", str(self.sustained), "--window", str(self.sustained_window)]
                + ["--drift-tolerance", str(self.drift_tolerance)]
                if self.sustained
                else []
            ),
            *(["--cpus", self.cpus] if self.cpus else []),
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


class SequentialGate(BaseModel):
    """``bench --until-conclusive``: the latency comparison sampled window by window until its anytime-valid
    interval (:func:`edgepack.stats.sequential_ratio`) lay on one side of the limit, or the budget ended."""

    verdict: Literal["regressed", "ok", "inconclusive-at-budget"]
    paired: bool = Field(description="baseline bundle timed interleaved on the same device (else: stored windows)")
    baseline_bundle: str
    baseline_sha256: str
    windows: int = Field(description="timing windows of this bundle")
    baseline_windows: int = Field(description="timing windows of the baseline (interleaved, or stored)")
    seconds: float = Field(description="wall time of the sampling")
    budget_seconds: float
    limit: float = Field(description="allowed ratio, 1 + max latency regression")
    confidence: float
    statistic: str = Field("p50", description="the window statistic compared: p50 = each window's median")
    ratio: float
    low: float
    high: Optional[float] = Field(description="null: unbounded (too few windows yet)")
    method: str
    looks: list[list[Optional[float]]] = Field(
        default_factory=list, description="[windows, low, high] after each round (high null: unbounded)"
    )


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
    npu_placement: Optional[Placement] = Field(
        None, description="the bundle's NPU compile placement (manifest npu.placement, vela), for the placement gate"
    )
    sequential: Optional[SequentialGate] = None
    manifest: Optional[Manifest] = Field(None, exclude=True, description="in-process only: the bundle's manifest")

    @property
    def key(self) -> str:
        return f"{self.bundle} @ {self.device_spec}"

    def record(self) -> BenchRecord:
        """The record itself (``bench(...).record()``, from when bench returned a separate result type)."""
        return self


FailureStatus = Literal["unreachable", "lost", "timeout", "failed", "interrupted", "not-run"]


class BenchFailure(BaseModel):
    """One bundle a multi-device bench could not measure on one device (``bench --json``'s ``failures``): the
    device was unreachable, the connection dropped, the run timed out or failed, the bench was interrupted, or
    an earlier failure on that device left it ``not-run``. A report shows it as a failed ``run`` check."""

    bundle: str
    device_spec: str
    status: FailureStatus
    message: str
    hint: str = ""

    @property
    def key(self) -> str:
        return f"{self.bundle} @ {self.device_spec}"


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
    failures: list[BenchFailure] = []  # bundles a multi-device bench could not measure

    model_config = ConfigDict(populate_by_name=True)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]


# --------------------------------------------------------------------------- edgepack tune

TuneStatus = Literal["best", "within-budget", "over-budget", "failed", "not-run"]


class TuneCandidate(BaseModel):
    """One candidate of ``edgepack tune``: a bundle (format x precision) benched with one thread setting, or why
    it was not (``status`` failed / not-run with ``reason``). The bench outcome is the bundle's ``BenchRecord``."""

    name: str = Field(description="e.g. 'onnx int8 t2'")
    format: str
    precision: str
    threads: Optional[int] = Field(None, description="bench --threads (0 = runtime default); null: never benched")
    status: TuneStatus
    reason: Optional[str] = None
    route: Optional[str] = Field(None, description="the route that built the bundle")
    bundle_bytes: Optional[int] = None
    cached: Optional[bool] = Field(None, description="the bundle came from the build cache")
    build_seconds: Optional[float] = None
    top1: Optional[float] = Field(None, description="top-1 on the eval set, measured on the device")
    drop_points: Optional[float] = Field(None, description="reference top-1 minus this one, percentage points")
    cosine: Optional[float] = Field(None, description="worst output's cosine vs the source framework, on the device")
    p50_vs_best: Optional[list[float]] = Field(
        None, description="[ratio, low, high]: p50 / the chosen one's p50 with its bootstrap interval"
    )
    record: Optional[BenchRecord] = None


class TuneResult(BaseModel):
    """What ``edgepack tune`` produces (``edgepack.tune/1``, ``tune --json``)."""

    schema_: str = Field("edgepack.tune/1", alias="schema")
    created: str
    edgepack: str
    source: str
    device: str
    max_accuracy_drop: float = Field(description="top-1 percentage points below the reference allowed")
    reference: Accuracy = Field(description="the source model's top-1 on the eval set (its own framework, host)")
    reference_what: str = Field(description="what produced the reference, e.g. 'torch 2.13.0 on the host'")
    chosen: Optional[str] = Field(None, description="the chosen candidate's name; null when none met the budget")
    output: Optional[str] = Field(None, description="where the chosen bundle was written")
    settings: dict[str, Any] = {}
    notes: list[str] = []
    candidates: list[TuneCandidate]

    model_config = ConfigDict(populate_by_name=True)

    @property
    def best(self) -> Optional[TuneCandidate]:
        return next((c for c in self.candidates if c.status == "best"), None)
