#!/usr/bin/env bash
# Start a throw-away single-node Kubernetes cluster for tests and local trials: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, and a real kubelet on Debian's containerd + runc + CNI
# bridge, so that pods really run. Everything listens on 127.0.0.1 only, on free ports.
#
# Usage: [KUBE_BIN=...] [KUBE_KUBELET=0] kubernetes-up.sh DIR
#   DIR           all state: PKI, kubeconfigs, etcd data, containerd root/state/socket, the kubelet's root
#                 dir, pod logs, logs and pid files. Must be absent or empty.
#   KUBE_BIN      the binaries of scripts/build-kubernetes.sh (default /var/cache/conveyor/kubernetes/bin)
#   KUBE_KUBELET  0: control plane only (no containerd, no node: Jobs get pods that stay Pending)
# Prints one line once the API is ready, the node is Ready and the default service account exists.
# Then: DIR/kubeconfig (cluster admin), DIR/cluster.env (KUBECONFIG, KUBE_APISERVER, CONTAINERD_ADDRESS,
# ...) and two local images in containerd's k8s.io namespace: localhost/busybox:local (for Jobs, with
# imagePullPolicy: Never; nothing can be pulled here) and localhost/pause:local (the sandbox image).
# More images: ctr -a DIR/containerd/containerd.sock -n k8s.io images import IMAGE.tar
# Stop with scripts/kubernetes-down.sh DIR. Needs root, the Debian packages containerd, runc,
# containernetworking-plugins, busybox-static, openssl, curl (scripts/install-system-deps.sh), python3.
#
# Pods on the CNI bridge get a 10.244.x.y address with no route out (no gateway, no masquerade, no
# kube-proxy): run test pods with hostNetwork: true to reach services on 127.0.0.1.
# Outside DIR the cluster touches: cgroups under /sys/fs/cgroup/*/conveyor-k8s-<id> (its own
# cgroupRoot), a bridge link k8sbr<id>, the kubelet's sysctls (vm.overcommit_memory=1,
# kernel.panic=10, kernel.panic_on_oops=1, ...), /var/log/containers (a constant in the kubelet),
# /var/lib/kubelet/device-plugins (a constant too), containerd's shim sockets in /run/containerd/s
# (removed as the shims exit) and /run/conveyor-kubernetes (what to restore). kubernetes-down.sh undoes
# them; the host-wide ones when the last cluster on the machine stops. See scripts/KUBERNETES-NOTES.md.
set -euo pipefail

DIR=${1:?usage: kubernetes-up.sh DIR}
KUBE_BIN=${KUBE_BIN:-/var/cache/conveyor/kubernetes/bin}
KUBELET=${KUBE_KUBELET:-1}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-180}
NODE_NAME=localhost
# Shared by the clusters on this machine: what the kubelets change outside their DIRs (see below).
HOST_RECORD=/run/conveyor-kubernetes
SERVICE_CIDR=10.96.0.0/24
SERVICE_IP=10.96.0.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "kubernetes-up: $*" >&2; exit 1; }

tools=(openssl curl python3 base64 setsid)
if ((KUBELET)); then tools+=(containerd ctr runc ip flock sysctl); fi
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-system-deps.sh installs the system packages)"
done
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler)
((KUBELET)) && binaries+=(kubelet)
for b in "${binaries[@]}"; do
    [[ -x "$KUBE_BIN/$b" ]] || die "$KUBE_BIN/$b is missing: scripts/build-kubernetes.sh $(dirname "$KUBE_BIN")"
done
if ((KUBELET)); then
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
        die "CNI plugins missing in /usr/lib/cni: apt-get install -y containernetworking-plugins"
    ((EUID == 0)) || die "the kubelet and containerd need root"
fi
# Never `rm -rf` a directory we did not make: a wrong argument must not cost anyone their files.
if [[ -e "$DIR" && -n "$(ls -A "$DIR")" ]]; then
    die "$DIR is not empty; give a new directory (kubernetes-down.sh removes an old cluster's)"
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# The marker kubernetes-down.sh looks for before it removes anything.
echo "made by kubernetes-up.sh $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$DIR/.kubernetes-up"
mkdir -p "$DIR"/{pki,run,log,etcd,kubeconfigs}

