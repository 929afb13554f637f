"""Build one zoo case (model × target × precision) and describe the outcome as one JSON-able dict.

``run_isolated`` runs it in a fresh Python process (own HOME and TMPDIR, a timeout), which is how both
``tests/test_zoo.py`` and ``benchmarks/zoo.py`` call it: a converter that crashes the interpreter or hangs costs one
case, not the run, and no case sees another's framework state.

    python samples/zoo/runner.py MODEL TARGET PRECISION [--out RESULT.json] [--keep DIR]

Outcomes (``result["outcome"]``):
  pass      built, and validation passed (or is pending-device: CoreML on Linux, checked statically)
  expected  refused with an EdgepackError matching the model's documented refusal for this case
  refused   refused with an EdgepackError nobody documented (a regression, or a refusal to document)
  crash     a non-EdgepackError exception or a dead interpreter (edgepack should have wrapped it)
  timeout   killed after the per-case timeout
  unavailable  the model file could not be fetched (offline): tests skip
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import ZOO, FetchUnavailable, cache_dir  # noqa: E402

PASSING = ("passed", "pending-device")
CALIBRATION_SAMPLES = 32


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _constant_outputs(bundle: Path) -> list[str]:
    """Outputs whose golden values (the source framework's, on different inputs) are the same for every sample."""
    import io

    import numpy as np

    from edgepack.bundle import read_member

    golden = np.load(io.BytesIO(read_member(bundle, "golden.npz")), allow_pickle=False)
    flat = []
    for key in golden.files:
        if key.startswith("output/"):
            a = golden[key].astype(np.float64)
            if len(a) > 1 and np.ptp(a, axis=0).max() <= 1e-6 * max(1.0, np.abs(a).max()):
                flat.append(key[len("output/") :])
    return flat


def build_case(name: str, target: str, precision: str, workdir: Path) -> dict:
    """Build in this process; never raises for a build failure (it is the result)."""
    import edgepack
    from edgepack.errors import EdgepackError

    try:
        from edgepack.ui import set_quiet

        set_quiet(True)
    except ImportError:
        pass
    m = ZOO[name]
    res = {
        "model": name,
        "family": m.family,
        "framework": m.framework,
        "target": target,
        "precision": precision,
        "outcome": None,
        "seconds": None,
        "bytes": None,
        "cosine": None,
        "validation": None,
        "route": None,
        "message": None,
        "hint": None,
        "error_type": None,
    }
    refusal = m.refusal(target, precision)
    res["expected_refusal"] = refusal.why if refusal else None
    try:
        source = m.resolve_source()
    except FetchUnavailable as e:
        res.update(outcome="unavailable", message=_one_line(str(e)))
        return res
    # Calibration data doubles as the validation inputs (realistic ranges, valid token ids). CoreML int8 is
    # weight-only: calibration there asks for activation quantization, which needs macOS.
    calibration = None
    if not (target == "coreml" and precision == "int8"):
        calibration = m.calibration_npz(workdir / "calib.npz", n=CALIBRATION_SAMPLES)
    t0 = time.perf_counter()
    try:
        built = edgepack.build(
            source,
            to=target,
            quantize=precision,
            calibration=calibration,
            inputs=m.inputs,
            output=workdir / f"{name}.{target}.{precision}.edgepack",
        )
    except EdgepackError as e:
        res["seconds"] = round(time.perf_counter() - t0, 2)
        res.update(message=_one_line(e.message), hint=_one_line(e.hint or ""), error_type=type(e).__name__)
        res["outcome"] = "expected" if refusal and refusal.matches(e.message) else "refused"
        return res
    except Exception as e:  # edgepack should have turned it into an EdgepackError
        res["seconds"] = round(time.perf_counter() - t0, 2)
        res.update(
            outcome="crash",
            message=_one_line(f"{type(e).__name__}: {e}"),
            error_type=type(e).__name__,
            traceback=traceback.format_exc()[-3000:],
        )
        return res
    res["seconds"] = round(time.perf_counter() - t0, 2)
    flat = _constant_outputs(built.path)
    if flat:  # a model whose outputs ignore the input proves nothing about a conversion
        res.update(outcome="degenerate", message=f"reference outputs do not depend on the input: {', '.join(flat)}")
        return res
    man = built.manifest
    val = man.validation
    cosines = [o.cosine for o in val.outputs.values() if o.cosine is not None]
    opts = man.build_options or {}
    res.update(
        bytes=built.bytes,
        validation=val.status,
        cosine=min(cosines) if cosines else None,
        model_bytes=getattr(man.model, "bytes", None),
        route=man.route.name if man.route else opts.get("route"),
        fallback=[f"{a.route} {a.status}: {(a.reason or '')[:160]}" for a in man.route.attempts if a.status == "failed"]
        if man.route
        else [],
        outcome="pass" if val.status in PASSING else "refused",
    )
    if refusal:  # documented as refused but it built: the documentation is stale (or the fix landed)
        res["unexpected_pass"] = True
    return res


def run_isolated(name: str, target: str, precision: str, timeout: float = 600, keep: Path | None = None) -> dict:
    """``build_case`` in a fresh interpreter with its own HOME/TMPDIR; a crash or timeout is a result too."""
    env = dict(os.environ)
    env.setdefault("EDGEPACK_ZOO_CACHE", str(cache_dir()))  # before HOME moves: the fetch cache is machine-wide
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-{target}-{precision}-") as tmp:
        home, tmpdir = Path(tmp) / "home", Path(tmp) / "tmp"
        home.mkdir()
        tmpdir.mkdir()
        env.update(
            HOME=str(home), TMPDIR=str(tmpdir), TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", PYTHONHASHSEED="0"
        )
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), name, target, precision, "--out", str(out)]
        if keep:
            cmd += ["--keep", str(keep)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            refusal = ZOO[name].refusal(target, precision)
            return {
                "model": name,
                "target": target,
                "precision": precision,
                "outcome": "timeout",
                "seconds": round(time.perf_counter() - t0, 1),
                "message": f"killed after {timeout:.0f} s",
                "expected_refusal": refusal.why if refusal else None,
            }
        wall = round(time.perf_counter() - t0, 2)
        if out.is_file():
            res = json.loads(out.read_text())
        else:
            tail = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()][-1:] or [f"exit {proc.returncode}"]
            res = {
                "model": name,
                "target": target,
                "precision": precision,
                "outcome": "crash",
                "message": _one_line(f"interpreter died (exit {proc.returncode}): {tail[0]}"),
                "stderr_tail": (proc.stderr or "")[-3000:],
            }
        res["wall_seconds"] = wall  # includes interpreter start and framework imports
        return res


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(ZOO))
    ap.add_argument("target")
    ap.add_argument("precision")
    ap.add_argument("--out", type=Path, help="write the result JSON here (default: stdout)")
    ap.add_argument("--keep", type=Path, help="copy the bundle into this directory")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zoo-build-") as tmp:
        res = build_case(args.model, args.target, args.precision, Path(tmp))
        if args.keep and res["outcome"] == "pass":
            import shutil

            args.keep.mkdir(parents=True, exist_ok=True)
            for b in Path(tmp).glob("*.edgepack"):
                shutil.copy2(b, args.keep / b.name)
    text = json.dumps(res, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
