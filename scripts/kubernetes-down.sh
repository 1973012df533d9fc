#!/usr/bin/env bash
# Stop a cluster started by kubernetes-up.sh, undo what it changed outside DIR, and remove DIR.
#
# Usage: [KUBE_DOWN_KEEP_DIR=1] kubernetes-down.sh DIR
# Order: the kubelet (SIGKILL, so it restarts nothing), every container through containerd (ctr kill + delete,
# which also unmounts their root filesystems), then the control plane and containerd, then a sweep:
# leftover shims of this containerd, any process still in the cluster's own cgroupRoot, mounts under
# DIR (pod volumes, netns, rootfs), the CNI bridge, the cgroups, the sysctls the kubelet rewrote, and
# what the kubelet leaves in /var/log/containers and /var/lib/kubelet. Only processes whose command
# line names DIR (or this cluster's containerd socket) are signalled. Idempotent.
# KUBE_DOWN_KEEP_DIR=1 stops everything but keeps DIR (kubernetes-up.sh uses it on failure, for the logs).
set -euo pipefail

DIR=${1:?usage: kubernetes-down.sh DIR}
KEEP=${KUBE_DOWN_KEEP_DIR:-0}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-15}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

[[ -d "$DIR" ]] || exit 0
DIR=$(cd "$DIR" && pwd)
# A guard against a wrong argument: only a directory that kubernetes-up.sh made is touched.
if [[ ! -f "$DIR/.kubernetes-up" || ! -d "$DIR/run" ]]; then
    echo "kubernetes-down: $DIR is not a kubernetes-up.sh directory" >&2
    exit 1
fi
started=$(date +%s.%N)
setting() { sed -n "s/^$1=//p" "$DIR/cluster.env" 2>/dev/null; }
SOCK=$(setting CONTAINERD_ADDRESS)
CGROUP_ROOT=$(setting KUBE_CGROUP_ROOT)
BRIDGE=$(setting KUBE_BRIDGE)

# The pid of a daemon of this cluster, from its pid file, only while that process still names DIR
# on its command line (a stale pid file may name someone else's process by now).
our_pid() {
    local pid
    pid=$(cat "$DIR/run/$1.pid" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$DIR/" && echo "$pid"
}
# Running, not a zombie: the daemons are not our children, and whoever reaps them may take a while.
running() { [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" =~ ^[^ZX]$ ]]; }
stop() {  # stop SIGNAL NAME...: SIGNAL to each, then wait STOP_TIMEOUT_S for all, then SIGKILL
    local signal=$1 name pid pids=()
    shift
    for name in "$@"; do
        pid=$(our_pid "$name") || continue
        kill "-$signal" "$pid" 2>/dev/null && pids+=("$pid")
    done
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    for pid in "${pids[@]}"; do
        while running "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# SIGKILL for the Kubernetes daemons: the cluster is thrown away, and their graceful stops take
# 2-3 s each (the API server drains, the kubelet syncs); containerd is still needed below.
stop KILL kubelet
if [[ -n "$SOCK" && -S "$SOCK" ]] && our_pid containerd >/dev/null; then
    ctr=(timeout 10 ctr -a "$SOCK" -n k8s.io)
    tasks=$("${ctr[@]}" tasks ls -q 2>/dev/null || true)
    for id in $tasks; do "${ctr[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $tasks; do "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
fi
stop KILL kube-controller-manager kube-scheduler kube-apiserver etcd
stop TERM containerd

# Shims outlive containerd by design; those of this cluster name its socket.
if [[ -n "$SOCK" ]]; then
    for proc in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline") || continue
        [[ "$cmd" == *containerd-shim* && "$cmd" == *"-address $SOCK "* ]] && kill -KILL "${proc#/proc/}" 2>/dev/null || true
    done
fi
# Whatever still runs in the cluster's cgroupRoot is one of its containers.
mounts=()
if [[ -n "$CGROUP_ROOT" ]]; then
    mapfile -t mounts < <(awk -v r="$CGROUP_ROOT" '($3 == "cgroup" || $3 == "cgroup2") { print $2 "/" r }' /proc/mounts)
    for _ in $(seq 1 50); do
        left=0
        for m in "${mounts[@]}"; do
            [[ -d "$m" ]] || continue
            while read -r pid; do
                [[ -n "$pid" ]] && { kill -KILL "$pid" 2>/dev/null || true; left=1; }
            done < <(find "$m" -name cgroup.procs -exec cat {} + 2>/dev/null)
        done
        ((left)) || break
        sleep 0.1
    done
fi
# Pod volumes (tmpfs), netns bind mounts, container root filesystems: deepest first.
while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || echo "kubernetes-down: cannot unmount $mnt" >&2
done < <(awk -v d="$DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
if [[ -n "$BRIDGE" ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE" 2>/dev/null || true
fi
for m in "${mounts[@]}"; do
    [[ -d "$m" ]] && find "$m" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

# The kubelet links every container's log into /var/log/containers (a constant): this cluster's links.
if [[ -d /var/log/containers ]]; then
    for link in /var/log/containers/*; do
        [[ -L "$link" && "$(readlink "$link")" == "$DIR/"* ]] && rm -f "$link"
    done
fi
# What the kubelets changed host-wide (see kubernetes-up.sh), put back by the last cluster to stop:
# the sysctls, unless someone changed them since, and /var/log/containers and /var/lib/kubelet
# (device-plugins/kubelet.sock, another constant) when the first kubelet made them.
HOST_RECORD=/run/conveyor-kubernetes
if [[ -f "$HOST_RECORD/sysctl.orig" ]]; then
    (
        flock 9
        for proc in /proc/[0-9]*; do
            # Another cluster's (or anyone's) kubelet; ours may linger as a zombie for a moment.
            [[ "$(cat "$proc/comm" 2>/dev/null)" == kubelet ]] && running "${proc#/proc/}" && exit 0
        done
        [[ -f "$HOST_RECORD/sysctl.orig" ]] || exit 0
        declare -A kubelet_value=([vm.overcommit_memory]=1 [vm.panic_on_oom]=0 [kernel.panic]=10 [kernel.panic_on_oops]=1
            [kernel.keys.root_maxkeys]=1000000 [kernel.keys.root_maxbytes]=25000000)
        while IFS='=' read -r key value; do
            if [[ "$(sysctl -n "$key" 2>/dev/null)" == "${kubelet_value[$key]:-}" ]]; then sysctl -qw "$key=$value" || true; fi
        done <"$HOST_RECORD/sysctl.orig"
        if [[ -f "$HOST_RECORD/made-var-log-containers" ]]; then rmdir /var/log/containers 2>/dev/null || true; fi
        if [[ -f "$HOST_RECORD/made-var-lib-kubelet" && -d /var/lib/kubelet ]]; then
            rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
            find /var/lib/kubelet -depth -type d -exec rmdir {} + 2>/dev/null || true
        fi
        rm -f "$HOST_RECORD/sysctl.orig" "$HOST_RECORD/made-var-log-containers" "$HOST_RECORD/made-var-lib-kubelet"
    ) 9>"$HOST_RECORD/lock"
fi

if [[ "$KEEP" != 1 ]]; then
    rm -rf "$DIR"
fi
awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "kubernetes down in %.1f s\n", b - a }'
