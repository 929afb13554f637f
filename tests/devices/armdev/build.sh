#!/bin/bash
# Build an emulated 64-bit ARM "edge device" (Debian bookworm arm64, Raspberry-Pi-5-like CPU model)
# that runs under qemu-user (binfmt_misc) in a chroot and is reachable with SSH on 127.0.0.1:$ARMDEV_PORT.
# Needs root (debootstrap, chroot, mount, binfmt_misc). Everything is written under $ARMDEV_DIR.
# Usage: sudo tests/devices/armdev/build.sh   (then start.sh / stop.sh; tests/devices/armdev.py drives them)
set -euo pipefail

D=$(bash "$(dirname "$0")/where.sh")
R=$D/rootfs
# default: the first Debian mirror this host's apt already uses
HOST_URIS=$(grep -hE "^(URIs:|deb )" /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -oE "https?://[^ ]+" || true)
MIRROR=${ARMDEV_MIRROR:-$(echo "$HOST_URIS" | grep -v -- -security | head -1)}
SECURITY_MIRROR=${ARMDEV_SECURITY_MIRROR:-$(echo "$HOST_URIS" | grep -- -security | head -1)}
SUITE=bookworm
VARIANT=${ARMDEV_VARIANT:-}                 # "" (debootstrap default) or "minbase"
PIP_PKGS=${ARMDEV_PIP_PKGS:-"numpy==2.4.6 ai-edge-litert==2.3.0 onnxruntime==1.32.0"}
HOST_APT=${ARMDEV_HOST_APT:-1}              # 0: skip host apt-get (packages already there)

mkdir -p "$D/logs" "$D/keys"
T0=$(date +%s)
stage() { local now; now=$(date +%s); echo "[build] $(date +%T) +$((now - T0))s  $*" | tee -a "$D/logs/build_times.log"; }

# Run a command inside the arm64 rootfs with /proc (+ fake ARM /proc/cpuinfo), /sys, /dev mounted in a
# private mount namespace, so that nothing stays mounted on the host afterwards.
in_rootfs() {
  unshare --mount --propagation private /bin/sh -c '
    set -e; R=$1; D=$2; shift 2
    mount --bind "$R" "$R"
    mount -t proc proc "$R/proc"
    [ -f "$D/fake_cpuinfo" ] && mount --bind "$D/fake_cpuinfo" "$R/proc/cpuinfo"
    mount -t sysfs -o ro sysfs "$R/sys"
    mount --rbind /dev "$R/dev"
    exec env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive QEMU_CPU=cortex-a76 \
      PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      ${ARMDEV_PIP_INDEX_URL:+PIP_INDEX_URL=$ARMDEV_PIP_INDEX_URL} \
      /usr/sbin/chroot "$R" "$@"' sh "$R" "$D" "$@"
}

stage "0. host packages"
if [ "$HOST_APT" = 1 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-user-static binfmt-support debootstrap openssh-client util-linux ca-certificates >/dev/null
fi

stage "1. binfmt_misc"
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64
head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64 | grep -qx enabled
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64   # F = interpreter pinned, works inside chroots

stage "2. debootstrap first stage (host)"
if [ ! -e "$R/bin/sh" ]; then
  debootstrap --arch=arm64 --foreign ${VARIANT:+--variant=$VARIANT} "$SUITE" "$R" "$MIRROR" >"$D/logs/debootstrap1.log"
fi
stage "3. debootstrap second stage (emulated)"
if [ -d "$R/debootstrap" ]; then
  chroot "$R" /debootstrap/debootstrap --second-stage >"$D/logs/debootstrap2.log"
fi
[ "$(chroot "$R" /usr/bin/uname -m)" = aarch64 ]

stage "4. rootfs config"
cat >"$R/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod 755 "$R/usr/sbin/policy-rc.d"   # no daemons from postinst
cp /etc/resolv.conf "$R/etc/resolv.conf"
echo armdev-pi >"$R/etc/hostname"
grep -q armdev-pi "$R/etc/hosts" || echo "127.0.1.1 armdev-pi" >>"$R/etc/hosts"
# extra CAs of this host (TLS-intercepting proxies); harmless when there are none
mkdir -p "$R/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/" 2>/dev/null || true
# qemu-user shows the host's x86 /proc/cpuinfo; pytorch-cpuinfo (inside onnxruntime) segfaults on it.
# Provide a Raspberry Pi 5 style one (Cortex-A76 = QEMU_CPU model used everywhere here).
NCPU=$(getconf _NPROCESSORS_CONF)
{ for i in $(seq 0 $((NCPU - 1))); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$i"
  done
  printf 'Revision\t: d04170\nSerial\t\t: 0000000000000000\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0 (qemu-user emulated)\n'; } >"$D/fake_cpuinfo"

stage "5. apt install in rootfs (emulated)"
in_rootfs apt-get update -qq
in_rootfs apt-get install -y -qq --no-install-recommends \
  python3 python3-venv python3-pip openssh-server openssh-sftp-server ca-certificates >"$D/logs/apt_rootfs.log"
in_rootfs update-ca-certificates >/dev/null
in_rootfs apt-get clean

stage "6. venv + pip install in rootfs (emulated)"
[ -x "$R/opt/venv/bin/python3" ] || in_rootfs /usr/bin/python3 -m venv /opt/venv
in_rootfs /opt/venv/bin/pip install --no-cache-dir --progress-bar off $PIP_PKGS >"$D/logs/pip_rootfs.log"
in_rootfs /opt/venv/bin/python3 -c 'import platform, numpy, onnxruntime; from ai_edge_litert.interpreter import Interpreter; print("rootfs ok:", platform.machine(), numpy.__version__, onnxruntime.__version__)'

stage "7. ssh user, keys, sshd config"
in_rootfs id device >/dev/null 2>&1 || in_rootfs useradd -m -s /bin/bash device
in_rootfs usermod -p '*' device            # no password, but not "locked" (sshd with UsePAM=no refuses locked accounts)
[ -f "$D/keys/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C armdev-test -f "$D/keys/id_ed25519"
DUID=$(in_rootfs id -u device); DGID=$(in_rootfs id -g device)
install -d -m 700 -o "$DUID" -g "$DGID" "$R/home/device/.ssh"
install -m 600 -o "$DUID" -g "$DGID" "$D/keys/id_ed25519.pub" "$R/home/device/.ssh/authorized_keys"
[ -f "$R/etc/ssh/ssh_host_ed25519_key" ] || in_rootfs ssh-keygen -A
cat >"$R/etc/ssh/sshd_config.device" <<'EOF'
# armdev: emulated aarch64 sshd, loopback only. Port/ListenAddress can be overridden with sshd -o.
Port 2222
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
HostKey /etc/ssh/ssh_host_rsa_key
PidFile /run/sshd-device.pid
PermitRootLogin no
AllowUsers device
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
# python3 = the venv with numpy/onnxruntime/ai-edge-litert; keep the Cortex-A76 CPU model for every emulated child
SetEnv PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin QEMU_CPU=cortex-a76
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
EOF
mkdir -p "$R/run/sshd"; chmod 755 "$R/run/sshd"
in_rootfs /usr/sbin/sshd -t -f /etc/ssh/sshd_config.device
PORT=${ARMDEV_PORT:-2222}
for k in ed25519 ecdsa rsa; do echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$R/etc/ssh/ssh_host_${k}_key.pub")"; done >"$D/keys/known_hosts"

stage "done; rootfs size: $(du -shx "$R" | cut -f1)"
