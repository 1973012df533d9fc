#!/usr/bin/env bash
# Stop a cluster started by slurm-up.sh: its jobs, slurmd, slurmctld (and munged when slurm-up.sh
# started it), then remove DIR.
#
# Usage: slurm-down.sh DIR
set -euo pipefail

DIR=${1:?usage: slurm-down.sh DIR}
export PATH="$PATH:/usr/sbin:/sbin"
[[ -d "$DIR" ]] || exit 0
# A guard against a wrong argument: only a directory that slurm-up.sh made is removed.
if [[ ! -f "$DIR/slurm.conf" || ! -d "$DIR/state" ]]; then
    echo "slurm-down: $DIR is not a slurm-up.sh directory" >&2
    exit 1
fi
export SLURM_CONF="$DIR/slurm.conf"
timeout 10 scancel --user="$(id -un)" 2>/dev/null || true

stop() {  # pid file, then wait up to 10 s for the process to go
    local pid
    pid=$(cat "$1" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
stop "$DIR/slurmd.pid"
stop "$DIR/slurmctld.pid"
# Job steps of this cluster that outlived slurmd (they carry the spool dir's job ids).
pkill -KILL -f "^slurmstepd: \[" 2>/dev/null || true
if [[ -f "$DIR/munged.ours" ]]; then
    stop /run/munge/munged.pid
fi
rm -rf "$DIR"