started=$(date +%s.%N)
elapsed() { awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# On failure, stop whatever did start; DIR stays for its logs (kubernetes-down.sh removes it).
ready=false
on_exit() {
    $ready && return
    echo "kubernetes-up: failed after $(elapsed) s; stopping what started; logs in $DIR/log" >&2
    KUBE_DOWN_KEEP_DIR=1 "$HERE/kubernetes-down.sh" "$DIR" >&2 || true
}
trap on_exit EXIT

read -r ETCD_PORT ETCD_PEER_PORT API_PORT CM_PORT SCHED_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
API="https://127.0.0.1:$API_PORT"
# Names outside DIR carry a random id (not a port, which a later cluster may get again while an old
# DIR waits for kubernetes-down.sh): the cgroupRoot and the bridge (at most 15 characters).
ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
CGROUP_ROOT=conveyor-k8s-$ID
BRIDGE=k8sbr$ID
# No route or address on the host side, so two clusters with the same subnet do not meet.
POD_SUBNET=10.244.$((16#${ID:0:2} % 250)).0/24
SOCK="$DIR/containerd/containerd.sock"
{
    echo "KUBECONFIG=$DIR/kubeconfig"
    echo "KUBE_APISERVER=$API"
    echo "ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT"
    echo "KUBE_KUBELET=$KUBELET"
    if ((KUBELET)); then
        echo "KUBE_NODE_NAME=$NODE_NAME"
        echo "CONTAINERD_ADDRESS=$SOCK"
        echo "CONTAINERD_NAMESPACE=k8s.io"
        echo "KUBE_CGROUP_ROOT=$CGROUP_ROOT"
        echo "KUBE_BRIDGE=$BRIDGE"
    fi
} >"$DIR/cluster.env"

# ---- PKI: one EC P-256 CA signs every certificate (EC keys take milliseconds, RSA ones ~0.1 s) ----
pki() {
    cd "$DIR/pki"
    printf '[req]\ndistinguished_name = dn\n[dn]\n[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier = hash\n' >openssl.cnf
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -subj /CN=conveyor-kubernetes-ca -days 3650 -config openssl.cnf -extensions ca -out ca.crt
    leaf() {  # leaf NAME SUBJECT serverAuth|clientAuth [SANS]
        openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
        openssl req -new -key "$1.key" -subj "$2" -config openssl.cnf -out "$1.csr"
        {
            echo "basicConstraints = critical,CA:FALSE"
            echo "keyUsage = critical,digitalSignature,keyEncipherment"
            echo "extendedKeyUsage = $3"
            [[ -z "${4:-}" ]] || echo "subjectAltName = $4"
        } >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 15)" -days 365 \
            -extfile "$1.ext" -out "$1.crt" 2>/dev/null
        rm -f "$1.csr" "$1.ext"
    }
    leaf apiserver /CN=kube-apiserver serverAuth \
        "IP:127.0.0.1,DNS:localhost,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    leaf admin "/O=system:masters/CN=conveyor-admin" clientAuth
    leaf controller-manager /CN=system:kube-controller-manager clientAuth
    leaf scheduler /CN=system:kube-scheduler clientAuth
    leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    leaf kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
    leaf kubelet-serving "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,IP:127.0.0.1"
    # The service-account token signing key pair (ES256).
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
}
(pki) >"$DIR/log/pki.log" 2>&1 || die "making the PKI failed; see $DIR/log/pki.log"

kubeconfig() {  # kubeconfig FILE CERT_NAME: certificates embedded, so the file can be copied anywhere
    local b64="base64 -w0"
    cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: conveyor
  cluster:
    server: $API
    certificate-authority-data: $($b64 "$DIR/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 "$DIR/pki/$2.crt")
    client-key-data: $($b64 "$DIR/pki/$2.key")
contexts:
- name: conveyor
  context: {cluster: conveyor, user: $2}
current-context: conveyor
KC
    chmod 600 "$1"
}
kubeconfig "$DIR/kubeconfig" admin
for c in controller-manager scheduler kubelet; do kubeconfig "$DIR/kubeconfigs/$c.kubeconfig" "$c"; done

start() {  # start NAME CMD...: in its own session, output to DIR/log/NAME.log, pid in DIR/run/NAME.pid
    local name=$1
    shift
    setsid "$@" </dev/null >"$DIR/log/$name.log" 2>&1 &
    echo $! >"$DIR/run/$name.pid"
    disown  # no "Killed" job notice when kubernetes-down.sh stops it while this script still runs
}
alive() { kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }
wait_for() {  # wait_for WHAT DAEMON CHECK...: polls CHECK every 0.1 s; dies when DAEMON exits or time runs out
    local what=$1 daemon=$2 deadline=$((SECONDS + READY_TIMEOUT_S))
    shift 2
    until "$@" >/dev/null 2>&1; do
        alive "$daemon" || { tail -n 20 "$DIR/log/$daemon.log" >&2; die "$daemon exited before $what"; }
        ((SECONDS < deadline)) || { tail -n 20 "$DIR/log/$daemon.log" >&2; die "no $what within $READY_TIMEOUT_S s"; }
        sleep 0.1
    done
}
api() {  # api PATH: GET as the admin, body on stdout, fails on HTTP errors
    curl -sf --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" "$API$1"
}

# ---- containerd first: it starts while the control plane does ----
if ((KUBELET)); then
    mkdir -p "$DIR"/{containerd,cni/net.d,cni/ipam,cni/cache,kubelet,pod-logs,images}
    cat >"$DIR/containerd/config.toml" <<TOML
# containerd for one kubelet; its own root, state and socket, so it never meets another containerd
# (dockerd's, or the default /run/containerd one).
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
# The devmapper/btrfs/zfs/aufs snapshotters and the restart monitor are of no use here.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.restart", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Never pulled: scripts/kubernetes-images.py builds it, and this script imports it.
  sandbox_image = "localhost/pause:local"
  # No CAP_SYS_RESOURCE here: a negative oom_score_adj (-998 for sandboxes) fails with EACCES
  # and runc's create with it; with this, negative values are clamped to the current one.
  restrict_oom_score_adj = true
  disable_apparmor = true
  # Pod network namespaces under state/ instead of /run/netns: kubernetes-down.sh finds them there.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        # No systemd (PID 1 is not systemd): the kubelet and runc both use cgroupfs.
        SystemdCgroup = false
TOML
    # One bridge, no gateway and no masquerade: pods get an address, nothing is routed or NATed, no
    # sysctl (ip_forward) or iptables rule changes. Test pods use hostNetwork.
    cat >"$DIR/cni/net.d/10-conveyor.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "conveyor-k8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "dataDir": "$DIR/cni/ipam"}
    }
  ]
}
JSON
    start containerd containerd --config "$DIR/containerd/config.toml" --log-level warn
