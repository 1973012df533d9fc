#!/usr/bin/env bash
# Build a real Kubernetes control plane and node from the Go module proxy alone, into a cache dir
# outside the repo: CACHE_DIR/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,etcd}.
#
# Usage: [K8S_VERSION=v1.34.4] [ETCD_VERSION=v3.6.16] build-kubernetes.sh CACHE_DIR
#   e.g. nice -n 10 scripts/build-kubernetes.sh /var/cache/conveyor/kubernetes
# Needs: go (1.24 or newer: `go get -tool`) and the Go module proxy. Nothing else (CGO is off).
# Skips the build when CACHE_DIR/bin/VERSIONS names the same versions and recipe and every binary
# is there. Prints one line per phase with its time; the go command's own output goes to
# CACHE_DIR/build.log. See scripts/KUBERNETES-NOTES.md for the measured times and sizes.
#
# Why a throw-away module: k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go...)
# at v0.0.0 and replaces them with ./staging/src/..., which the module zip leaves out, so `go install
# k8s.io/kubernetes/cmd/x@v1.y.z` cannot work. A module of our own that requires k8s.io/kubernetes
# and replaces each k8s.io/<m> v0.0.0 with the matching k8s.io/<m> v0.y.z tag builds the commands
# as they are released. etcd likewise: its server module has ../api replaces, so a 3-line main that
# calls etcdmain.Main in a module of our own is built instead.
#
# Kubernetes v1.34 is pinned because this machine has cgroup v1 (1.35 needs failCgroupV1: false,
# and 1.36+ also containerd 2.x) and Debian's containerd 1.6 (1.35 is the last release for 1.x).
set -euo pipefail

CACHE=${1:?usage: build-kubernetes.sh CACHE_DIR}
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
# Bump when the way of building changes (flags, list of binaries), to force a rebuild.
RECIPE=1
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet etcd)

