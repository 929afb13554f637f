#!/bin/bash
# Print the directory of the emulated device: $ARMDEV_DIR if set, else a machine-wide cache keyed by the hash of
# this recipe (build.sh + the packages it installs), so fresh clones (CI) reuse a rootfs built by an earlier run
# and a changed recipe builds a new one beside it.
set -euo pipefail
if [ -n "${ARMDEV_DIR:-}" ]; then echo "$ARMDEV_DIR"; exit 0; fi
H=$(cd "$(dirname "$0")" && pwd)
KEY=$( { cat "$H/build.sh"; echo "${ARMDEV_PIP_PKGS:-}"; echo "${ARMDEV_VARIANT:-}"; } | sha256sum | cut -c1-16)
echo "${EDGEPACK_MACHINE_CACHE:-/var/cache/edgepack}/armdev-$KEY"
