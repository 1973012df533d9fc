#!/usr/bin/env bash
# Start a single-node Slurm cluster (munge, slurmctld, slurmd; all as root) whose state, spool,
# logs and pid files live in DIR, for the tests and for trying the Slurm backend on one machine.
#
# Usage: [SLURM_CPUS=N] slurm-up.sh DIR ; then export SLURM_CONF=DIR/slurm.conf
# Needs: apt-get install -y slurm-wlm munge (scripts/install-system-deps.sh does it). Stop it with
# scripts/slurm-down.sh DIR. Prints the seconds it took to reach `idle`.
#
# Choices for a small test machine: proctrack/linuxproc and task/none need no cgroup setup;
# accounting is off (there is no slurmdbd), so `sacct` has nothing: Conveyor reads squeue and
# scontrol; sched_interval=1 and KillWait=5 make scheduling and cancels quick.
set -euo pipefail

DIR=${1:?usage: slurm-up.sh DIR}
HOST=$(hostname)
# SLURM_CPUS above the core count oversubscribes the node (tests of short jobs that mostly wait).
CPUS=${SLURM_CPUS:-$(nproc)}
MEMORY_MB=${SLURM_MEMORY_MB:-$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4))}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-30}
export PATH="$PATH:/usr/sbin:/sbin"

for tool in slurmctld slurmd munged sinfo; do
    command -v "$tool" >/dev/null || { echo "slurm-up: $tool is missing: apt-get install -y slurm-wlm munge" >&2; exit 1; }
done
mkdir -p "$DIR"/{state,spool,log}
cat > "$DIR/slurm.conf" <<CONF
ClusterName=conveyor-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=300
MailProg=/bin/true
$( ((CPUS > $(nproc))) && echo "SlurmdParameters=config_overrides")
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

started=$(date +%s.%N)
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$DIR/munged.ours"
fi
export SLURM_CONF="$DIR/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
deadline=$((SECONDS + READY_TIMEOUT_S))
until sinfo -h -o '%T' 2>/dev/null | grep -q '^idle'; do
    if ((SECONDS >= deadline)); then
        echo "slurm-up: the node is not idle after ${READY_TIMEOUT_S} s; last log lines:" >&2
        tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
awk -v a="$started" -v b="$(date +%s.%N)" -v conf="$SLURM_CONF" 'BEGIN { printf "slurm up in %.2f s: SLURM_CONF=%s\n", b - a, conf }'
