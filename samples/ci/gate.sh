#!/usr/bin/env bash
# The latency/accuracy gate for CI: build the sample's bundles, bench them on a device, compare with the
# committed baseline, write Markdown + JUnit + HTML, and exit non-zero when a check fails.
#
#   samples/ci/gate.sh                      # run from the repository root
#
# Environment (all optional):
#   DEVICE=local | user@host | ssh-alias    where to bench (a Pi next to a self-hosted runner, or this machine)
#   BASELINE=samples/ci/baseline.json       committed baseline; when it is missing, one is recorded (commit it)
#   OUT=out/ci                              bundles, bench JSON and reports
#   REPEAT=5                                independent timing windows per bundle (the gate's statistics)
#   MAX_LATENCY_REGRESSION=5%  MAX_ACCURACY_DROP=0.5  MAX_SIZE_GROWTH=10%   gate limits
#   EXTRA_REPORT_ARGS="--max-p90-ms 40"     more checks;  SSH_ARGS="--known-hosts ci_known_hosts"  for bench
#   EDGEPACK=edgepack                       the edgepack command
# Exit: 0 all checks passed (or a baseline was recorded), 1 a check failed, other: a build/bench/usage error.
set -euo pipefail

EDGEPACK=${EDGEPACK:-edgepack}
DEVICE=${DEVICE:-local}
BASELINE=${BASELINE:-samples/ci/baseline.json}
OUT=${OUT:-out/ci}
REPEAT=${REPEAT:-5}
MAX_LATENCY_REGRESSION=${MAX_LATENCY_REGRESSION:-5%}
MAX_ACCURACY_DROP=${MAX_ACCURACY_DROP:-0.5}
MAX_SIZE_GROWTH=${MAX_SIZE_GROWTH:-10%}
read -r -a extra_report <<<"${EXTRA_REPORT_ARGS:-}"
read -r -a ssh_args <<<"${SSH_ARGS:-}"

mkdir -p "$OUT"
# 1. Build: replace these with your model. Each build is checked against the source framework (exit 4 if not).
sample=samples/digits
"$EDGEPACK" -q build "$sample/model.py:build_model" --input image:1x1x8x8 --eval "$sample/eval.npz" \
    -o "$OUT/digits.onnx.fp32.edgepack" >/dev/null
"$EDGEPACK" -q build "$sample/model.py:build_model" --input image:1x1x8x8 --quantize int8 \
    --calibration "$sample/calib.npz" --eval "$sample/eval.npz" -o "$OUT/digits.onnx.int8.edgepack" >/dev/null

# 2. Bench on the device: REPEAT timing windows each, so run-to-run drift is part of the comparison.
"$EDGEPACK" -q bench "$OUT/digits.onnx.fp32.edgepack" "$OUT/digits.onnx.int8.edgepack" --device "$DEVICE" \
    --repeat "$REPEAT" --cooldown 1 --min-seconds 1 "${ssh_args[@]}" --json "$OUT/bench.json" >/dev/null

# 3. No baseline yet: record one.
if [ ! -f "$BASELINE" ]; then
  "$EDGEPACK" report "$OUT/bench.json" --save-baseline "$BASELINE" -o "$OUT/report.md" 2>/dev/null
  echo "gate: no baseline at $BASELINE; recorded one from this run: commit it"
  exit 0
fi

# 4. Gate: the same checks in every format; exit 1 when one fails.
gate=(--baseline "$BASELINE" --max-latency-regression "$MAX_LATENCY_REGRESSION"
      --max-accuracy-drop "$MAX_ACCURACY_DROP" --max-size-growth "$MAX_SIZE_GROWTH" "${extra_report[@]}")
status=0
for fmt in junit html md; do
  ext=$([ "$fmt" = junit ] && echo junit.xml || echo "$fmt")
  rc=0
  "$EDGEPACK" report "$OUT/bench.json" "${gate[@]}" --format "$fmt" -o "$OUT/report.$ext" 2>/dev/null || rc=$?
  [ "$rc" -le 1 ] || exit "$rc"      # 2+: bad input, not a gate result
  status=$rc
done
cat "$OUT/report.md"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  cat "$OUT/report.md" >> "$GITHUB_STEP_SUMMARY"
fi
exit "$status"