fi

# ---- etcd and the API server ----
# --unsafe-no-fsync: a throw-away store; nothing survives kubernetes-down.sh anyway.
start etcd "$KUBE_BIN/etcd" --name conveyor --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "conveyor=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn
P="$DIR/pki"
# --endpoint-reconciler-type=none: the API advertises 127.0.0.1, which an Endpoints object may not
# hold; nothing in the cluster uses the kubernetes Service (there is no kube-proxy).
# --kubelet-preferred-address-types=Hostname: the kubelet's InternalIP is the host's eth0 address;
# the API reaches it (logs, exec) at its hostname, localhost, and checks its serving certificate.
start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$API_PORT" --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$P/ca.crt" --kubelet-preferred-address-types=Hostname \
    --allow-privileged=true --profiling=false --cert-dir="$P/apiserver-generated"

if ((KUBELET)); then
    wait_for "containerd socket" containerd ctr -a "$SOCK" version
    python3 "$HERE/kubernetes-images.py" "$DIR/images/local.tar" >/dev/null
    ctr -a "$SOCK" -n k8s.io images import "$DIR/images/local.tar" >"$DIR/log/images.log" 2>&1 ||
        die "ctr images import failed; see $DIR/log/images.log"
    # The kubelet's cgroupRoot must exist in every hierarchy; its own kubepods tree goes below it.
    # cgroup v1 cpuset: a new group has no CPUs or memory nodes until its parent's are copied in.
    while read -r mnt; do
        mkdir -p "$mnt/$CGROUP_ROOT"
        if [[ -f "$mnt/cpuset.cpus" ]]; then
            cat "$mnt/cpuset.cpus" >"$mnt/$CGROUP_ROOT/cpuset.cpus"
            cat "$mnt/cpuset.mems" >"$mnt/$CGROUP_ROOT/cpuset.mems"
        fi
    done < <(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/mounts)
    # The kubelet rewrites six sysctls (it cannot be told not to: protectKernelDefaults only turns the
    # rewrite into a refusal to start), and creates /var/log/containers and /var/lib/kubelet (constants).
    # What they were before the first of the clusters running on this machine is kept in HOST_RECORD
    # (tmpfs: a reboot resets the sysctls too); the last kubernetes-down.sh puts it back.
    mkdir -p "$HOST_RECORD"
    (
        flock 9
        if [[ ! -f "$HOST_RECORD/sysctl.orig" ]]; then
            for s in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
                echo "$s=$(sysctl -n "$s")"
            done >"$HOST_RECORD/sysctl.orig.new"
            mv "$HOST_RECORD/sysctl.orig.new" "$HOST_RECORD/sysctl.orig"
            [[ -e /var/log/containers ]] || touch "$HOST_RECORD/made-var-log-containers"
            [[ -e /var/lib/kubelet ]] || touch "$HOST_RECORD/made-var-lib-kubelet"
        fi
    ) 9>"$HOST_RECORD/lock"
    cat >"$DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