die() { echo "build-kubernetes: $*" >&2; exit 1; }
# Go's own installer puts it in /usr/local/go/bin, which a non-login root shell may not have on PATH.
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || die "go is missing (1.24 or newer; https://go.dev/doc/install, or the distribution's golang package)"
[[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "K8S_VERSION must look like v1.34.4, not $K8S_VERSION"
K8S_MINOR=${BASH_REMATCH[1]}
STAGING_VERSION="v0.${K8S_MINOR}.${BASH_REMATCH[2]}"  # each k8s v1.y.z has staging tags v0.y.z
[[ "$ETCD_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "ETCD_VERSION must look like v3.6.16, not $ETCD_VERSION"

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
# The cache holds GBs of modules and objects: never inside a git work tree (it would be committed).
if git -C "$CACHE" rev-parse --show-toplevel >/dev/null 2>&1; then
    die "$CACHE is inside a git work tree ($(git -C "$CACHE" rev-parse --show-toplevel)); use a dir outside it, e.g. /var/cache/conveyor/kubernetes"
fi

# Everything Go downloads or compiles for this build stays in CACHE: one dir to keep between CI
# runs, to measure, or to delete. GOFLAGS from the environment could carry -mod=vendor etc.
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOPATH="$CACHE/go/path"
export GOFLAGS="-buildvcs=false -modcacherw" GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
BIN="$CACHE/bin"
STAMP="$BIN/VERSIONS"
LOG="$CACHE/build.log"
want="kubernetes $K8S_VERSION
etcd $ETCD_VERSION
recipe $RECIPE"

up_to_date() {
    [[ -f "$STAMP" && "$(head -n 3 "$STAMP")" == "$want" ]] || return 1
    local b
    for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

# Two builds at once (CI and a developer) would fight over the work dirs: take turns.
exec 9>"$CACHE/.lock"
flock 9
if up_to_date; then
    echo "kubernetes $K8S_VERSION and etcd $ETCD_VERSION already built in $BIN"
    exit 0
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() {  # step "what" cmd...: runs cmd with its output in the log, dies with the log's tail
    local what=$1 t
    shift
    t=$(now)
    echo "== $what: $*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        die "$what failed (after $(since "$t") s); full log: $LOG"
    fi
    echo "  $what: $(since "$t") s"
}

started=$(now)
: >"$LOG"
echo "building kubernetes $K8S_VERSION (staging $STAGING_VERSION) and etcd $ETCD_VERSION with $(go env GOVERSION) into $BIN"
OUT="$CACHE/bin.new"
rm -rf "$OUT"
mkdir -p "$OUT"

# --- Kubernetes -------------------------------------------------------------------------------
SRC="$CACHE/src/kubernetes"
rm -rf "$SRC"
mkdir -p "$SRC"
cd "$SRC"
step "k8s: go mod init" go mod init conveyor.invalid/kubernetes-build
modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
[[ -f "$modfile" ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION (see: go mod download -json k8s.io/kubernetes@$K8S_VERSION)"
# The same language version and GODEBUG defaults as upstream's main module: the main module's go
# line picks the runtime's GODEBUG defaults (TLS, x509, timers...), so copy it and its godebug lines.
upstream_go=$(awk '$1 == "go" { print $2; exit }' "$modfile")
edits=(-go="$upstream_go")
while read -r setting; do edits+=(-godebug="$setting"); done < <(
    awk '$1 == "godebug" && $2 != "(" { print $2 } /^godebug \(/ { g = 1; next } g && /^\)/ { g = 0 } g && NF { print $1 }' "$modfile")
# Every staging module that upstream requires at v0.0.0 (the list grows from release to release).
staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$modfile" | sort -u)
[[ -n "$staging" ]] || die "no k8s.io/* v0.0.0 requirements in $modfile: the recipe does not fit $K8S_VERSION"
for m in $staging; do edits+=(-replace="$m=$m@$STAGING_VERSION"); done
step "k8s: go mod edit (go $upstream_go, $(wc -w <<<"$staging") staging replaces)" go mod edit "${edits[@]}"
tools=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    tools+=("k8s.io/kubernetes/cmd/$b@$K8S_VERSION")
done
step "k8s: go get -tool (resolve and download)" go get -tool "${tools[@]}"
# What hack/lib/version.sh stamps into release builds (kubectl version, /version, metrics, the
# kubelet's node status); without it they say v0.0.0-master+$Format$.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
pkgs=()
for t in "${tools[@]}"; do pkgs+=("${t%@*}"); done
step "k8s: go build (${#pkgs[@]} commands)" go build -trimpath -ldflags "$ldflags" -o "$OUT/" "${pkgs[@]}"

# --- etcd -------------------------------------------------------------------------------------
SRC="$CACHE/src/etcd"
rm -rf "$SRC"
mkdir -p "$SRC"
cd "$SRC"
cat >main.go <<'GO'
// The etcd server, as etcd's own server/main.go builds it; in a module of our own because the
// etcd server module's go.mod replaces its siblings with ../ paths, which go install refuses.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
step "etcd: go mod init" go mod init conveyor.invalid/etcd-build
step "etcd: go get (resolve and download)" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
step "etcd: go mod tidy" go mod tidy
step "etcd: go build" go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" .

# --- check and publish ------------------------------------------------------------------------
"$OUT/kube-apiserver" --version | grep -qF "$K8S_VERSION" || die "kube-apiserver --version does not say $K8S_VERSION"
"$OUT/etcd" --version | grep -qF "etcd Version: ${ETCD_VERSION#v}" || die "etcd --version does not say ${ETCD_VERSION#v}"
{
    echo "$want"
    echo "go $(go env GOVERSION)"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(since "$started") s"
} >"$OUT/VERSIONS"
rm -rf "$BIN"
mv "$OUT" "$BIN"
echo "built in $(since "$started") s: $(cd "$BIN" && ls | tr '\n' ' ')"
echo "sizes: bin $(du -sh "$BIN" | cut -f1), module cache $(du -sh "$GOMODCACHE" | cut -f1) (zips $(du -sh "$GOMODCACHE/cache/download" | cut -f1)), build cache $(du -sh "$GOCACHE" | cut -f1)"
