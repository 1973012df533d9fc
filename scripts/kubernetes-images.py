#!/usr/bin/env python3
"""Write a docker-archive tar holding two tiny images made FROM scratch with Debian's busybox-static,
for a kubelet that can pull nothing (no registry is reachable):

  localhost/pause:local    the sandbox ("pause") image containerd's CRI starts for every pod
  localhost/busybox:local  a shell and the busybox applets, for test Jobs (imagePullPolicy: Never)

Both share one layer: /bin/busybox, a symlink per applet, /etc/passwd and /etc/group (root, nobody)
and /tmp. Load them with: ctr -a SOCKET -n k8s.io images import OUT.tar

Usage: kubernetes-images.py OUT.tar [BUSYBOX]   (BUSYBOX defaults to /bin/busybox; it must be static:
a dynamically linked busybox has no libc in a FROM scratch image). Uses only the standard library;
the output is byte-for-byte reproducible (mtime 0, root-owned), so the layer digest is stable.
"""

import hashlib
import io
import json
import subprocess
import sys
import tarfile

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def add(tar, name, data=None, mode=0o644, kind=tarfile.REGTYPE, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, target
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def layer(busybox):
    with open(busybox, "rb") as f:
        binary = f.read()
    if b"/lib64/ld-linux" in binary[:4096] or b"/lib/ld-linux" in binary[:4096]:
        sys.exit(f"{busybox} is dynamically linked: install busybox-static")
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777)):
            add(tar, d, mode=mode, kind=tarfile.DIRTYPE)
        add(tar, "bin/busybox", binary, mode=0o755)
        for name in sorted(set(applets) - {"busybox"}):
            add(tar, f"bin/{name}", kind=tarfile.SYMTYPE, target="/bin/busybox", mode=0o777)
        add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out, busybox = sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "/bin/busybox"
    import platform

    arch = ARCH.get(platform.machine(), platform.machine())
    data = layer(busybox)
    diff_id = hashlib.sha256(data).hexdigest()
    images = {
        # The pause process only has to hold the pod's namespaces; as PID 1 it ignores SIGTERM,
        # and containerd stops sandboxes with SIGKILL anyway.
        "localhost/pause:local": {"Entrypoint": ["/bin/sleep", "2147483647"]},
        "localhost/busybox:local": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
    }
    manifest, configs = [], {}
    for tag, cfg in images.items():
        cfg.setdefault("Env", ["PATH=/bin"])
        config = json.dumps({
            "architecture": arch,
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created_by": "conveyor scripts/kubernetes-images.py (busybox-static)"}],
        }, sort_keys=True).encode()
        name = hashlib.sha256(config).hexdigest() + ".json"
        configs[name] = config
        manifest.append({"Config": name, "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]})
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, diff_id, mode=0o755, kind=tarfile.DIRTYPE)
        add(tar, f"{diff_id}/layer.tar", data)
        for name, config in configs.items():
            add(tar, name, config)
        add(tar, "manifest.json", json.dumps(manifest).encode())
    print(" ".join(images))


if __name__ == "__main__":
    main()
