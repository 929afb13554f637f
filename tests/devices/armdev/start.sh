#!/bin/bash
# Bring the emulated aarch64 edge device up: aarch64 sshd (under qemu-user via binfmt_misc) in a chroot of
# $ARMDEV_DIR/rootfs, listening on 127.0.0.1:$ARMDEV_PORT. Mounts live in a private mount namespace
# (they vanish when the device stops). Needs root. Idempotent.
set -euo pipefail
D=$(bash "$(dirname "$0")/where.sh")
R=$D/rootfs
PORT=${ARMDEV_PORT:-2222}
PIDFILE=$D/sshd.pid
mkdir -p "$D/logs"

# binfmt_misc + qemu-aarch64 handler (lost on reboot)
if ! command -v qemu-aarch64-static >/dev/null || ! command -v update-binfmts >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static binfmt-support >/dev/null
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64 | grep -qx enabled || echo 1 >/proc/sys/fs/binfmt_misc/qemu-aarch64
head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64 | grep -qx enabled || { echo "qemu-aarch64 binfmt handler not enabled" >&2; exit 1; }

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "device already running (sshd pid $(cat "$PIDFILE"))"; exit 0
fi

mkdir -p "$R/run/sshd"
# unshare (no --fork) -> sh -> env -> chroot -> sshd all exec in place, so $! is the sshd (qemu) PID.
setsid unshare --mount --uts --propagation private /bin/sh -c '
  set -e; R=$1; D=$2; PORT=$3
  mount --bind "$R" "$R"            # make / a mount point inside the chroot (df, findmnt look sane)
  mount -t proc proc "$R/proc"
  mount --bind "$D/fake_cpuinfo" "$R/proc/cpuinfo"
  mount -t sysfs -o ro sysfs "$R/sys"
  mount --rbind /dev "$R/dev"
  hostname armdev-pi
  exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 QEMU_CPU=cortex-a76 \
    /usr/sbin/chroot "$R" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config.device -o Port="$PORT"
' sh "$R" "$D" "$PORT" >>"$D/logs/sshd.log" 2>&1 </dev/null &
echo $! >"$PIDFILE"

# known_hosts for this port (the host keys are the rootfs's own)
for k in ed25519 ecdsa rsa; do echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$R/etc/ssh/ssh_host_${k}_key.pub")"; done >"$D/keys/known_hosts.$PORT"
SSH="ssh -p $PORT -i $D/keys/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$D/keys/known_hosts.$PORT -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=5"
for i in $(seq 1 60); do
  if $SSH device@127.0.0.1 true 2>/dev/null; then
    echo "device up: sshd pid $(cat "$PIDFILE"), $($SSH device@127.0.0.1 'echo $(hostname) $(uname -m) $(python3 -V)')"
    echo "connect: $SSH device@127.0.0.1"
    exit 0
  fi
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "sshd exited; see $D/logs/sshd.log" >&2; tail -5 "$D/logs/sshd.log" >&2; exit 1; }
  sleep 0.5
done
echo "device did not answer on port $PORT within 30s" >&2; exit 1
