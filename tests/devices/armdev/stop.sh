#!/bin/bash
# Stop the emulated device: per-connection sshd children first, then the listening sshd, by PID.
set -uo pipefail
D=$(bash "$(dirname "$0")/where.sh")
PIDFILE=$D/sshd.pid
[ -f "$PIDFILE" ] || { echo "not running (no $PIDFILE)"; exit 0; }
PID=$(cat "$PIDFILE")
if kill -0 "$PID" 2>/dev/null; then
  for c in $(ps -o pid= --ppid "$PID"); do kill "$c" 2>/dev/null; done
  kill "$PID"
  for i in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$PID" 2>/dev/null && { echo "sshd $PID did not stop on TERM; sending KILL"; kill -9 "$PID"; }
  echo "stopped sshd pid $PID"
else
  echo "sshd pid $PID was not running"
fi
rm -f "$PIDFILE"