# Only the API server's client certificate (signed by the cluster CA) gets in.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
# cgroup v1 (hybrid) here: 1.34 only warns; 1.35 would refuse without this.
failCgroupV1: false
failSwapOn: false
podLogsDir: $DIR/pod-logs
# Else the kubelet creates /usr/libexec/kubernetes/kubelet-plugins/volume/exec.
volumePluginDir: $DIR/kubelet/volume-plugins
# No CAP_SYS_RESOURCE: the kubelet can neither lower its oom_score_adj nor raise the nofile hard limit.
oomScoreAdj: 0
maxOpenFiles: $(ulimit -Hn)
makeIPTablesUtilChains: false
# The disk is shared with other test runs: evict nothing and collect no images because of them.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
clusterDomain: cluster.local
YAML
fi

wait_for "API server readiness" kube-apiserver api /readyz
api_ready=$(elapsed)

start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig="$DIR/kubeconfigs/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/kubeconfigs/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/kubeconfigs/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$CM_PORT" --cert-dir="$P/controller-manager-generated" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" --profiling=false \
    --flex-volume-plugin-dir="$DIR/kubelet/volume-plugins" --kube-api-qps=200 --kube-api-burst=400
start kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig="$DIR/kubeconfigs/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/kubeconfigs/scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/kubeconfigs/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false --profiling=false \
    --kube-api-qps=200 --kube-api-burst=400
if ((KUBELET)); then
    start kubelet "$KUBE_BIN/kubelet" --config="$DIR/kubelet/config.yaml" \
        --kubeconfig="$DIR/kubeconfigs/kubelet.kubeconfig" --root-dir="$DIR/kubelet" \
        --hostname-override="$NODE_NAME" --v=1
fi

node_ready() {
    api "/api/v1/nodes/$NODE_NAME" | python3 -c '
import json, sys
conds = json.load(sys.stdin).get("status", {}).get("conditions", [])
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in conds) else 1)'
}
if ((KUBELET)); then
    wait_for "node $NODE_NAME Ready" kubelet node_ready
    node_ready_at=", node Ready at $(elapsed) s"
fi
wait_for "scheduler health" kube-scheduler curl -sfk "https://127.0.0.1:$SCHED_PORT/healthz"
# The default service account appears once the controller manager has started its controllers
# (it starts ~40 one after another; pods cannot be created in a namespace before its account exists).
wait_for "default service account" kube-controller-manager api /api/v1/namespaces/default/serviceaccounts/default
ready=true
echo "kubernetes up in $(elapsed) s (API ready at $api_ready s${node_ready_at:-}): KUBECONFIG=$DIR/kubeconfig ($API)"
