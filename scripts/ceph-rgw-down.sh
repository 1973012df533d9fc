#!/usr/bin/env bash
# Stop a cluster started by ceph-rgw-up.sh and remove its directory.
#
# Usage: ceph-rgw-down.sh DIR
# Only the processes whose pid files are in DIR/run are signalled, and with SIGKILL: the cluster's
# data is on memstore, gone at any stop, so a clean shutdown would keep nothing, and it is slow
# (each daemon lingers ~2 s after SIGTERM; the OSD then waits 5 s for a monitor that may be gone).
set -euo pipefail

DIR=${1:?usage: ceph-rgw-down.sh DIR}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-10}

[[ -d "$DIR" ]] || exit 0
# A guard against a wrong argument: only a directory that ceph-rgw-up.sh made is removed.
if [[ ! -f "$DIR/ceph.conf" || ! -d "$DIR/run" ]]; then
    echo "ceph-rgw-down: $DIR is not a ceph-rgw-up.sh directory" >&2
    exit 1
fi

pids=()
shopt -s nullglob
for file in "$DIR"/run/*.pid; do
    pid=$(cat "$file" 2>/dev/null || true)
    # kill -0 first: a pid file of a daemon that already exited may name someone else's process
    # by now; a live ceph daemon of this cluster has this directory's config on its command line.
    if [[ "$pid" =~ ^[0-9]+$ ]] && grep -qF "$DIR/ceph.conf" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null && pids+=("$pid")
    fi
done

deadline=$((SECONDS + STOP_TIMEOUT_S))
for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
done
rm -rf "$DIR"
