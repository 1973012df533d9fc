#!/bin/sh
# Build localhost/conveyor-video-demo:1 (python3 + OpenCV + ffmpeg on Debian bookworm) without a registry.
#
# Usage: build-image.sh [--engine docker|podman] [--rebuild-base]
#
# 1. If localhost/debian:bookworm is missing (or --rebuild-base), debootstrap a minimal bookworm rootfs from
#    the mirror apt already uses (/etc/apt/sources.list.d/debian.sources) and import it as that image.
# 2. Build ./Containerfile on top of it; its apt-get runs with --network host (host resolver and mirror).
#
# Engine: --engine, else docker when `docker info` works (DOCKER_HOST is honoured), else podman with the
# flags these machines need (runc, cgroupfs, vfs; CONTAINERS_CONF with `default_ulimits = []`).
# PODMAN_STORAGE_DRIVER (default vfs) must match what runs the jobs; overlay makes each `podman run` of
# this ~1.1 GB image take <1 s instead of 10-20 s (vfs copies the whole image per container).
# Extra podman global flags (e.g. --root/--runroot) can be given in PODMAN_OPTS.
# Needs root (debootstrap) and the packages debootstrap + docker.io or podman.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm}
IMAGE=${IMAGE:-localhost/conveyor-video-demo:1}
SUITE=bookworm
ENGINE=""
REBUILD_BASE=0
WORK=""
CONF_TMP=""

# elapsed SINCE: whole seconds since the `date +%s` value SINCE.
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# The header comment of this file, without the "# ".
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

die() { echo "build-image.sh: $*" >&2; exit 1; }

cleanup() { rm -rf ${WORK:+"$WORK"} ${CONF_TMP:+"$CONF_TMP"}; }
trap cleanup EXIT
trap 'exit 130' INT TERM

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --engine) [ $# -ge 2 ] || die "--engine needs a value (docker|podman)"; ENGINE=$2; shift 2 ;;
            --engine=*) ENGINE=${1#--engine=}; shift ;;
            --rebuild-base) REBUILD_BASE=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown argument '$1' (try --help)" ;;
        esac
    done
}

choose_engine() {
    if [ -z "$ENGINE" ]; then
        if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
    fi
    case $ENGINE in
        docker|podman) command -v "$ENGINE" >/dev/null 2>&1 || die "$ENGINE is not installed" ;;
        *) die "--engine must be docker or podman, not '$ENGINE'" ;;
    esac
    if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
        # Without this, RUN steps fail: the VM lacks CAP_SYS_RESOURCE to apply podman's default ulimits.
        CONF_TMP=$(mktemp "${TMPDIR:-/tmp}/containers.conf.XXXXXX")
        printf '[containers]\ndefault_ulimits = []\n' >"$CONF_TMP"
        export CONTAINERS_CONF="$CONF_TMP"
    fi
}

# engine ARGS...: the chosen engine with the global flags it needs here.
engine() {
    if [ "$ENGINE" = podman ]; then
        # shellcheck disable=SC2086  # PODMAN_OPTS is a list of flags
        podman --runtime runc --cgroup-manager cgroupfs --storage-driver "${PODMAN_STORAGE_DRIVER:-vfs}" \
            ${PODMAN_OPTS:-} "$@"
    else
        docker "$@"
    fi
}

has_image() { engine image inspect "$1" >/dev/null 2>&1; }

# The mirror apt is configured with (deb822 file first, then the classic sources.list).
apt_mirror() {
    mirror=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
        mirror=$(awk '$1=="deb" && $0 !~ /security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list)
    fi
    echo "${mirror:-http://deb.debian.org/debian}"
}

build_base() {
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] \
        || die "debootstrap is missing: apt-get install -y debootstrap"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root to build $BASE_IMAGE"
    mirror=$(apt_mirror)
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/conveyor-debootstrap.XXXXXX")
    rootfs=$WORK/rootfs
    echo ">> debootstrap $SUITE from $mirror"
    started=$(date +%s)
    PATH="$PATH:/usr/sbin:/sbin" debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    echo ">> debootstrap done in $(elapsed "$started")"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # The mirror may be a dated snapshot: apt in the image needs the same leniency as the host's apt.
    printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
        >"$rootfs/etc/apt/apt.conf.d/99snapshot"
    echo ">> import $BASE_IMAGE"
    # "INSTRUCTION value" is the syntax both docker and podman accept for --change.
    tar -C "$rootfs" -c . | engine import \
        --change 'CMD ["/bin/bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$BASE_IMAGE" >/dev/null
    echo ">> imported $BASE_IMAGE in $(elapsed "$started") since debootstrap started"
    rm -rf "$WORK"
    WORK=""
}

build_image() {
    echo ">> build $IMAGE with $ENGINE"
    started=$(date +%s)
    if [ "$ENGINE" = docker ]; then
        # Debian's docker.io has no buildx plugin, so BuildKit is unavailable: use the classic builder.
        DOCKER_BUILDKIT=0 engine build --network host -t "$IMAGE" -f "$HERE/Containerfile" "$HERE"
    else
        engine build --network host -t "$IMAGE" -f "$HERE/Containerfile" "$HERE"
    fi
}

main() {
    parse_args "$@"
    choose_engine
    if [ "$REBUILD_BASE" = 1 ] || ! has_image "$BASE_IMAGE"; then
        build_base
    else
        echo ">> $BASE_IMAGE already present"
    fi
    build_image
    echo ">> done: $IMAGE ($ENGINE), build step $(elapsed "$started")"
}

main "$@"
