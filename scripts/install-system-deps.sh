#!/usr/bin/env bash
# Install the Debian 12 packages the test suite needs: the container engines that
# tests/support/engines.py starts by hand (dockerd, podman's Docker API service), a static busybox
# to build test images FROM scratch (no image can be pulled), and Ceph's monitor, OSD and S3 gateway
# for scripts/ceph-rgw-up.sh (tests/support/ceph.py), and Slurm with munge for scripts/slurm-up.sh
# (tests/support/slurm.py), and containerd with openssl for scripts/kubernetes-up.sh (its kubelet's
# runtime and its PKI; the Kubernetes binaries themselves come from scripts/build-kubernetes.sh).
#
# Idempotent: installs only what is missing, runs `apt-get update` at most once, prints one line on
# success. Not root and something missing: prints the missing packages and the commands, exits 1.
set -euo pipefail

# --no-install-recommends: the recommends (git, xz-utils, cgroupfs-mount...) are not needed.
DOCKER_PACKAGES=(docker.io)
# podman and what it uses at run time (the fixtures pass --runtime runc); busybox-static, not busybox:
# a dynamically linked /bin/busybox cannot run in a FROM scratch image. iproute2 provides `ip`, which
# the fixtures use for dockerd's private bridge.
PODMAN_PACKAGES=(podman runc slirp4netns uidmap containernetworking-plugins netavark aardvark-dns
    catatonit busybox-static iproute2)
# --no-install-recommends: the recommends (ceph-mgr, ceph-mds, ceph-fuse, nvme-cli...) are not needed
# by a single-node RGW. monmaptool comes with ceph-base, ceph and radosgw-admin with ceph-common
# (all dependencies); ceph-rgw-up.sh also calls uuidgen and curl.
CEPH_PACKAGES=(radosgw ceph-mon ceph-osd uuid-runtime curl)
# slurmctld, slurmd and the client tools; munge's postinst writes /etc/munge/munge.key.
SLURM_PACKAGES=(slurm-wlm munge)
# Debian's containerd 1.6 (CRI plugin built in) for the kubelet; runc, the CNI plugins and busybox-static
# come with the podman group above. debootstrap builds the video demo's image, which
# tests/e2e/test_kubernetes_demo.py runs in the cluster (examples/video-process/build-image.sh).
KUBERNETES_PACKAGES=(containerd openssl debootstrap)

# Debian puts dockerd and ip in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# Prints those of the given packages that dpkg does not report as installed.
missing_packages() {
    local pkg
    for pkg in "$@"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != "installed" ]]; then
            echo "$pkg"
        fi
    done
}

tools_present() {
    command -v dockerd podman ip radosgw ceph-mon ceph-osd monmaptool uuidgen curl slurmctld slurmd sbatch munged \
        containerd ctr openssl >/dev/null && test -x /bin/busybox && test -x /usr/lib/cni/bridge
}

# Not `podman --version`: as a user without a home dir podman fails before printing it.
versions() {
    echo "$(dockerd --version); podman $(dpkg-query -W -f='${Version}' podman); radosgw $(dpkg-query -W -f='${Version}' radosgw); slurm $(dpkg-query -W -f='${Version}' slurm-wlm); containerd $(dpkg-query -W -f='${Version}' containerd)"
}

missing_docker=()
# A dockerd from elsewhere (e.g. Docker's docker-ce) is fine: installing docker.io would conflict.
command -v dockerd >/dev/null || mapfile -t missing_docker < <(missing_packages "${DOCKER_PACKAGES[@]}")
mapfile -t missing_podman < <(missing_packages "${PODMAN_PACKAGES[@]}")
mapfile -t missing_ceph < <(missing_packages "${CEPH_PACKAGES[@]}")
mapfile -t missing_slurm < <(missing_packages "${SLURM_PACKAGES[@]}")
mapfile -t missing_kubernetes < <(missing_packages "${KUBERNETES_PACKAGES[@]}")
missing_count=$((${#missing_docker[@]} + ${#missing_podman[@]} + ${#missing_ceph[@]} + ${#missing_slurm[@]} + ${#missing_kubernetes[@]}))

if ((missing_count == 0)) && tools_present; then
    echo "system deps OK: $(versions)"
    exit 0
fi

if ((missing_count == 0)); then
    echo "dockerd, podman, ip, a Ceph or Slurm daemon, containerd, the CNI plugins or /bin/busybox missing although their packages are installed" >&2
    exit 1
fi

docker_cmd=(apt-get install -y --no-install-recommends "${missing_docker[@]}")
podman_cmd=(apt-get install -y "${missing_podman[@]}")
ceph_cmd=(apt-get install -y --no-install-recommends "${missing_ceph[@]}")
slurm_cmd=(apt-get install -y "${missing_slurm[@]}")
kubernetes_cmd=(apt-get install -y "${missing_kubernetes[@]}")

if ((EUID != 0)); then
    {
        missing=("${missing_docker[@]}" "${missing_podman[@]}" "${missing_ceph[@]}" "${missing_slurm[@]}" "${missing_kubernetes[@]}")
        echo "missing system packages: ${missing[*]}"
        echo "install them as root:"
        echo "  apt-get update"
        ((${#missing_docker[@]} == 0)) || echo "  ${docker_cmd[*]}"
        ((${#missing_podman[@]} == 0)) || echo "  ${podman_cmd[*]}"
        ((${#missing_ceph[@]} == 0)) || echo "  ${ceph_cmd[*]}"
        ((${#missing_slurm[@]} == 0)) || echo "  ${slurm_cmd[*]}"
        ((${#missing_kubernetes[@]} == 0)) || echo "  ${kubernetes_cmd[*]}"
    } >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
((${#missing_docker[@]} == 0)) || "${docker_cmd[@]}" >/dev/null
((${#missing_podman[@]} == 0)) || "${podman_cmd[@]}" >/dev/null
((${#missing_ceph[@]} == 0)) || "${ceph_cmd[@]}" >/dev/null
((${#missing_slurm[@]} == 0)) || "${slurm_cmd[@]}" >/dev/null
((${#missing_kubernetes[@]} == 0)) || "${kubernetes_cmd[@]}" >/dev/null
tools_present || { echo "dockerd, podman, ip, a Ceph or Slurm daemon, containerd, the CNI plugins or /bin/busybox still missing after the install" >&2; exit 1; }
echo "system deps installed: $(versions)"
