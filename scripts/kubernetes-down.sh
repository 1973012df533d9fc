#!/usr/bin/env bash
# Stop a cluster started by kubernetes-up.sh, undo what it changed outside DIR, and remove DIR.
#
# Usage: [KUBE_DOWN_KEEP_DIR=1] kubernetes-down.sh DIR
# Order: the kubelet (so it restarts nothing), every container through containerd (ctr kill + delete,
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
setting() { sed -n "s/^$1=//p" "$DIR/cluster.env" 2>/dev/null; }
SOCK=$(setting CONTAINERD_ADDRESS)
CGROUP_ROOT=$(setting KUBE_CGROUP_ROOT)
BRIDGE=$(setting KUBE_BRIDGE)

# The pid of a daemon of this cluster, from its pid file, only while that process still names DIR
# on its command line (a stale pid file may name someone else's process by now).
our_pid() {
    local pid
    pid=$(cat "$DIR/run/$1.pid" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR" && echo "$pid"
}
stop() {  # stop NAME...: SIGTERM to each, then wait STOP_TIMEOUT_S for all, then SIGKILL
    local name pid pids=()
    for name in "$@"; do
        pid=$(our_pid "$name") || continue
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

stop kubelet
if [[ -n "$SOCK" && -S "$SOCK" ]] && our_pid containerd >/dev/null; then
    ctr=(timeout 10 ctr -a "$SOCK" -n k8s.io)
    tasks=$("${ctr[@]}" tasks ls -q 2>/dev/null || true)
    for id in $tasks; do "${ctr[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $tasks; do "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
fi
stop kube-controller-manager kube-scheduler
stop kube-apiserver
stop etcd containerd

# Shims outlive containerd by design; those of this cluster name its socket.
if [[ -n "$SOCK" ]]; then
    for proc in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
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

# The sysctls the kubelet set (see kubernetes-up.sh): back to what they were, unless another kubelet
# runs on this machine (it wants them the same way) or someone else changed them since.
if [[ -f "$DIR/sysctl.orig" ]]; then
    other_kubelet=false
    for proc in /proc/[0-9]*; do
        [[ "$(cat "$proc/comm" 2>/dev/null)" == kubelet ]] && other_kubelet=true && break
    done
    declare -A kubelet_value=([vm.overcommit_memory]=1 [vm.panic_on_oom]=0 [kernel.panic]=10 [kernel.panic_on_oops]=1
        [kernel.keys.root_maxkeys]=1000000 [kernel.keys.root_maxbytes]=25000000)
    if ! $other_kubelet; then
        while IFS='=' read -r key value; do
            [[ "$(sysctl -n "$key" 2>/dev/null)" == "${kubelet_value[$key]:-}" ]] && sysctl -qw "$key=$value" || true
        done <"$DIR/sysctl.orig"
    fi
    rm -f "$DIR/sysctl.orig"
fi
# The kubelet links every container's log into /var/log/containers (a constant) and keeps its
# device-plugin socket in /var/lib/kubelet/device-plugins (another one).
if [[ -d /var/log/containers ]]; then
    for link in /var/log/containers/*; do
        [[ -L "$link" && "$(readlink "$link")" == "$DIR/"* ]] && rm -f "$link"
    done
    [[ -f "$DIR/made-var-log-containers" ]] && rmdir /var/log/containers 2>/dev/null || true
fi
if [[ -f "$DIR/made-var-lib-kubelet" && -d /var/lib/kubelet ]]; then
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
    find /var/lib/kubelet -depth -type d -exec rmdir {} + 2>/dev/null || true
fi

if [[ "$KEEP" != 1 ]]; then
    rm -rf "$DIR"
fi
