#!/bin/bash
# Add a layer (tests/devices/armdev/layers/NAME.sh: packages for one more runtime) to the built emulated device.
# Usage: sudo tests/devices/armdev/layer.sh NAME      (after build.sh; idempotent)
#
# The base rootfs is keyed by build.sh's hash (where.sh); a layer is keyed by its own script's hash, recorded as
# $DIR/layers/NAME.<hash>. So a new runtime for the device costs its own install (minutes under qemu), not a
# rebuild of the whole device (~17 min), and a changed layer script is applied again on the next run.
set -euo pipefail
H=$(cd "$(dirname "$0")" && pwd)
NAME=${1:?usage: layer.sh NAME (one of: $(cd "$H/layers" && ls | sed 's/\.sh$//' | tr '\n' ' '))}
RECIPE=$H/layers/$NAME.sh
[ -f "$RECIPE" ] || { echo "layer.sh: no layer $NAME (fix: one of $(cd "$H/layers" && ls | sed 's/\.sh$//' | tr '\n' ' '))" >&2; exit 2; }
D=$(bash "$H/where.sh")
R=$D/rootfs
[ -x "$R/opt/venv/bin/python3" ] || { echo "layer.sh: the device is not built (fix: sudo $H/build.sh first)" >&2; exit 2; }
KEY=$(sha256sum "$RECIPE" | cut -c1-16)
STAMP=$D/layers/$NAME.$KEY
if [ -f "$STAMP" ]; then echo "layer $NAME is applied ($STAMP)"; exit 0; fi

# in_rootfs: the very function build.sh runs its stages with (one definition, read from build.sh)
eval "$(sed -n '/^in_rootfs() {$/,/^}$/p' "$H/build.sh")"
declare -F in_rootfs >/dev/null || { echo "layer.sh: in_rootfs not found in build.sh" >&2; exit 1; }

mkdir -p "$D/layers" "$D/logs"
T0=$(date +%s)
install -m 755 "$RECIPE" "$R/tmp/edgepack-layer-$NAME.sh"
trap 'rm -f "$R/tmp/edgepack-layer-$NAME.sh"' EXIT
if ! in_rootfs /bin/sh "/tmp/edgepack-layer-$NAME.sh" >"$D/logs/layer-$NAME.log" 2>&1; then
  tail -5 "$D/logs/layer-$NAME.log" >&2
  echo "layer.sh: layer $NAME failed (log: $D/logs/layer-$NAME.log)" >&2
  exit 1
fi
rm -f "$D/layers/$NAME".*
tail -1 "$D/logs/layer-$NAME.log" >"$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
echo "layer $NAME applied in $(( $(date +%s) - T0 ))s: $(cat "$STAMP")"
